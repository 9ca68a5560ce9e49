"""Twilio Programmable Messaging status callbacks: a form POST to the message's StatusCallback URL.

Fields read: `MessageSid` (`SmsSid` in older callbacks), `MessageStatus` (`SmsStatus`), `To`, `ErrorCode`,
`RawDlrDoneDate`. `From`, `AccountSid`, `ApiVersion` and whatever Twilio adds (it does, without notice) are
ignored. Twilio reports a message as a whole, so every report is message-level. It wants an empty 200.

Signature (when DLR_WEBHOOK_SECRET_TWILIO holds the account's auth token): `X-Twilio-Signature` =
base64(HMAC-SHA1(auth token, URL + every POST parameter's name and value, sorted)).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from service import field_schemas as schemas
from service import fields
from service.dialects import declared
from service.dialects.carrier_time import done_date
from service.dialects.declared import Field
from service.dialects.types import EMPTY, Dialect, ItemError, Parsed, Transport
from service.engine import Report
from service.payloads import FORM, BadPayload, RequestParts, decode_request
from service.reports import IncomingReport
from service.statuses import Status

NAME = "twilio"

# Twilio's message statuses (reference §7). None: no status of ours (inbound messages), kept in the
# history without a transition.
STATUSES: dict[str, Status | None] = {
    "accepted": Status.NEW,
    "scheduled": Status.NEW,
    "queued": Status.ENQUEUD,
    "sending": Status.ENQUEUD,
    "sent": Status.ACCEPTD,
    "partially_delivered": Status.PDLIVRD,  # message-level: Twilio names no parts
    "delivered": Status.DELIVRD,
    "read": Status.DELIVRD,  # follows delivered on OTT channels
    "undelivered": Status.UNDELIV,
    "failed": Status.REJECTD,  # Twilio could not send it at all
    "canceled": Status.DELETED,
    "receiving": None,
    "received": None,
}

SIGNATURE_HEADER = "x-twilio-signature"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _status(value: Any) -> Status | None:
    return fields.word(value, STATUSES)


def _given(value: Any) -> bool:
    return value is not None and value != ""


def _field(data: dict[str, Any], name: str, fallback: str) -> str:
    """The name to read: the current one, or the older `Sms*` one when only that is given."""
    return fallback if not _given(data.get(name)) and _given(data.get(fallback)) else name


# The current names; the older `SmsSid` and `SmsStatus` are read in their place when only they are given.
FIELDS = (
    declared.message_id("MessageSid"),
    Field("MessageStatus", _status, declared.fixed(schemas.word(list(STATUSES))), required=True),
    declared.short("To"),
    declared.short("ErrorCode"),
    Field("RawDlrDoneDate", done_date, schemas.done_date),
)
OLDER_NAMES = {"MessageSid": "SmsSid", "MessageStatus": "SmsStatus"}


def parse(parts: RequestParts, received_at: datetime, max_batch: int) -> Parsed:
    data = decode_request(parts)
    if not isinstance(data, dict):
        raise BadPayload({"body": "must be a form (application/x-www-form-urlencoded)"})
    return Parsed([_report(data, parts, received_at)], batch=False)


def _report(data: dict[str, Any], parts: RequestParts, received_at: datetime) -> IncomingReport | ItemError:
    names = {name: _field(data, name, older) for name, older in OLDER_NAMES.items()}
    specs = [dataclasses.replace(spec, name=names.get(spec.name, spec.name)) for spec in FIELDS]
    values, f = declared.read_fields(data, specs)
    message_id, status_field = values[names["MessageSid"]], names["MessageStatus"]
    if f:
        return ItemError(0, f.kind, f.errors, parts, message_id)
    return IncomingReport(
        message_id=message_id,
        report=Report(status=values[status_field]),
        source=NAME,
        received_at=received_at,
        event_time=values["RawDlrDoneDate"],
        recipient=values["To"],
        error=values["ErrorCode"],
        raw_status=data[status_field],
    )


def signature(url: str, params: Iterable[tuple[str, str]], auth_token: str) -> str:
    """Twilio's X-Twilio-Signature: base64(HMAC-SHA1(auth token, url + name+value of each parameter)).

    Parameters sorted by name; a name sent several times contributes each of its values, sorted, as
    Twilio's own validators do.
    """
    signed = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def verify(parts: RequestParts, auth_token: str) -> bool:
    presented = parts.headers.get(SIGNATURE_HEADER, "").encode()
    params = _signed_params(parts)
    if not presented or params is None:
        return False
    # Every variant is compared, never stopping early: timing tells nothing about which one matched.
    matched = False
    for url in _url_variants(parts.url):
        matched |= hmac.compare_digest(presented, signature(url, params, auth_token).encode())
    return matched


def _signed_params(parts: RequestParts) -> list[tuple[str, str]] | None:
    """Every (name, value) pair of a form body, repeats included (the parser keeps only the last of a name,
    but Twilio signs them all). A GET is signed over its URL alone. None: a body Twilio never signs this way
    (JSON, another charset), refused rather than checked over the URL alone."""
    if parts.method == "GET":
        return []
    if parts.content_type not in (FORM, None) or parts.body.lstrip()[:1] in (b"{", b"["):
        return None
    pairs = []
    for pair in parts.body.split(b"&"):
        if not pair:
            continue
        name, _, value = pair.partition(b"=")
        try:
            pairs.append((_form_text(name), _form_text(value)))
        except UnicodeDecodeError:
            return None
    return pairs


def _form_text(raw: bytes) -> str:
    return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")


def _url_variants(url: str) -> list[str]:
    """The URL as received, and the same with the scheme's default port written out or left out.

    Twilio signs the URL as configured; whether `:443` was in it cannot be told from the Host header a proxy
    passes on, so both spellings are tried, as Twilio's own validators do.
    """
    split = urlsplit(url)
    default = _DEFAULT_PORTS.get(split.scheme)
    try:
        port = split.port
    except ValueError:
        return [url]
    if default is None or not split.netloc or "@" in split.netloc:
        return [url]
    if port is None:
        other = f"{split.netloc}:{default}"
    elif port == default:
        other = split.netloc.rpartition(":")[0]
    else:
        return [url]
    prefix = f"{split.scheme}://"
    return [url, prefix + other + url[len(prefix) + len(split.netloc) :]]


def describe(transport: Transport, max_batch: int) -> schemas.Schema | None:
    return None if transport == "text" else declared.describe(FIELDS, transport != "json")


DIALECT = Dialect(NAME, parse, describe, ack=EMPTY, verify=verify)
