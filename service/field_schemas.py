"""JSON Schema for what each reader in `service/fields.py` accepts, for the OpenAPI description.

Each function mirrors one reader, in two forms: `form=True` for a value from a form body or a query string
(always text), `form=False` for a JSON value. schemathesis generates requests from these schemas and checks
that the service takes what they allow and refuses what they do not, so they must stay exactly as strict as
the readers (tests/reliability/test_fuzz.py).
"""

from __future__ import annotations

from typing import Any

from service import fields

Schema = dict[str, Any]

NUL_FREE = "^[^\\x00]*$"
NON_BLANK = "^[^\\x00]*[^\\x00\\s][^\\x00]*$"  # fields.message_id: something not blank, no NUL
# ISO-8601 as fields.timestamp reads it (datetime.fromisoformat), inside 2000..2100 whatever the offset (years
# 2001..2098), every real calendar day: 31-day months, 30-day months, February to the 28th, and the 29th in
# leap years (every fourth year: 2000 and 2100 are outside). `T` or a space between date and time (Plivo,
# Vonage and Mobizon write a space), fractional seconds, and a zone as `Z`, `+hh:mm`, `+hhmm` (Infobip) or
# `+hh` (hours to 13: PostgreSQL, behind the readers, takes no offset past 15:59), or none (UTC).
# Not JSON Schema's `date-time` format: RFC 3339 has neither `+0000` nor the space.
_YEAR = "20(0[1-9]|[1-8][0-9]|9[0-8])"
_LEAP_YEAR = "20(0[48]|[2468][048]|[13579][26])"
_DATE = (
    f"({_YEAR}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))"
    f"|{_LEAP_YEAR}-02-29)"
)
ISO = f"{_DATE}[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{{1,9}})?(Z|[+-](0[0-9]|1[0-3])(:?[0-5][0-9])?)?"
UNIX = "(9[5-9][0-9]{7}|[1-3][0-9]{9}|40[0-9]{8})(\\.[0-9]{1,6})?"  # 950000000 .. 4099999999 as text
DONE_DATE = "^[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|1[0-9]|2[0-8])([01][0-9]|2[0-3])[0-5][0-9]$"  # YYMMDDhhmm
COUNT_TEXT = "0*([1-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-5])"  # 1..255 (MAX_SEGMENTS), leading zeros
ASCII_WORD: Schema = {"type": "string", "maxLength": 32, "pattern": "^[\\x01-\\x7f]*[!-~][\\x01-\\x7f]*$"}
NULL: Schema = {"type": "null"}
EMPTY: Schema = {"const": ""}
# Fields a sender adds that no reader looks at are ignored in a form, if they are named (no PHP brackets
# that would clash with a real field) and NUL-free.
FORM_EXTRAS: Schema = {
    "propertyNames": {"pattern": "^([A-Za-z0-9_.-]{1,20}|data\\[[A-Za-z]{1,20}\\])$"},
    "additionalProperties": {"type": "string", "pattern": NUL_FREE},
}

assert fields.MAX_SEGMENTS == 255, "COUNT_TEXT spells out 1..255"


def optional(schema: Schema, form: bool) -> Schema:
    """An optional field: empty (and in JSON null) counts as absent (fields.FieldErrors.read)."""
    if form:
        pattern = schema.get("pattern")
        if pattern is None:
            return schema
        return {**schema, "pattern": f"^({pattern.strip('^$')})?$"}
    return {"anyOf": [schema, NULL, EMPTY]}


def whole(limit: int) -> Schema:
    """A JSON whole number read as text of at most `limit` characters (fields._as_text): 1e300 is a whole
    number too, and far too long. Past 300 digits no bound is stated (no document should hold such a number;
    the JSON decoder refuses those past 4300 digits anyway)."""
    if limit > 300:
        return {"type": "integer"}
    return {"type": "integer", "minimum": -(10 ** (limit - 1) - 1), "maximum": 10**limit - 1}


def text(limit: int, form: bool) -> Schema:
    """fields.text: at most `limit` characters, no NUL; a JSON whole number is read as its digits."""
    string = {"type": "string", "maxLength": limit, "pattern": NUL_FREE}
    return string if form else {"anyOf": [string, whole(limit), NULL]}


def short(form: bool) -> Schema:
    return text(fields.MAX_SHORT, form)


def message_id(form: bool) -> Schema:
    string = {"type": "string", "minLength": 1, "maxLength": fields.MAX_ID, "pattern": NON_BLANK}
    return string if form else {"anyOf": [string, whole(fields.MAX_ID)]}


def moment(form: bool) -> Schema:
    """fields.timestamp: ISO-8601 or unix seconds, inside 2000..2100."""
    string = {"type": "string", "pattern": f"^({ISO}|{UNIX})?$"}
    if form:
        return string
    number = {
        "type": "number",
        "minimum": int(fields.MIN_TIME.timestamp()),
        "exclusiveMaximum": int(fields.MAX_TIME.timestamp()),
    }
    return {"anyOf": [string, number, NULL]}


def count(form: bool) -> Schema:
    """fields.count: a whole number 1..255, as a JSON number or decimal text."""
    string = {"type": "string", "pattern": f"^({COUNT_TEXT})?$"}
    if form:
        return string
    return {"anyOf": [{"type": "integer", "minimum": 1, "maximum": fields.MAX_SEGMENTS}, string, NULL]}


def done_date(form: bool) -> Schema:
    """carrier_time.done_date: YYMMDDhhmm."""
    return optional({"type": "string", "pattern": DONE_DATE}, form)


def word(words: list[str]) -> Schema:
    return {"type": "string", "enum": words}


def obj(required: list[str], properties: dict[str, Schema], form: bool = False) -> Schema:
    schema: Schema = {"type": "object", "required": required, "properties": properties}
    return {**schema, **FORM_EXTRAS} if form else schema
