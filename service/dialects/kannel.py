"""Kannel: smsbox fetching the dlr-url given at sendsms, escapes expanded.

The dlr-url to configure (README):
`https://<host>/dlr/kannel?id=<your message id>&type=%d&answer=%A&to=%p&from=%P&ts=%T&smsc=%i&smsc_msgid=%F`.
`id` is the platform's own id, written into the URL when the message is sent; other parameters (a
`token`, say) are ignored. smsbox always sends a GET and only wants a 200 or 202 back.

`type` (`%d`) is a bit set, not an enumeration: Kannel 1.4.5 sends 34 (32 intermediate | 2 failed) for an
expired message, whatever the dlr-mask. A failure (2) says only "not delivered"; the SMPP receipt in
`answer` (`%A`) says how, through its `stat:`. No report names a part: Kannel 1.4.5 acks a split message
once and asks the SMSC for a receipt on its first part only (seen live), so every report is about the
whole message. An SMSC ack (8) can arrive after the handset's final report: the engine keeps the order.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from service import field_schemas as schemas
from service import fields
from service.dialects import declared
from service.dialects.declared import Field
from service.dialects.receipt import Receipt, parse_receipt, receipt_time, stat_status, take_parameter
from service.dialects.types import Dialect, ItemError, Parsed, Transport
from service.engine import Report
from service.payloads import FORM, BadPayload, RequestParts, decode_request
from service.reports import IncomingReport
from service.statuses import Status

NAME = "kannel"

# dlr-mask bits (Kannel gw/dlr.h).
DLR_SUCCESS, DLR_FAIL, DLR_BUFFERED, DLR_SMSC_SUCCESS, DLR_SMSC_FAIL, DLR_INTERMEDIATE = 1, 2, 4, 8, 16, 32
_ALL_BITS = 63  # sendsms accepts dlr-mask up to 63

# Which bit decides, most telling first: a handset outcome (1, 2) outweighs what the SMSC said on submit
# (16, 8), which outweighs an in-progress notice (4, 32). A failure is then refined from the receipt.
TYPE_STATUS: tuple[tuple[int, Status], ...] = (
    (DLR_SUCCESS, Status.DELIVRD),
    (DLR_FAIL, Status.UNDELIV),
    (DLR_SMSC_FAIL, Status.REJECTD),
    (DLR_SMSC_SUCCESS, Status.ACCEPTD),
    (DLR_BUFFERED, Status.ACCEPTD),
    (DLR_INTERMEDIATE, Status.ACCEPTD),
)
# A failure's receipt `stat:` may say which failure it was; anything else stays UNDELIV.
FAILURES = frozenset({Status.EXPIRED, Status.REJECTD, Status.DELETED, Status.UNDELIV})

_ANSWER_MAX = 65535
_TYPE_RULE = "must be a Kannel DLR type: 1, 2, 4, 8, 16, 32 or a sum of them"


def parse(parts: RequestParts, received_at: datetime, max_batch: int) -> Parsed:
    rest, raw_answer = _take_answer(parts)
    data = decode_request(rest)
    if not isinstance(data, dict):
        raise BadPayload({"body": "must be the dlr-url's parameters (id, type, answer, ...)"})
    if raw_answer is not None:
        data["answer"] = raw_answer
    values, f = declared.read_fields(data, FIELDS)
    message_id, dlr_type, answer, ts = values["id"], values["type"], values["answer"], values["ts"]
    if f:
        return Parsed([ItemError(0, f.kind, f.errors, parts, message_id)], batch=False)
    receipt = _receipt(answer)
    raw_type = str(data["type"]).strip()
    return Parsed(
        [
            IncomingReport(
                message_id=message_id,
                report=Report(status=type_status(dlr_type, receipt)),
                source=NAME,
                received_at=received_at,
                # %T is unix time, unambiguous; the receipt's zone-less done date only stands in for it.
                event_time=ts or (receipt_time(receipt.done_date, received_at) if receipt else None),
                recipient=values["to"],
                error=_error(answer, receipt),
                raw_status=f"{raw_type}/{receipt.stat}" if receipt and receipt.stat else raw_type,
            )
        ],
        batch=False,
    )


def _take_answer(parts: RequestParts) -> tuple[RequestParts, str | None]:
    """`answer` (%A) read leniently -- it carries the SMSC's receipt, binary text and all -- and the
    request without it, for the strict decoder. A JSON body keeps its `answer` (JSON escapes are exact)."""
    if parts.method in ("GET", "HEAD"):
        query, answer = take_parameter(parts.query, "answer")
        return dataclasses.replace(parts, query=query), answer
    if parts.content_type is None and parts.body.lstrip()[:1] in (b"{", b"["):
        return parts, None
    if parts.content_type is None or parts.content_type.startswith(FORM):
        body, answer = take_parameter(parts.body, "answer")
        return dataclasses.replace(parts, body=body), answer
    return parts, None


def type_status(dlr_type: int, receipt: Receipt | None) -> Status:
    """The status a `%d` value means, a failure refined by the receipt's `stat:`."""
    status = next(status for bit, status in TYPE_STATUS if dlr_type & bit)
    if status is Status.UNDELIV and receipt is not None and receipt.stat is not None:
        refined = stat_status(receipt.stat)
        if refined in FAILURES:
            return refined
    return status


