"""The service's own format: `id, status, segment, segments, time, to, campaign, error`.

As a form body, a GET query string, a JSON object, or a JSON array of objects (a batch).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from service import field_schemas as schemas
from service import fields
from service.dialects import declared
from service.dialects.declared import Field
from service.dialects.types import Dialect, ItemError, Parsed, Transport
from service.engine import Report
from service.payloads import JSON, BadPayload, BatchTooLarge, RequestParts, decode_request
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


FIELDS = (
    declared.message_id("id"),
    Field("status", _status, declared.fixed(schemas.word([s.value for s in Status])), required=True),
    declared.count("segment"),
    declared.count("segments"),
    declared.moment("time"),
    declared.short("to"),
    declared.text("campaign"),
    declared.short("error"),
)


def parse(parts: RequestParts, received_at: datetime, max_batch: int) -> Parsed:
    data = decode_request(parts)
    if isinstance(data, dict):
        return Parsed([_item(data, 0, parts, received_at)], batch=False)
    if isinstance(data, list):
        if not data:
            raise BadPayload({"body": "an empty batch"})
        if len(data) > max_batch:
            raise BatchTooLarge(len(data), max_batch)
        items = []
        for index, entry in enumerate(data):
            item_parts = RequestParts("POST", JSON, b"", json.dumps(entry, ensure_ascii=False).encode())
            if isinstance(entry, dict):
                items.append(_item(entry, index, item_parts, received_at))
            else:
                items.append(ItemError(index, BadPayload, {"item": "must be a JSON object"}, item_parts))
        return Parsed(items, batch=True)
    raise BadPayload({"body": "must be a JSON object or an array of objects"})


def _item(data: dict[str, Any], index: int, parts: RequestParts, received_at: datetime) -> IncomingReport | ItemError:
    values, f = declared.read_fields(data, FIELDS)
    message_id, status, segment, segments = values["id"], values["status"], values["segment"], values["segments"]
    if segment is not None and segments is not None and segment > segments:
        f.add("segment", f"segment {segment} is greater than segments ({segments})")
    if status is Status.PDLIVRD and segment is not None:
        f.add("segment", "PDLIVRD is a message status: it cannot be addressed to a segment")
    if f:
        return ItemError(index, f.kind, f.errors, parts, message_id)
    return IncomingReport(
        message_id=message_id,
        report=Report(status=status, segment=segment, segments=segments),
        source=NAME,
        received_at=received_at,
        event_time=values["time"],
        recipient=values["to"],
        campaign=values["campaign"],
        error=values["error"],
        raw_status=data.get("status") if isinstance(data.get("status"), str) else None,
    )


def describe(transport: Transport, max_batch: int) -> schemas.Schema | None:
    if transport == "text":
        return None
    form = transport != "json"
    report = declared.describe(FIELDS, form)
    # PDLIVRD is a message status, never addressed to a segment: as much of _item's rules as a schema can say.
    report["if"] = {"properties": {"status": {"const": "PDLIVRD"}}, "required": ["status"]}
    report["then"] = {"properties": {"segment": {"enum": [""]} if form else schemas.NULL}}
    if not form:
        return {"oneOf": [report, {"type": "array", "minItems": 1, "maxItems": max_batch, "items": report}]}
    return report


DIALECT = Dialect(NAME, parse, describe)
