"""Infobip's SMS delivery reports: `POST {"results": [...]}`, a batch (100 reports per request by default).

    {"results": [{"bulkId": "BULK-1", "messageId": "4f3c1c9d-...", "to": "41793026727",
                  "sentAt": "2019-11-09T16:00:00.000+0000", "doneAt": "2019-11-09T16:00:00.000+0000",
                  "smsCount": 1, "callbackData": "...",
                  "status": {"groupId": 3, "groupName": "DELIVERED", "id": 5, "name": "DELIVERED_TO_HANDSET"},
                  "error": {"groupId": 0, "groupName": "OK", "id": 0, "name": "NO_ERROR", "permanent": false}}]}

One report covers the whole message (`messageId`) however many parts it was sent in (`smsCount`, or
`messageCount` in the newer payload), so every report is message-level. Infobip has no signature scheme of
its own: with DLR_WEBHOOK_SECRET(_INFOBIP) set, Standard Webhooks signatures apply.
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
from service.payloads import JSON, BadPayload, BatchTooLarge, MissingFields, RequestParts, decode_request
from service.reports import IncomingReport
from service.statuses import Status

NAME = "infobip"

# The status decides by its numbers first, names only when the numbers are missing or unknown.
# DELIVERED_TO_OPERATOR sits in the DELIVERED group but is intermediate: the handset has not confirmed.
BY_STATUS_ID: dict[int, Status] = {2: Status.ACCEPTD, 5: Status.DELIVRD}
BY_GROUP_ID: dict[int, Status] = {
    1: Status.ACCEPTD,  # PENDING_*: in flight, a final status follows
    2: Status.UNDELIV,  # UNDELIVERABLE_*
    # A DELIVERED member other than ids 2 and 5 is not known to be final: it proves the operator has it.
    3: Status.ACCEPTD,
    4: Status.EXPIRED,  # EXPIRED_*
    5: Status.REJECTD,  # REJECTED_*
}
BY_STATUS_NAME: dict[str, Status] = {"DELIVERED_TO_OPERATOR": Status.ACCEPTD, "DELIVERED_TO_HANDSET": Status.DELIVRD}
# Group names, which are also the prefixes of their members' names (PENDING_ENROUTE, REJECTED_NETWORK).
BY_GROUP_NAME: dict[str, Status] = {
    "PENDING": Status.ACCEPTD,
    "UNDELIVERABLE": Status.UNDELIV,
    "DELIVERED": Status.ACCEPTD,
    "EXPIRED": Status.EXPIRED,
    "REJECTED": Status.REJECTD,
}
MAX_RAW = 64


def _number(value: Any) -> int | None:
    """A small whole number sent as a JSON number or as digits; anything else counts as absent."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value.strip()) <= 9:
        return int(value.strip())
    return None


def _name(value: Any) -> str | None:
    return value.strip().upper() if isinstance(value, str) and value.strip().isascii() and value.strip() else None


def canonical_status(status: dict[str, Any]) -> Status | None:
    """The status an Infobip `status` object stands for; None when nothing in it is known."""
    status_id, group_id = _number(status.get("id")), _number(status.get("groupId"))
    name, group_name = _name(status.get("name")), _name(status.get("groupName"))
    if status_id in BY_STATUS_ID:
        return BY_STATUS_ID[status_id]
    if group_id in BY_GROUP_ID:
        return BY_GROUP_ID[group_id]
    if name in BY_STATUS_NAME:
        return BY_STATUS_NAME[name]
    for word in (group_name, name.partition("_")[0] if name else None):
        if word in BY_GROUP_NAME:
            return BY_GROUP_NAME[word]
    return None


def _raw_status(status: dict[str, Any]) -> str:
    for key in ("name", "groupName"):
        value = status.get(key)
        if isinstance(value, str) and value.strip():
            raw = value[:MAX_RAW]
            break
    else:
        raw = f"groupId={status.get('groupId')!r} id={status.get('id')!r}"[:MAX_RAW]
    return raw.replace("\x00", "\\x00")  # PostgreSQL text cannot hold a NUL


def _status_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise fields.FieldError("must be an object {groupId, groupName, id, name}")
    return value