def _dlr_type(value: Any) -> int:
    if not isinstance(value, str) or not value.strip().isascii() or not value.strip().isdigit():
        raise fields.FieldError(_TYPE_RULE)
    digits = value.strip().lstrip("0") or "0"
    if len(digits) > 2 or not 1 <= int(digits) <= _ALL_BITS:
        raise fields.FieldError(_TYPE_RULE)
    return int(digits)


def _receipt(answer: str | None) -> Receipt | None:
    """The SMPP receipt in `%A`, if that is what it holds (not an `ACK/`/`NACK/` of the submit)."""
    if not answer or answer.startswith(("ACK/", "NACK/")):
        return None
    receipt = parse_receipt(answer)
    return receipt if receipt.stat is not None or receipt.err is not None else None


def _error(answer: str | None, receipt: Receipt | None) -> str | None:
    """The operator's error: the receipt's `err:`, or the SMSC's code in `NACK/<code>/<text>`."""
    if receipt is not None:
        return _clip(receipt.err)
    if answer and answer.startswith("NACK/"):
        # `NACK/0x0000000b/Invalid Destination Address` from an SMPP submit_sm_resp; other SMSC types
        # and Kannel itself write only a reason (`NACK/Retries Exceeded`).
        return _clip(answer.removeprefix("NACK/").split("/", 1)[0].strip())
    return None


def _clip(value: str | None) -> str | None:
    return value[: fields.MAX_SHORT] if value else None


def _answer(value: Any) -> str | None:
    # A receipt can come in message_payload (up to 64 KiB) rather than the 254-byte short_message.
    return fields.text(value, _ANSWER_MAX)


def _answer_schema(form: bool) -> schemas.Schema:
    # From a form or a query it is read leniently (NUL and bad bytes replaced); JSON escapes are exact.
    return {"type": "string", "maxLength": _ANSWER_MAX} if form else schemas.text(_ANSWER_MAX, form)


FIELDS = (
    declared.message_id("id"),
    # 1.._ALL_BITS, as digits only: a JSON number is no Kannel %d.
    Field("type", _dlr_type, declared.fixed({"type": "string", "pattern": "^ *0*([1-9]|[1-5][0-9]|6[0-3]) *$"}), True),
    Field("answer", _answer, _answer_schema),
    declared.short("to"),
    declared.moment("ts"),
)


def describe(transport: Transport, max_batch: int) -> schemas.Schema | None:
    return None if transport == "text" else declared.describe(FIELDS, transport != "json")


DIALECT = Dialect(NAME, parse, describe)
