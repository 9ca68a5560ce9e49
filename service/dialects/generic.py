"""The service's own format: `id, status, segment, segments, time, to, campaign, error`.

As a form body, a GET query string, a JSON object, or a JSON array of objects (a batch).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from service import field_schemas as schemas
from service import fields
from service.dialects.types import Dialect, ItemError, Parsed, Transport
from service.engine import Report
from service.payloads import JSON, BatchTooLarge, PayloadError, RequestParts, decode_request
from service.reports import IncomingReport
from service.statuses import Status

NAME = "generic"
_STATUS_NAMES = ", ".join(s.value for s in Status)


def _status(value: Any) -> Status:
    # ASCII only: str.upper() maps "ı" and "ſ" to "I" and "S", which would make "delıvrd" a DELIVRD.
    if not isinstance(value, str) or not value.isascii():
        raise fields.FieldError(f"must be one of {_STATUS_NAMES}")
    try:
        return Status(value.strip().upper())
    except ValueError:
        raise fields.FieldError(f"unknown status {value[:40]!r}; must be one of {_STATUS_NAMES}") from None


def parse(parts: RequestParts, received_at: datetime, max_batch: int) -> Parsed:
    data = decode_request(parts)
    if isinstance(data, dict):
        return Parsed([_item(data, 0, parts, received_at)], batch=False)
    if isinstance(data, list):
        if not data:
            raise PayloadError({"body": "an empty batch"})
        if len(data) > max_batch:
            raise BatchTooLarge(len(data), max_batch)
        items = []
        for index, entry in enumerate(data):
            item_parts = RequestParts("POST", JSON, b"", json.dumps(entry, ensure_ascii=False).encode())
            if isinstance(entry, dict):
                items.append(_item(entry, index, item_parts, received_at))
            else:
                items.append(ItemError(index, 1, {"item": "must be a JSON object"}, item_parts))
        return Parsed(items, batch=True)
    raise PayloadError({"body": "must be a JSON object or an array of objects"})


def _item(data: dict[str, Any], index: int, parts: RequestParts, received_at: datetime) -> IncomingReport | ItemError:
    f = fields.FieldErrors()
    message_id = f.read(data, "id", fields.message_id, required=True)
    status = f.read(data, "status", _status, required=True)
    segment = f.read(data, "segment", fields.count)
    segments = f.read(data, "segments", fields.count)
    event_time = f.read(data, "time", fields.timestamp)
    recipient = f.read(data, "to", fields.short)
    campaign = f.read(data, "campaign", fields.text)
    error = f.read(data, "error", fields.short)
    if segment is not None and segments is not None and segment > segments:
        f.add("segment", f"segment {segment} is greater than segments ({segments})")
    if status is Status.PDLIVRD and segment is not None:
        f.add("segment", "PDLIVRD is a message status: it cannot be addressed to a segment")
    if f:
        return ItemError(index, f.code, f.errors, parts, message_id)
    return IncomingReport(
        message_id=message_id,
        report=Report(status=status, segment=segment, segments=segments),
        source=NAME,
        received_at=received_at,
        event_time=event_time,
        recipient=recipient,
        campaign=campaign,
        error=error,
        raw_status=data.get("status") if isinstance(data.get("status"), str) else None,
    )


def describe(transport: Transport, max_batch: int) -> schemas.Schema | None:
    if transport == "text":
        return None
    form = transport != "json"
    report = schemas.obj(
        ["id", "status"],
        {
            "id": schemas.message_id(form),
            "status": schemas.word([s.value for s in Status]),
            "segment": schemas.count(form),
            "segments": schemas.count(form),
            "time": schemas.moment(form),
            "to": schemas.short(form),
            "campaign": schemas.text(fields.MAX_TEXT, form),
            "error": schemas.short(form),
        },
        form,
    )
    # PDLIVRD is a message status, never addressed to a segment: as much of _item's rules as a schema can say.
    report["if"] = {"properties": {"status": {"const": "PDLIVRD"}}, "required": ["status"]}
    report["then"] = {"properties": {"segment": {"enum": [""]} if form else schemas.NULL}}
    if not form:
        return {"oneOf": [report, {"type": "array", "minItems": 1, "maxItems": max_batch, "items": report}]}
    return report


DIALECT = Dialect(NAME, parse, describe)
