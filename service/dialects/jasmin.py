"""Jasmin SMS gateway: the HTTP API's DLR callback (`dlr-url`, `dlr-level`, `dlr-method` on send).

A GET query or a POST form: `id` (the Jasmin message id the send call returned), `message_status`,
`level`, `connector`; level 2 adds the receipt (`id_smsc`, `sub`, `dlvrd`, `subdate`, `donedate`, `err`,
`text`), with the literal `ND` for every field the SMSC did not send.

Level 1 is the SMSC's answer to the submit (`ESME_ROK` or an `ESME_*` error), level 2 the receipt's
state. Jasmin resends whatever is not answered with exactly `ACK/Jasmin`, so that is the answer for
everything it sends -- duplicates, unmappable states and payloads we quarantine included (ingest).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service import field_schemas as schemas
from service import fields
from service.dialects import declared
from service.dialects.declared import Field
from service.dialects.receipt import receipt_time
from service.dialects.types import Acknowledgement, Dialect, ItemError, Parsed, Transport
from service.engine import Report
from service.payloads import TEXT, BadPayload, RequestParts, decode_request
from service.reports import IncomingReport
from service.statuses import Status

NAME = "jasmin"
NOT_DEFINED = "ND"  # Jasmin's placeholder for a receipt field the SMSC did not send
SUBMIT_OK = "ESME_ROK"
LEVELS = {"1", "2"}  # the level of this callback; 3 is only ever requested, never reported

# Level-2 `message_status` values (the only ones Jasmin's DLRContentForHttpapi lets through).
RECEIPT_STATUS: dict[str, Status | None] = {
    "DELIVRD": Status.DELIVRD,
    "EXPIRED": Status.EXPIRED,
    "DELETED": Status.DELETED,
    "UNDELIV": Status.UNDELIV,
    "REJECTD": Status.REJECTD,
    "ACCEPTD": Status.ACCEPTD,  # Jasmin keeps waiting after it: not final
    "UNKNOWN": None,
}


def parse(parts: RequestParts, received_at: datetime, max_batch: int) -> Parsed:
    data = decode_request(parts)
    if not isinstance(data, dict):
        raise BadPayload({"body": "must be Jasmin's DLR form fields (id, message_status, level, ...)"})
    # `ND` is no value: a field holding it is as good as absent.
    data = {key: value for key, value in data.items() if value != NOT_DEFINED}
    values, f = declared.read_fields(data, FIELDS)
    message_id, message_status, err = values["id"], values["message_status"], values["err"]
    if f:
        return Parsed([ItemError(0, f.kind, f.errors, parts, message_id)], batch=False)
    status = jasmin_status(message_status)
    submit_refused = status is Status.REJECTD and message_status.strip().upper().startswith("ESME_")
    return Parsed(
        [
            IncomingReport(
                message_id=message_id,
                report=Report(status=status),
                source=NAME,
                received_at=received_at,
                # `donedate` is whatever the SMSC wrote (YYMMDDhhmm in the docs), in no stated zone: UTC.
                event_time=receipt_time(values["donedate"], received_at),
                # A refused submit's error is its command status (ESME_RINVNUMDESTS); a receipt's is `err`.
                error=message_status if submit_refused else err,
                raw_status=message_status,
            )
        ],
        batch=False,
    )


def jasmin_status(message_status: str) -> Status | None:
    """Level 1: ESME_ROK is ACCEPTD, any other ESME_* REJECTD. Level 2: the receipt states.

    Read by vocabulary rather than by `level`: the two never overlap, and a value is what it says.
    Anything else maps to no status (kept in the history with its raw value).
    """
    if not message_status.isascii():
        return None
    value = message_status.strip().upper()
    if value.startswith("ESME_"):
        return Status.ACCEPTD if value == SUBMIT_OK else Status.REJECTD
    return RECEIPT_STATUS.get(value)


def _level(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value.strip() not in LEVELS:
        raise fields.FieldError("must be 1 (SMSC level) or 2 (terminal level)")
    return value.strip()


def _defined(schema: declared.SchemaFor) -> declared.SchemaFor:
    """A required field's schema, `ND` left out: the parser drops it as no value."""
    return lambda form: {"allOf": [schema(form), {"not": {"const": NOT_DEFINED}}]}


# Any word (unknown ones are kept unmapped), as text: JSON numbers are no Jasmin status.
STATUS_SCHEMA = {"type": "string", "minLength": 1, "maxLength": fields.MAX_SHORT, "pattern": "^(?!ND$)[^\\x00]*$"}
FIELDS = (
    Field("id", fields.message_id, _defined(schemas.message_id), required=True),
    Field("message_status", fields.short, declared.fixed(STATUS_SCHEMA), required=True),
    Field("level", _level, declared.fixed({"type": "string", "enum": sorted(LEVELS)})),  # checked, not used
    declared.short("err"),
    declared.short("donedate"),
)
# Jasmin resends whatever is not answered with exactly this, refused payloads included (they are quarantined).
ACK = Acknowledgement("ACK/Jasmin", body=b"ACK/Jasmin", media_type=TEXT, refused_too=True)


def describe(transport: Transport, max_batch: int) -> schemas.Schema | None:
    return None if transport == "text" else declared.describe(FIELDS, transport != "json")


DIALECT = Dialect(NAME, parse, describe, ack=ACK)
