"""Every dialect's served schema (/openapi.json) against its parser, both ways.

1. Whatever a served schema allows, the parser takes: values generated from every schema of every dialect, in
   every way it is sent (form, JSON, plain text, query string), parse into reports without an error.
2. Whatever the parser refuses, the schema refuses: a valid payload with one field set to a hostile value is
   validated with `jsonschema` (format checking on) whenever the parser refuses it.
3. Real traffic at the edges of the calendar and the clock (day 31, Feb 29 of a leap year, fractional
   seconds, `Z`/`+00:00`/`+0000` offsets, a space for `T`) is taken by both, impossible dates by neither.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import hypothesis
import jsonschema
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from service import field_schemas as schemas
from service import fields
from service.dialects import DIALECTS, ItemError
from service.dialects.types import Transport
from service.payloads import FORM, JSON, TEXT, RefusedPayload, RequestParts

MAX_BATCH = 3
TRANSPORTS: tuple[Transport, ...] = ("form", "json", "text", "query")
CASES = [
    (name, transport)
    for name, dialect in sorted(DIALECTS.items())
    for transport in TRANSPORTS
    if dialect.describe(transport, MAX_BATCH) is not None
]
# Cases whose payload is an object of fields (SMPP's is the receipt text, described as a whole).
FIELD_CASES = [(name, transport) for name, transport in CASES if name != "smpp"]
SETTINGS = hypothesis.settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
NOW = datetime(2025, 6, 1, tzinfo=UTC)


def valid(schema: dict[str, Any]) -> Any:
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).is_valid


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid against `schema`, for the shapes the dialects' schemas use. (hypothesis-jsonschema, which
    would do this in general, does not work with the hypothesis release this project pins.) Every value is
    checked against the schema as a whole, so a shape only roughly followed here cannot let an invalid one by."""
    return _values(schema).filter(valid(schema))


