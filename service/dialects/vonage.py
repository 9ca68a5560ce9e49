"""Vonage (Nexmo) SMS API delivery receipts: a GET query, a form POST or a JSON POST (set in the dashboard).

Fields read: `messageId` (kept exactly as sent: hex with leading zeros), `status`, `msisdn` (the
recipient), `err-code`, `scts` (the carrier's done date; `message-timestamp`, when Vonage pushed the
receipt, stands in when it is absent). `to` (the sender id), `network-code`, `price`, `client-ref` and
`api-key` are not kept. A multipart message gets one receipt per part, each with the part's own `messageId`:
each part is a message of its own here, and every report is message-level. Answered with the envelope.

Signature (when DLR_WEBHOOK_SECRET_VONAGE is set): `sig` = hex HMAC(secret, `&k=v` for every parameter
but `sig`, sorted by name, `&` and `=` in values replaced by `_`), or the legacy MD5 of that string with the
secret appended. The method is the one chosen in the Vonage dashboard; it is told by the signature's length
(32 hex digits: HMAC-MD5 or the legacy MD5 hash, both tried; 40: HMAC-SHA1; 64: HMAC-SHA256; 128:
HMAC-SHA512), or pinned by writing the secret as `<method>:<secret>` (`md5hash`, `md5`, `sha1`, `sha256`,
`sha512`), which refuses every other method. The signed `timestamp` must be within 5 minutes of now, as
Vonage's own verifier requires.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from service import field_schemas as schemas
from service import fields
from service.dialects import declared
from service.dialects.carrier_time import done_date
from service.dialects.declared import Field
from service.dialects.types import Dialect, ItemError, Parsed, Transport
from service.engine import Report
from service.payloads import BadPayload, RefusedPayload, RequestParts, decode_request
from service.reports import IncomingReport
from service.statuses import Status

NAME = "vonage"

# Vonage's receipt statuses (reference §7). None: `unknown` says nothing about the message: kept in the
# history without a transition.
STATUSES: dict[str, Status | None] = {
    "accepted": Status.ACCEPTD,
    "buffered": Status.ACCEPTD,  # the carrier holds it: on its way, not delivered
    "delivered": Status.DELIVRD,
    "expired": Status.EXPIRED,
    "failed": Status.UNDELIV,
    "rejected": Status.REJECTD,
    "unknown": None,
}

# The same window as Vonage's Java verifier (MAX_ALLOWABLE_TIME_DELTA) and our Standard Webhooks check.
SIGNATURE_WINDOW_SECONDS = 300
_HMACS: dict[str, Callable[..., Any]] = {
    "md5": hashlib.md5,
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}
LEGACY_MD5 = "md5hash"
METHODS = (LEGACY_MD5, *_HMACS)
_METHODS_BY_LENGTH = {32: ("md5", LEGACY_MD5), 40: ("sha1",), 64: ("sha256",), 128: ("sha512",)}


def _status(value: Any) -> Status | None:
    return fields.word(value, STATUSES)


FIELDS = (
    declared.message_id("messageId"),
    Field("status", _status, declared.fixed(schemas.word(list(STATUSES))), required=True),
    declared.short("msisdn"),
    declared.short("err-code"),
    Field("scts", done_date, schemas.done_date),
    # `YYYY-MM-DD HH:MM:SS`, UTC: when Vonage pushed the receipt, the nearest time there is without scts.
    declared.moment("message-timestamp"),
)


def parse(parts: RequestParts, received_at: datetime, max_batch: int) -> Parsed:
    data = decode_request(parts)
    if not isinstance(data, dict):
        raise BadPayload({"body": "must be one delivery receipt: a query string, a form or a JSON object"})
    return Parsed([_report(data, parts, received_at)], batch=False)


def _report(data: dict[str, Any], parts: RequestParts, received_at: datetime) -> IncomingReport | ItemError:
    values, f = declared.read_fields(data, FIELDS)
    message_id = values["messageId"]
    if f:
        return ItemError(0, f.kind, f.errors, parts, message_id)
    return IncomingReport(
        message_id=message_id,
        report=Report(status=values["status"]),
        source=NAME,
        received_at=received_at,
        event_time=values["scts"] or values["message-timestamp"],
        recipient=values["msisdn"],
        error=values["err-code"],
        raw_status=data["status"],
    )


def signed_string(params: Mapping[str, str]) -> str:
    """`&k=v` for every parameter but `sig`, sorted by name, with `&` and `=` in values replaced by `_`."""
    return "".join(f"&{key}={_clean(params[key])}" for key in sorted(params) if key != "sig")


def _clean(value: str) -> str:
    return value.replace("&", "_").replace("=", "_")


def signature(params: Mapping[str, str], secret: str, method: str) -> str:
    """The lower-case hex signature of `params` by `method` (one of METHODS)."""
    text = signed_string(params).encode()
    if method == LEGACY_MD5:
        # Vonage's oldest scheme: a plain MD5 with the secret appended, no HMAC. Still offered in its
        # dashboard, so still accepted when chosen there.
        return hashlib.md5(text + secret.encode(), usedforsecurity=False).hexdigest()
    return hmac.new(secret.encode(), text, _HMACS[method]).hexdigest()


def verify(parts: RequestParts, secret: str) -> bool:
    return verify_at(parts, secret, time.time())


def verify_at(parts: RequestParts, secret: str, now: float) -> bool:
    """Whether `sig` holds for the receipt's parameters and its `timestamp` is within 5 minutes of `now`."""
    params = _params(parts)
    if params is None:
        return False
    presented = params.pop("sig", "")
    timestamp = params.get("timestamp", "")
    if not (presented and timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    if abs(now - int(timestamp)) > SIGNATURE_WINDOW_SECONDS:
        return False
    pinned, key = _method_and_key(secret)
    methods = (pinned,) if pinned else _METHODS_BY_LENGTH.get(len(presented), ())
    given = presented.lower().encode()  # Vonage's SDKs write it upper- or lower-case
    # Every candidate is compared, never stopping early: timing tells nothing about which one matched.
    matched = False
    for method in methods:
        for candidate in _signed_sets(params):
            matched |= hmac.compare_digest(given, signature(candidate, key, method).encode())
    return matched


def _method_and_key(secret: str) -> tuple[str | None, str]:
    """`sha256:KEY` pins the method; a secret without a known method before a colon is the key itself."""
    method, colon, key = secret.partition(":")
    if colon and method.lower() in METHODS:
        return method.lower(), key
    return None, secret


def _params(parts: RequestParts) -> dict[str, str] | None:
    """The receipt's parameters as text, the same ones the parser reads; None when they cannot be read."""
    try:
        data = decode_request(parts)
    except RefusedPayload:
        return None
    if not isinstance(data, dict):
        return None
    params: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, str):
            params[key] = value
        elif isinstance(value, int) and not isinstance(value, bool):
            params[key] = str(value)
        elif value is None:
            params[key] = ""
        else:  # nested or fractional values: no text Vonage could have signed is known for them
            return None
    return params


def _signed_sets(params: dict[str, str]) -> list[dict[str, str]]:
    """The parameter sets Vonage may have signed: all of them; without empty values (Vonage's Java verifier
    skips those); without our own `token` (a parameter of the configured callback URL, not of the receipt).

    None of these lets a forger change a value that is read: only empty values or the token come and go.
    """
    without_empty = {k: v for k, v in params.items() if v.strip()}
    candidates = [params, without_empty]
    if "token" in params:
        candidates += [{k: v for k, v in c.items() if k != "token"} for c in (params, without_empty)]
    unique: list[dict[str, str]] = []
    for candidate in candidates:
        if candidate not in unique:
            unique.append(candidate)
    return unique


def describe(transport: Transport, max_batch: int) -> schemas.Schema | None:
    return None if transport == "text" else declared.describe(FIELDS, transport != "json")


DIALECT = Dialect(NAME, parse, describe, verify=verify)
