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

import hashlib
import hmac
from datetime import datetime
from typing import Any

from service import field_schemas as schemas
from service import fields
from service.dialects.types import Dialect, ItemError, Parsed, Transport
from service.engine import Report
from service.payloads import PayloadError, RequestParts, decode_request
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


def parse(parts: RequestParts, received_at: datetime, max_batch: int) -> Parsed:
    event = decode_request(parts)
    if not isinstance(event, dict):
        raise PayloadError({"body": "must be a Mobizon webhook event: a JSON object or a form"})
    return Parsed([_report(event, parts, received_at)], batch=False)


def _report(event: dict[str, Any], parts: RequestParts, received_at: datetime) -> IncomingReport | ItemError:
    f = fields.FieldErrors()
    f.read(event, "eventType", _event_type, required=True)
    if f:
        # A form event's data has another shape: listing its "missing" SMS fields would only confuse.
        return ItemError(0, f.code, f.errors, parts)
    event_id = f.read(event, "eventId", fields.short, required=True)
    created = f.read(event, "eventCreateTs", fields.timestamp)
    data = f.read(event, "data", _data, required=True)
    if data is None:
        return ItemError(0, f.code, f.errors, parts)  # its fields would only repeat that `data` is wrong

    inner = fields.FieldErrors()
    message_id = inner.read(data, "messageId", fields.message_id, required=True)
    raw_status = inner.read(data, "status", _status, required=True)
    segments = inner.read(data, "segNum", fields.count)
    campaign = inner.read(data, "campaignId", fields.text)
    # Mobizon's `*Ts` fields carry no zone (and the docs name none): read as UTC, like every zone-less time.
    updated = inner.read(data, "statusUpdateTs", fields.timestamp)
    recipient = inner.read(data, "to", fields.short)
    for name, reason in inner.errors.items():
        f.add(f"data.{name}", reason)
    f.missing.update(f"data.{name}" for name in inner.missing)
    if f:
        return ItemError(0, f.code, f.errors, parts, message_id)
    return IncomingReport(
        message_id=message_id,
        report=Report(status=STATUSES.get(raw_status.strip().upper()), segment=None, segments=segments),
        source=NAME,
        received_at=received_at,
        event_time=updated or created,
        recipient=recipient,
        campaign=campaign,
        event_id=event_id,
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
    except PayloadError:
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
    event_id = {"type": "string", "minLength": 1, "maxLength": fields.MAX_SHORT, "pattern": schemas.NUL_FREE}
    top = {
        "eventId": event_id if form else {"anyOf": [event_id, {"type": "integer"}]},
        "eventType": {"const": EVENT_TYPE},
        "eventCreateTs": schemas.moment(form),
    }
    data = {
        "messageId": schemas.message_id(form),
        "status": {**schemas.ASCII_WORD, "maxLength": MAX_STATUS},  # unknown words are kept unmapped, not refused
        "segNum": schemas.count(form),
        "campaignId": schemas.text(fields.MAX_TEXT, form),
        "statusUpdateTs": schemas.moment(form),
        "to": schemas.short(form),
    }
    if form:
        flat = {f"data[{name}]": schema for name, schema in data.items()}
        return schemas.obj(["eventId", "eventType", "data[messageId]", "data[status]"], {**top, **flat}, form)
    return schemas.obj(["eventId", "eventType", "data"], {**top, "data": schemas.obj(["messageId", "status"], data)})


DIALECT = Dialect(NAME, parse, describe, ack="envelope", verify=verify)
