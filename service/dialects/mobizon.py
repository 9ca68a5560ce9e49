"""Mobizon's own status webhook: one final status per whole message, signed with `sign`.

The documented JSON event, or the same as a form body with PHP-style `data[...]` keys:

    {"eventId": 26, "eventType": "sms-delivery-report", "eventCreateTs": "2026-01-15 11:42:28",
     "webhookId": 1, "attempt": 1,
     "data": {"campaignId": 245455096, "messageId": 169275418, "segNum": 3,
              "statusUpdateTs": "2026-01-15 11:42:08", "status": "DELIVRD", "to": "380737893456"},
     "sign": "<40 hex digits>"}

Numbers may arrive as strings (`"messageId": "169275418"`). Mobizon reports the whole message, never a
segment: `segNum` is how many segments it has, so every report is message-level. `eventId` stays the same
on every retry (up to 10 attempts), so it is the report's event id: a retry is answered `duplicate` and is
never applied again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from datetime import datetime
from typing import Any

from service import field_schemas as schemas
from service import fields
from service.dialects import declared
from service.dialects.declared import Field
from service.dialects.types import Dialect, ItemError, Parsed, Transport
from service.engine import Report
from service.payloads import BadPayload, RefusedPayload, RequestParts, decode_request
from service.reports import IncomingReport
from service.statuses import Status

NAME = "mobizon"
EVENT_TYPE = "sms-delivery-report"

# Mobizon speaks the platform's own vocabulary: the nine statuses are themselves. UNKNOWN exists in its
# campaign counters (not in its status table); it, and any other word, is kept in the history unmapped.
STATUSES: dict[str, Status | None] = {status.value: status for status in Status} | {"UNKNOWN": None}
MAX_STATUS = 32


def _event_type(value: Any) -> str:
    if not isinstance(value, str):
        raise fields.FieldError(f"must be {EVENT_TYPE!r}")
    if value.strip() != EVENT_TYPE:
        # The same webhook settings page offers form events (form-submission, ...): not delivery reports.
        raise fields.FieldError(f"{value[:40]!r} is not an SMS status event; only {EVENT_TYPE!r} is accepted")
    return EVENT_TYPE


def _status(value: Any) -> str:
    # ASCII only: str.upper() maps "ı" to "I", which would make "delıvrd" a DELIVRD.
    if not isinstance(value, str) or not value.strip() or not value.isascii():
        raise fields.FieldError("must be a status word such as DELIVRD")
    return fields.text(value, MAX_STATUS) or value  # length and NUL checks; never empty here


def _data(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise fields.FieldError("must be an object (data[...] fields in a form)")
    return value


def _event_id_schema(form: bool) -> schemas.Schema:
    text = {"type": "string", "minLength": 1, "maxLength": fields.MAX_SHORT, "pattern": schemas.NUL_FREE}
    return text if form else {"anyOf": [text, schemas.whole(fields.MAX_SHORT)]}


EVENT_TYPE_FIELD = Field("eventType", _event_type, declared.fixed({"const": EVENT_TYPE}), required=True)
# The message's fields, inside `data` (`data[...]` keys in a form).
DATA_FIELDS = (
    declared.message_id("messageId"),
    # Unknown words are kept unmapped, not refused.
    Field("status", _status, declared.fixed({**schemas.ASCII_WORD, "maxLength": MAX_STATUS}), required=True),
    declared.count("segNum"),
    declared.text("campaignId"),
    # Mobizon's `*Ts` fields carry no zone (and the docs name none): read as UTC, like every zone-less time.
    declared.moment("statusUpdateTs"),
    declared.short("to"),
)
EVENT_FIELDS = (
    Field("eventId", fields.short, _event_id_schema, required=True),
    declared.moment("eventCreateTs"),
    Field(
        "data",
        _data,
        lambda form: schemas.obj(declared.required(DATA_FIELDS), declared.properties(DATA_FIELDS, form)),
        required=True,
    ),
)


def parse(parts: RequestParts, received_at: datetime, max_batch: int) -> Parsed:
    event = decode_request(parts)
    if not isinstance(event, dict):
        raise BadPayload({"body": "must be a Mobizon webhook event: a JSON object or a form"})
    return Parsed([_report(event, parts, received_at)], batch=False)


def _report(event: dict[str, Any], parts: RequestParts, received_at: datetime) -> IncomingReport | ItemError:
    _, f = declared.read_fields(event, [EVENT_TYPE_FIELD])
    if f:
        # A form event's data has another shape: listing its "missing" SMS fields would only confuse.
        return ItemError(0, f.kind, f.errors, parts)
    top, f = declared.read_fields(event, EVENT_FIELDS, f)
    data = top["data"]
    if data is None:
        return ItemError(0, f.kind, f.errors, parts)  # its fields would only repeat that `data` is wrong

    values, inner = declared.read_fields(data, DATA_FIELDS)
    for name, reason in inner.errors.items():
        f.add(f"data.{name}", reason)
    f.missing.update(f"data.{name}" for name in inner.missing)
    message_id, raw_status = values["messageId"], values["status"]
    if f:
        return ItemError(0, f.kind, f.errors, parts, message_id)
    return IncomingReport(
        message_id=message_id,
        report=Report(status=STATUSES.get(raw_status.strip().upper()), segment=None, segments=values["segNum"]),
        source=NAME,
        received_at=received_at,
        event_time=values["statusUpdateTs"] or top["eventCreateTs"],
        recipient=values["to"],
        campaign=values["campaignId"],
        event_id=top["eventId"],
        raw_status=raw_status,
    )


def sign(event_id: str, attempt: str, created: str, secret: str) -> str:
    """Mobizon's `sign`: the hex SHA-1 of `eventId|attempt|eventCreateTs|secretKey`."""
    signed = f"{event_id}|{attempt}|{created}|{secret}".encode()
    return hashlib.sha1(signed).hexdigest()  # noqa: S324 - Mobizon's scheme, not our choice of hash


