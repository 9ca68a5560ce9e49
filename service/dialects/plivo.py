"""Plivo's message status callbacks: a form POST, or the query string of a GET (the `method` of the send).

    MessageUUID=db3ce55a-7f1d-11e1-8ea7-1231380bc196&To=14155550100&From=14155550199&Type=sms
    &Status=delivered&Units=1&ErrorCode=&ParentMessageUUID=db3ce55a-...&PartInfo=&Sequence=3
    &MessageTime=2025-11-24 16:00:00.123456&QueuedTime=...&SentTime=...&DeliveryReportTime=...

The message id is `MessageUUID`. `Sequence` numbers the callbacks of one message in the order Plivo made
them: a callback numbered at or below one already seen is stale, whatever its status, and a resent callback
(same number) is the same event, so it is answered `duplicate`. `Units` is how many parts the message was
sent in; the callback speaks for the whole message. `ParentMessageUUID` and `PartInfo` ("1 of 2") are not
used: Plivo's current documentation marks both "reserved for future use, ignore" (ParentMessageUUID equals
MessageUUID); where older accounts still split a long SMS into parts with UUIDs of their own, each part is
tracked as the message its UUID names, as the send API returned it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from typing import Any
from urllib.parse import urlparse, urlunparse

from service import field_schemas as schemas
from service import fields
from service.dialects import declared
from service.dialects.declared import Field
from service.dialects.types import Dialect, ItemError, Parsed, Transport
from service.engine import Report
from service.payloads import BadPayload, RequestParts, decode_request
from service.reports import IncomingReport
from service.statuses import Status

NAME = "plivo"

STATUSES: dict[str, Status] = {
    "queued": Status.ENQUEUD,
    "sent": Status.ACCEPTD,
    "delivered": Status.DELIVRD,
    "read": Status.DELIVRD,  # WhatsApp: read implies delivered
    "undelivered": Status.UNDELIV,
    "failed": Status.REJECTD,
    "rejected": Status.REJECTD,  # older documentation
}
# The most advanced moment a callback knows is the moment of its event. Plivo writes these times without
# a zone (`YYYY-mm-dd HH:MM:SS.ffffff`): read as UTC, like every zone-less time.
EVENT_TIMES = ("DeliveryReportTime", "SentTime", "QueuedTime", "MessageTime")
MAX_SEQUENCE_DIGITS = 18  # the history keeps it as a bigint
SIGNATURE_HEADERS = ("x-plivo-signature-v2", "x-plivo-signature-ma-v2")
NONCE_HEADER = "x-plivo-signature-v2-nonce"


def _status(value: Any) -> str:
    # ASCII only: str.lower() of look-alike letters must not make a known word.
    if not isinstance(value, str) or not value.strip() or not value.isascii():
        raise fields.FieldError("must be a status word such as delivered")
    return fields.text(value, 32) or value  # length and NUL checks; never empty here


def _sequence(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise fields.FieldError("must be a whole number")
    if isinstance(value, str):
        stripped = value.strip()
        if not (stripped.isascii() and stripped.isdigit()) or len(stripped) > MAX_SEQUENCE_DIGITS:
            raise fields.FieldError("must be a whole number")
        value = int(stripped)
    if isinstance(value, float) and value.is_integer():  # JSON's 2.0 is the whole number 2
        value = int(value)
    if not isinstance(value, int) or not 0 <= value < 10**MAX_SEQUENCE_DIGITS:
        raise fields.FieldError("must be a whole number")
    return value


def _error_code(value: Any) -> str | None:
    code = fields.text(value, 64)
    # "000" is Plivo's code for a successful delivery: no error to record.
    if code is not None and code.strip("0 ") == "":
        return None
    return code


def _sequence_schema(form: bool) -> schemas.Schema:
    digits = {"type": "string", "pattern": f"^ *[0-9]{{1,{MAX_SEQUENCE_DIGITS}}} *$"}
    number = {"type": "integer", "minimum": 0, "maximum": 10**MAX_SEQUENCE_DIGITS - 1}
    return schemas.optional(digits if form else {"anyOf": [digits, number]}, form)


FIELDS = (
    declared.message_id("MessageUUID"),
    # Unknown words are kept unmapped, not refused.
    Field("Status", _status, declared.fixed({**schemas.ASCII_WORD, "maxLength": 32}), required=True),
    Field("Sequence", _sequence, _sequence_schema),
    declared.count("Units"),
    *(declared.moment(name) for name in EVENT_TIMES),
    declared.short("To"),
    Field("ErrorCode", _error_code, schemas.short),  # fields.text(value, 64): a short
)


def parse(parts: RequestParts, received_at: datetime, max_batch: int) -> Parsed:
    data = decode_request(parts)
    if not isinstance(data, dict):
        raise BadPayload({"body": "must be Plivo's callback parameters: a form or a query string"})
    return Parsed([_report(data, parts, received_at)], batch=False)


def _report(data: dict[str, Any], parts: RequestParts, received_at: datetime) -> IncomingReport | ItemError:
    values, f = declared.read_fields(data, FIELDS)
    message_id, raw_status, sequence = values["MessageUUID"], values["Status"], values["Sequence"]
    if f:
        return ItemError(0, f.kind, f.errors, parts, message_id)
    return IncomingReport(
        message_id=message_id,
        report=Report(status=STATUSES.get(raw_status.strip().lower()), segment=None, segments=values["Units"]),
        source=NAME,
        received_at=received_at,
        event_time=next((values[name] for name in EVENT_TIMES if values[name] is not None), None),
        recipient=values["To"],
        error=values["ErrorCode"],
        raw_status=raw_status,
        # A resent callback carries its Sequence again: the same event, answered as a duplicate.
        sequence=sequence,
    )


def signature_v2(url: str, nonce: str, auth_token: str) -> str:
    """`X-Plivo-Signature-V2`: base64 HMAC-SHA256 under the auth token of the URL without its query,
    followed by the nonce (Plivo's SDKs drop params, query and fragment the same way)."""
    base = urlunparse(urlparse(url)._replace(params="", query="", fragment=""))
    digest = hmac.new(auth_token.encode(), (base + nonce).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify(parts: RequestParts, secret: str) -> bool:
    """Whether `X-Plivo-Signature-V2` (or `-Ma-V2`, the main account's) holds under the auth token.

    The signature covers the URL and a nonce, not the parameters: the `Sequence` order and the
    (message, status) dedupe keep a resent callback from counting as news.
    """
    nonce = parts.headers.get(NONCE_HEADER, "")
    if not nonce:
        return False
    expected = signature_v2(parts.url, nonce, secret).encode()
    valid = False
    for header in SIGNATURE_HEADERS:  # every header is compared: timing says nothing about which matched
        valid |= hmac.compare_digest(parts.headers.get(header, "").strip().encode(), expected)
    return valid


def describe(transport: Transport, max_batch: int) -> schemas.Schema | None:
    return None if transport == "text" else declared.describe(FIELDS, transport != "json")


DIALECT = Dialect(NAME, parse, describe, verify=verify)
