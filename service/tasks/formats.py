"""An export's bytes: CSV (RFC 4180, a header row) or NDJSON, one message a row or a line, with the field
names and values of `GET /messages/{id}` (`http/views.message`). Pure: records in, bytes out."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from service.http import views
from service.ledger import MessageRecord
from service.tasks.model import ExportFormat

# DESIGN §2: the message as `GET /messages/{id}` shows it, without its segments (a row is flat).
FIELDS = ("id", "status", "final", "to", "campaign", "segments_total", "sent_at", "updated_at", "final_at", "error")


def _row(record: MessageRecord) -> dict[str, Any]:
    shown = views.message(record)
    return {name: shown[name] for name in FIELDS}


def _cell(value: Any) -> str:
    """A CSV cell: JSON's spelling of booleans, ISO-8601 times (as the API answers), empty for null."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def header(fmt: ExportFormat) -> bytes:
    """What the output starts with: CSV's header row; nothing for NDJSON."""
    if fmt is ExportFormat.NDJSON:
        return b""
    return _csv([list(FIELDS)])


def rows(records: Sequence[MessageRecord], fmt: ExportFormat) -> bytes:
    if fmt is ExportFormat.NDJSON:
        return b"".join(orjson.dumps(_row(r)) + b"\n" for r in records)
    return _csv([[_cell(v) for v in _row(r).values()] for r in records])


def _csv(lines: list[list[str]]) -> bytes:
    # csv quotes a cell holding a comma, a quote or a line break, and doubles its quotes (RFC 4180).
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(lines)
    return out.getvalue().encode()