def _error_code(value: Any) -> str | None:
    """The operator error's id as text. Infobip sends an error object on every report; id 0 (NO_ERROR)
    says there is none, and would otherwise overwrite a real code with "0"."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise fields.FieldError("must be an object {groupId, id, name, ...}")
    code = value.get("id")
    if code is None or code == "":
        code = value.get("name")
    if (code in (0, "0") and not isinstance(code, bool)) or code == "NO_ERROR":
        return None
    return fields.text(code, 64)


def _part_count(value: Any) -> int | None:
    # A report for a message refused before it was split may say 0 parts: that is "unknown", not an error.
    if value in (0, "0") and not isinstance(value, bool):  # False == 0, but is no count
        return None
    return fields.count(value)


_CODE = {
    "anyOf": [
        {"type": "string", "maxLength": fields.MAX_SHORT, "pattern": schemas.NUL_FREE},
        schemas.whole(fields.MAX_SHORT),
        schemas.NULL,
    ]
}
_PART_COUNT = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": fields.MAX_SEGMENTS}, schemas.NULL]}
# JSON only: a form cannot carry the `status` and `error` objects.
FIELDS = (
    declared.message_id("messageId"),
    # Read leniently: numbers first, names after, unknown is unmapped.
    Field("status", _status_object, declared.fixed({"type": "object"}), required=True),
    Field(
        "error",
        _error_code,
        declared.fixed({"anyOf": [{"type": "object", "properties": {"id": _CODE, "name": _CODE}}, schemas.NULL]}),
    ),
    # How many parts: `smsCount`, or `messageCount` in the newer payload.
    Field("smsCount", _part_count, declared.fixed(_PART_COUNT)),
    Field("messageCount", _part_count, declared.fixed(_PART_COUNT)),
    # Infobip's times carry their offset (`+0000`): when the report was finished, else when it was sent.
    declared.moment("doneAt"),
    declared.moment("sentAt"),
    declared.short("to"),
    # The send request's id groups the messages of one bulk send: the nearest thing to a campaign.
    declared.text("bulkId"),
)


def parse(parts: RequestParts, received_at: datetime, max_batch: int) -> Parsed:
    data = decode_request(parts)
    if not isinstance(data, dict):
        raise BadPayload({"body": 'must be a JSON object {"results": [...]}'})
    results = data.get("results")
    if results is None:
        raise MissingFields({"results": "required"})
    if not isinstance(results, list):
        raise BadPayload({"results": "must be an array of delivery reports"})
    if not results:
        raise BadPayload({"results": "an empty batch"})
    if len(results) > max_batch:
        raise BatchTooLarge(len(results), max_batch)
    items: list[IncomingReport | ItemError] = []
    for index, entry in enumerate(results):
        # Kept in Infobip's own shape, so that a quarantined report replays through this parser.
        body = json.dumps({"results": [entry]}, ensure_ascii=False).encode()
        item_parts = RequestParts("POST", JSON, b"", body)
        if isinstance(entry, dict):
            items.append(_report(entry, index, item_parts, received_at))
        else:
            items.append(ItemError(index, BadPayload, {"results": "each report must be a JSON object"}, item_parts))
    return Parsed(items, batch=True)


def _report(
    entry: dict[str, Any], index: int, parts: RequestParts, received_at: datetime
) -> IncomingReport | ItemError:
    values, f = declared.read_fields(entry, FIELDS)
    message_id, status = values["messageId"], values["status"]
    if f:
        return ItemError(index, f.kind, f.errors, parts, message_id)
    return IncomingReport(
        message_id=message_id,
        report=Report(
            status=canonical_status(status), segment=None, segments=values["smsCount"] or values["messageCount"]
        ),
        source=NAME,
        received_at=received_at,
        event_time=values["doneAt"] or values["sentAt"],
        recipient=values["to"],
        campaign=values["bulkId"],
        error=values["error"],
        raw_status=_raw_status(status),
    )


def describe(transport: Transport, max_batch: int) -> schemas.Schema | None:
    """JSON only (a form cannot carry `results` objects), and never a GET."""
    if transport != "json":
        return None
    results = {"type": "array", "minItems": 1, "maxItems": max_batch, "items": declared.describe(FIELDS, form=False)}
    return schemas.obj(["results"], {"results": results})


DIALECT = Dialect(NAME, parse, describe)