def _as_php_text(value: Any) -> str | None:
    """The value as PHP's `.` operator writes it when Mobizon builds the signed string."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value)


def verify(parts: RequestParts, secret: str) -> bool:
    """Whether `sign` holds for this event under the webhook's secret key.

    `sign` covers neither `data` nor a time: a captured event can be resent, even with other data, under
    the same sign. The `eventId` dedupe keeps a resent event from applying twice; a secret token in the
    URL (DLR_WEBHOOK_TOKEN_MOBIZON) is the other guard.
    """
    try:
        event = decode_request(parts)
    except RefusedPayload:
        return False  # a body that cannot be read carries no sign that could hold
    if not isinstance(event, dict):
        return False
    signed = [_as_php_text(event.get(name)) for name in ("eventId", "attempt", "eventCreateTs")]
    given = event.get("sign")
    if not isinstance(given, str) or any(piece is None for piece in signed):
        return False
    event_id, attempt, created = (piece or "" for piece in signed)
    expected = sign(event_id, attempt, created, secret)
    return hmac.compare_digest(expected.encode(), given.strip().lower().encode())


def describe(transport: Transport, max_batch: int) -> schemas.Schema | None:
    """A JSON event, or the same event as a form with PHP-style `data[...]` keys. Mobizon never sends a GET."""
    if transport in ("text", "query"):
        return None
    form = transport == "form"
    top = [EVENT_TYPE_FIELD, *EVENT_FIELDS]
    if not form:
        return declared.describe(top, form)
    flat = [dataclasses.replace(spec, name=f"data[{spec.name}]") for spec in DATA_FIELDS]
    return declared.describe([spec for spec in top if spec.name != "data"] + flat, form)


DIALECT = Dialect(NAME, parse, describe, verify=verify)