def _values(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema or "oneOf" in schema:
        return st.one_of([from_schema(choice) for choice in schema.get("anyOf") or schema["oneOf"]])
    if "allOf" in schema:
        return _values(schema["allOf"][0])  # the rest is checked by the filter
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "string":
        if "pattern" in schema:
            text = st.from_regex(schema["pattern"], fullmatch=True)
        else:
            text = st.text(max_size=min(schema.get("maxLength", 80), 80))
        return text.filter(lambda t: schema.get("minLength", 0) <= len(t) <= schema.get("maxLength", len(t)))
    if kind in ("integer", "number"):
        low = schema.get("minimum", -(2**40))
        high = schema.get("maximum", schema.get("exclusiveMaximum", 2**40 + 1) - 1)
        whole = st.integers(low, high)
        return whole if kind == "integer" else st.one_of(whole, st.floats(low, high, allow_nan=False))
    if kind == "array":
        return st.lists(from_schema(schema["items"]), min_size=schema.get("minItems", 0), max_size=3)
    if kind == "object":
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        optional = [name for name in properties if name not in required]
        return st.fixed_dictionaries(
            {name: from_schema(properties[name]) for name in required},
            optional={name: from_schema(properties[name]) for name in optional},
        )
    return st.one_of(st.none(), st.integers(), st.text(max_size=20))


def served(name: str, transport: Transport) -> dict[str, Any]:
    schema = DIALECTS[name].describe(transport, MAX_BATCH)
    assert schema is not None
    return schema


def request(transport: Transport, payload: Any) -> RequestParts:
    if transport == "form":
        return RequestParts("POST", FORM, b"", urlencode(payload).encode())
    if transport == "query":
        return RequestParts("GET", None, urlencode(payload).encode(), b"")
    if transport == "text":
        return RequestParts("POST", TEXT, b"", payload.encode())
    return RequestParts("POST", JSON, b"", json.dumps(payload).encode())


def refusal(name: str, transport: Transport, payload: Any) -> str | None:
    """Why the parser refuses the payload, or None when every report in it is taken."""
    try:
        parsed = DIALECTS[name].parse(request(transport, payload), NOW, MAX_BATCH)
    except RefusedPayload as exc:
        return f"{type(exc).__name__}: {exc.errors}"
    bad = [item.errors for item in parsed.items if isinstance(item, ItemError)]
    return f"items refused: {bad}" if bad else None


def allows(schema: dict[str, Any], payload: Any) -> bool:
    return bool(valid(schema)(payload))


def one_report(name: str, transport: Transport) -> tuple[dict[str, Any], Any]:
    """The schema of one report in the served document, and how to wrap a report into a whole payload."""
    schema = served(name, transport)
    if "oneOf" in schema:  # generic JSON: an object, or an array of them
        return schema["oneOf"][0], lambda report: report
    if "results" in schema.get("properties", {}):  # Infobip
        return schema["properties"]["results"]["items"], lambda report: {"results": [report]}
    return schema, lambda report: report


def breaks_a_rule_between_fields(name: str, payload: Any) -> bool:
    """Generic's rule no schema can state for text: `segment` above `segments` (as keep_case in test_fuzz)."""
    reports = payload if isinstance(payload, list) else [payload]
    for report in reports:
        if name == "generic" and isinstance(report, dict):
            try:
                segment, segments = fields.count(report.get("segment")), fields.count(report.get("segments"))
            except fields.FieldError:
                continue
            if segment is not None and segments is not None and segment > segments:
                return True
    return False


@pytest.mark.parametrize(("name", "transport"), CASES)
@SETTINGS
@given(data=st.data())
def test_what_a_served_schema_allows_the_parser_takes(name: str, transport: Transport, data: st.DataObject) -> None:
    """Any payload valid against the dialect's served schema parses into reports, none of them refused."""
    payload = data.draw(from_schema(served(name, transport)))
    hypothesis.assume(not breaks_a_rule_between_fields(name, payload))
    assert refusal(name, transport, payload) is None, payload


# Values a sender might put in any field: the parser refuses some of them for some fields.
HOSTILE_TEXT = [
    "", " ", "\x00", "x\x00y", "ND", "0", "00", "-1", "256", "1.5", "1e3", "abc", "DELIVRD", "delivered", "x" * 65,
    "x" * 256, "1700000000", "17000000000", "949999999", "2024-01-31T10:00:00", "2023-02-29T10:00:00",
    "2024-04-31T10:00:00", "2024-01-31T24:00:00", "1999-12-31T23:59:59", "2100-01-01T00:00:00",
    "2024-01-31T10:00:00z", "2024-01-31T10:00:00+24:00", "2401311000", "2402301000", "٣", "１", "sms-delivery-report",
]  # fmt: skip
HOSTILE_JSON = [*HOSTILE_TEXT, None, True, False, 0, 1, -1, 256, 1.5, 2.0, 1e300, 10**20, 1700000000, [], {}, {"id": 0}]


@pytest.mark.parametrize(("name", "transport"), FIELD_CASES)
@SETTINGS
@given(data=st.data())
def test_what_the_parser_refuses_a_served_schema_refuses(name: str, transport: Transport, data: st.DataObject) -> None:
    """A valid payload with one field (declared or not) set to a hostile value: when the parser refuses it,
    the served schema refuses it too."""
    report_schema, wrap = one_report(name, transport)
    report = data.draw(from_schema(report_schema))
    names = sorted(report_schema["properties"])
    field = data.draw(st.sampled_from(names))
    value = data.draw(st.sampled_from(HOSTILE_JSON if transport == "json" else HOSTILE_TEXT))
    payload = wrap({**report, field: value})
    hypothesis.assume(not breaks_a_rule_between_fields(name, payload))
    if refusal(name, transport, payload) is not None:
        assert not allows(served(name, transport), payload), (field, value)


# --- times: the edges of the calendar and the clock ---------------------------------------------------------

REAL_TIMES = [
    "2025-01-31T23:59:59",  # day 31 (refused by the served pattern before)
    "2025-03-31 12:00:00",  # Plivo, Vonage and Mobizon write a space
    "2024-02-29T10:00:00",  # Feb 29 of a leap year
    "2025-04-30T10:00:00",
    "2025-11-24 16:00:00.123456",  # Plivo's fractional seconds
    "2025-01-31T10:00:00.5Z",
    "2019-11-09T16:00:00.000+0000",  # Infobip's offset
    "2025-01-31T10:00:00+00:00",
    "2025-01-31T10:00:00Z",
    "2025-01-31T10:00:00-05:30",
    "1738317600",
    "1738317600.25",
]
IMPOSSIBLE_TIMES = [
    "2023-02-29T10:00:00",
    "2025-04-31T10:00:00",
    "2025-02-30T10:00:00",
    "2025-01-32T10:00:00",
    "2025-01-31T24:00:00",
    "2025-01-31T10:60:00",
    "1999-12-31T23:59:59",
    "2100-01-01T00:00:00",
    "2025-01-31T10:00:00+24:00",
    "2025-01-31T10:00:00z",
    "yesterday",
]
TIME_FIELDS = [
    (name, transport, field)
    for name, transport in FIELD_CASES
    for field, schema in one_report(name, transport)[0]["properties"].items()
    if schema == schemas.moment(transport != "json")
]


def test_every_declared_time_field_is_checked() -> None:
    """The time cases below reach every dialect that reads a time, Plivo's four and Vonage's included."""
    found = {(name, field) for name, _, field in TIME_FIELDS}
    assert {("plivo", f) for f in ("DeliveryReportTime", "SentTime", "QueuedTime", "MessageTime")} <= found
    assert {("vonage", "message-timestamp"), ("infobip", "doneAt"), ("generic", "time"), ("kannel", "ts")} <= found


@pytest.mark.parametrize(("name", "transport", "field"), TIME_FIELDS)
@hypothesis.settings(SETTINGS, max_examples=3)
@given(data=st.data())
def test_real_times_are_taken_and_impossible_ones_refused_by_both(
    name: str, transport: Transport, field: str, data: st.DataObject
) -> None:
    """Day 31, Feb 29 of a leap year, fractional seconds and every offset spelling are real traffic: the
    parser and the served schema both take them. Impossible dates and times are refused by both (in a
    report otherwise valid, with every time field of it at the same value)."""
    report_schema, wrap = one_report(name, transport)
    base = data.draw(from_schema(report_schema))
    hypothesis.assume(not breaks_a_rule_between_fields(name, base))
    others = [f for n, t, f in TIME_FIELDS if (n, t) == (name, transport)]
    schema = served(name, transport)
    for value in REAL_TIMES:
        payload = wrap({**base, **dict.fromkeys(others, value)})
        assert refusal(name, transport, payload) is None, value
        assert allows(schema, payload), value
    for value in IMPOSSIBLE_TIMES:
        payload = wrap({**base, field: value})
        assert refusal(name, transport, payload) is not None, value
        assert not allows(schema, payload), value
