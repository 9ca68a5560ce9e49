"""A raw SMPP delivery receipt, as a bridge or script forwards it from a `deliver_sm`.

The receipt text (`id:... stat:... err:...`) comes as a `text/plain` body, as the `answer` parameter of
a GET (what Kannel's `%A` carries) or as the `text` field of a form. One receipt is one report: receipts
are per part (each part has its own SMSC id), so no segment is named.
"""

from __future__ import annotations

from datetime import datetime

from service import field_schemas as schemas
from service.dialects import declared
from service.dialects.receipt import (
    Receipt,
    parse_receipt,
    receipt_id,
    receipt_time,
    receipt_word,
    stat_status,
    take_parameter,
)
from service.dialects.types import Dialect, ItemError, Parsed, Transport
from service.engine import Report
from service.payloads import FORM, TEXT, BadPayload, MissingFields, RequestParts, unsupported_content_type
from service.reports import IncomingReport

NAME = "smpp"
# Where the receipt text is, by how it came: the name an error points at.
_GET_FIELD, _FORM_FIELD, _BODY = "answer", "text", "body"


# The receipt's fields, found in its text (service/dialects/receipt.py). What a schema can say of the text
# as a whole is RECEIPT_SCHEMA below: these fields' own schemas are not served.
# Read whole up to the next space, and refused rather than cut (receipt.receipt_id, receipt.receipt_word).
FIELDS = (
    declared.Field("id", receipt_id, schemas.message_id, required=True),
    declared.Field("stat", receipt_word, schemas.short, required=True),
    declared.Field("err", receipt_word, schemas.short),
)


def parse(parts: RequestParts, received_at: datetime, max_batch: int) -> Parsed:
    raw, where = _receipt_text(parts)
    receipt = parse_receipt(raw)
    if receipt.id is None and receipt.stat is None:
        raise BadPayload({where: "not an SMPP delivery receipt (neither id: nor stat: found)"})
    values, f = declared.read_fields({"id": receipt.id, "stat": receipt.stat, "err": receipt.err}, FIELDS)
    if f:
        return Parsed([ItemError(0, f.kind, f.errors, parts, values["id"])], batch=False)
    return Parsed([_report(receipt, values["id"], values["stat"], values["err"], received_at)], batch=False)


def _report(receipt: Receipt, message_id: str, stat: str, error: str | None, received_at: datetime) -> IncomingReport:
    return IncomingReport(
        # As sent, leading zeros and all: matching across zero-padding is the store's business.
        message_id=message_id,
        report=Report(status=stat_status(stat)),
        source=NAME,
        received_at=received_at,
        event_time=receipt_time(receipt.done_date, received_at),
        error=error,
        raw_status=stat,
        match_zero_padded=True,
    )


def _receipt_text(parts: RequestParts) -> tuple[str, str]:
    """The receipt text, and the name of the field it came in."""
    kind = parts.content_type
    if parts.method in ("GET", "HEAD"):
        return _parameter(parts.query, _GET_FIELD, _FORM_FIELD), _GET_FIELD
    # Without a Content-Type, a body starting `text=` is a form; a receipt starts `id:`.
    unlabelled_form = kind is None and parts.body.lstrip().startswith((b"text=", b"answer="))
    if unlabelled_form or (kind is not None and kind.startswith(FORM)):
        return _parameter(parts.body, _FORM_FIELD, _GET_FIELD), _FORM_FIELD
    if kind not in (None, TEXT):
        raise unsupported_content_type(kind)
    if not parts.body.strip():
        raise MissingFields({_BODY: "required: the receipt text (id:... stat:...)"})
    # Receipts are ASCII; trailing binary garbage (TLVs, NULs) must not make the whole receipt unreadable,
    # so undecodable bytes become U+FFFD, which no field pattern matches.
    return parts.body.decode("utf-8", errors="replace"), _BODY


def _parameter(encoded: bytes, name: str, other: str) -> str:
    """The receipt in `name` (or in `other`, the name the other transport uses), read leniently: its
    `text:` may hold binary bytes. The other parameters are not read."""
    value = take_parameter(encoded, name)[1] or take_parameter(encoded, other)[1]
    if not value:
        raise MissingFields({name: "required: the receipt text (id:... stat:...)"})
    return value


# What a schema can say of a receipt: `id:` and `stat:` first, then no further `label:`. The parser is more
# lenient (it finds them anywhere), so this describes what a sender should send.
RECEIPT_SCHEMA: schemas.Schema = {
    "type": "string",
    "pattern": "^id:[!-~]{1,64} stat:[A-Za-z0-9_]{1,32}( [ -9;-~]{0,40})?$",
}


def describe(transport: Transport, max_batch: int) -> schemas.Schema | None:
    if transport == "text":
        return RECEIPT_SCHEMA
    if transport == "form":
        return schemas.obj([_FORM_FIELD], {_FORM_FIELD: RECEIPT_SCHEMA}, form=True)
    if transport == "query":
        return schemas.obj([_GET_FIELD], {_GET_FIELD: RECEIPT_SCHEMA})
    return None


DIALECT = Dialect(NAME, parse, describe)
