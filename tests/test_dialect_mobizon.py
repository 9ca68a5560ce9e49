"""`/dlr/mobizon`: the platform's own status webhook, JSON and form, `eventId` dedupe and the `sign` check.

Sample payloads: 44 written out (a few serve twice), and 100 generated per run (every field given any JSON
value). Written out: the documented event as JSON, with every number as a string, and as a `data[...]` form;
one per status row (12: the nine, UNKNOWN, lower case, an unheard-of word); without the optional fields; a
zero-padded string id; form events (2); 8 with a missing or bad field; a JSON array; 8 with a wrong, missing
or unreadable sign; an upper-case sign; a retry (attempt 2, other data); a form body over HTTP; ACCEPTD then
UNKNOWN for one message; 3 forged events over HTTP.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from service.app import create_app
from service.config import Secret, Settings
from service.dialects import DIALECTS, ItemError
from service.dialects.mobizon import parse, sign, verify
from service.dialects.types import ENVELOPE
from service.payloads import FORM, JSON, RefusedPayload, RequestParts
from service.reports import IncomingReport
from service.statuses import Status
from tests.conftest import fetch

RECEIVED = datetime(2026, 1, 15, 11, 42, 30, tzinfo=UTC)
SECRET = "secret123"  # the key of Mobizon's own PHP verification example

# The documented event (src/v1/en/_webhook/05-data-structure.md), signed here under SECRET.
DOCUMENTED: dict[str, Any] = {
    "eventId": 26,
    "eventType": "sms-delivery-report",
    "eventCreateTs": "2026-01-15 11:42:28",
    "webhookId": 1,
    "attempt": 1,
    "data": {
        "campaignId": 245455096,
        "messageId": 169275418,
        "segNum": 3,
        "statusUpdateTs": "2026-01-15 11:42:08",
        "status": "DELIVRD",
        "to": "380737893456",
    },
    "sign": "5cdebbb611d765bad163d765e8637830b6fd4060",
}
# What real clients show: every number as a string.
STRINGLY: dict[str, Any] = {
    **DOCUMENTED,
    "eventId": "26",
    "webhookId": "1",
    "attempt": "1",
    "data": {k: str(v) for k, v in DOCUMENTED["data"].items()},
}


def event(**changes: Any) -> dict[str, Any]:
    """The documented event with top-level fields and `data_<name>` fields changed (None removes one)."""
    result = json.loads(json.dumps(DOCUMENTED))
    inner = {key[5:]: value for key, value in changes.items() if key.startswith("data_")}
    outer = {key: value for key, value in changes.items() if not key.startswith("data_")}
    for target, fields in ((result["data"], inner), (result, outer)):  # data_* first: `data` may replace it all
        for name, value in fields.items():
            if value is None:
                target.pop(name, None)
            else:
                target[name] = value
    return result


def as_form(data: dict[str, Any]) -> bytes:
    """The event as a form body with PHP-style keys: `data[messageId]=...`."""
    pairs = [(f"data[{k}]", str(v)) for k, v in data.get("data", {}).items()]
    pairs += [(k, str(v)) for k, v in data.items() if k != "data"]
    return urlencode(pairs).encode()


def json_parts(data: Any) -> RequestParts:
    return RequestParts("POST", JSON, b"", json.dumps(data).encode())


def form_parts(data: dict[str, Any]) -> RequestParts:
    return RequestParts("POST", FORM, b"", as_form(data))


def only(parts: RequestParts) -> IncomingReport | ItemError:
    parsed = parse(parts, RECEIVED, 1000)
    assert parsed.batch is False
    assert len(parsed.items) == 1
    return parsed.items[0]


def report(parts: RequestParts) -> IncomingReport:
    item = only(parts)
    assert isinstance(item, IncomingReport), item
    return item


def error(parts: RequestParts) -> ItemError:
    item = only(parts)
    assert isinstance(item, ItemError), item
    return item


# --- the parser -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "parts",
    [json_parts(DOCUMENTED), json_parts(STRINGLY), form_parts(DOCUMENTED)],
    ids=["documented-json", "numbers-as-strings", "form-data-keys"],
)
def test_documented_event_in_every_encoding(parts: RequestParts) -> None:
    """JSON with numbers, JSON with strings and a `data[...]` form all give the same message-level report."""
    item = report(parts)
    assert item.message_id == "169275418"  # a number kept as its decimal text
    assert item.report.status is Status.DELIVRD
    assert item.report.segment is None  # Mobizon reports the whole message
    assert item.report.segments == 3  # segNum is the segment count
    assert item.campaign == "245455096"
    assert item.recipient == "380737893456"
    assert item.event_time == datetime(2026, 1, 15, 11, 42, 8, tzinfo=UTC)  # zone-less: UTC
    assert item.event_id == "26"
    assert item.raw_status == "DELIVRD"
    assert item.source == "mobizon"
    assert item.received_at == RECEIVED


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("NEW", Status.NEW),
        ("ENQUEUD", Status.ENQUEUD),
        ("ACCEPTD", Status.ACCEPTD),
        ("PDLIVRD", Status.PDLIVRD),
        ("DELIVRD", Status.DELIVRD),
        ("UNDELIV", Status.UNDELIV),
        ("REJECTD", Status.REJECTD),
        ("EXPIRED", Status.EXPIRED),
        ("DELETED", Status.DELETED),
        ("UNKNOWN", None),
        ("delivrd", Status.DELIVRD),
        ("SOMETHING", None),
    ],
)
def test_status_mapping(status: str, expected: Status | None) -> None:
    """The nine statuses are Mobizon's own; UNKNOWN and unheard-of words map to no status, raw kept."""
    item = report(json_parts(event(data_status=status)))
    assert item.report.status is expected
    assert item.raw_status == status


def test_optional_fields_may_be_missing() -> None:
    """Without segNum, campaignId, to and statusUpdateTs: no count, no campaign, event time from eventCreateTs."""
    item = report(
        json_parts(event(data_segNum=None, data_campaignId=None, data_to=None, data_statusUpdateTs=None, sign=None))
    )
    assert (item.report.segments, item.campaign, item.recipient) == (None, None, None)
    assert item.event_time == datetime(2026, 1, 15, 11, 42, 28, tzinfo=UTC)


def test_message_id_string_kept_exactly() -> None:
    """A string id is kept as sent: leading zeros are not stripped."""
    assert report(json_parts(event(data_messageId="00169275418"))).message_id == "00169275418"


def test_form_event_type_is_a_clear_validation_error() -> None:
    """A form event (same webhook settings page) is refused naming eventType, not with missing SMS fields."""
    form_event = event(eventType="form-submission", data={"formId": 846, "submissionId": 3680, "items": []})
    item = error(json_parts(form_event))
    assert item.code == 1
    assert list(item.errors) == ["eventType"]
    assert "sms-delivery-report" in item.errors["eventType"]


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"data": None}, 11, "data"),
        ({"data_messageId": None}, 11, "data.messageId"),
        ({"data_status": None}, 11, "data.status"),
        ({"eventId": None}, 11, "eventId"),
        ({"eventType": None}, 11, "eventType"),
        ({"data_segNum": "0"}, 1, "data.segNum"),
        ({"data_statusUpdateTs": "15.01.2026"}, 1, "data.statusUpdateTs"),
        ({"data": "not an object"}, 1, "data"),
    ],
)
def test_invalid_fields_are_named_as_mobizon_names_them(changes: dict[str, Any], code: int, field: str) -> None:
    """Errors name the sender's field (`data.messageId`), with code 11 for missing and 1 for bad values."""
    item = error(json_parts(event(**changes)))
    assert item.code == code
    assert field in item.errors


def test_body_that_is_not_an_event_is_refused_whole() -> None:
    """A JSON array is no Mobizon event: the request as a whole is refused."""
    with pytest.raises(RefusedPayload) as raised:
        parse(json_parts([DOCUMENTED]), RECEIVED, 1000)
    assert "body" in raised.value.errors


ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["0", "3", "", " ", "DELIVRD", "2026-01-15 11:42:08", "sms-delivery-report", "\x00"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
FIELDS = ["eventId", "eventType", "eventCreateTs", "attempt", "data", "sign"] + [
    f"data_{name}" for name in ("messageId", "status", "segNum", "campaignId", "statusUpdateTs", "to")
]
NAMED = {"eventId", "eventType", "eventCreateTs", "data"} | {f"data.{name[5:]}" for name in FIELDS if "_" in name}


@given(changes=st.dictionaries(st.sampled_from(FIELDS), ANY_VALUE, max_size=4))
def test_any_field_values_give_a_report_or_an_error_naming_mobizon_fields(changes: dict[str, Any]) -> None:
    """Whatever the fields hold: a report, or an item error naming only Mobizon's fields; `verify` only
    ever answers yes or no."""
    parts = json_parts(event(**changes))
    item = only(parts)
    if isinstance(item, ItemError):
        assert item.code in (1, 11)
        assert item.errors
        assert set(item.errors) <= NAMED
    assert verify(parts, SECRET) in (True, False)


# --- the signature ----------------------------------------------------------------------------------


def test_sign_vector_computed_from_the_documented_algorithm() -> None:
    """sha1_hex("26|1|2026-01-15 11:42:28|secret123"), cross-checked with `printf ... | sha1sum`.

    Mobizon publishes no vector: the `sign` values in its examples use a key it does not give.
    """
    assert sign("26", "1", "2026-01-15 11:42:28", SECRET) == "5cdebbb611d765bad163d765e8637830b6fd4060"
    assert sign("26", "2", "2026-01-15 11:42:28", SECRET) == "f951303c11d2b8d0db8bd6749a46553735ca0f94"
    # Any characters may be in the key (UTF-8 bytes, as PHP hashes them), even the separator.
    assert sign("27", "1", "2026-01-15 12:00:00", "Ключ|с чертой") == "d3b65fe42b9b76d13f57704d960da37c3a7550ee"


@pytest.mark.parametrize(
    "parts", [json_parts(DOCUMENTED), json_parts(STRINGLY), form_parts(DOCUMENTED)], ids=["json", "strings", "form"]
)
def test_verify_accepts_the_right_sign_in_every_encoding(parts: RequestParts) -> None:
    """`verify` decodes the body itself: numbers or strings, JSON or form, the signed text is the same."""
    assert verify(parts, SECRET) is True
    assert verify(parts, "secret124") is False


@pytest.mark.parametrize(
    "parts",
    [
        json_parts(event(attempt=2)),  # a retry must carry its own sign
        json_parts(event(eventCreateTs="2026-01-15 11:42:29")),
        json_parts(event(sign=None)),
        json_parts(event(sign="")),
        json_parts(event(eventId=None)),
        json_parts(event(eventId=True)),
        json_parts([DOCUMENTED]),
        RequestParts("POST", JSON, b"", b"{not json"),
    ],
)
def test_verify_refuses_a_wrong_missing_or_unreadable_sign(parts: RequestParts) -> None:
    """Another attempt or time under the old sign, no sign, no eventId, or no readable body: refused."""
    assert verify(parts, SECRET) is False


def test_verify_ignores_the_case_of_the_hex_digits() -> None:
    """An upper-case hex sign is the same digest."""
    assert verify(json_parts(event(sign=DOCUMENTED["sign"].upper())), SECRET) is True


def test_dialect_is_registered_with_its_own_scheme() -> None:
    """The registry finds `mobizon`, answered in the envelope and checked by its own `sign`."""
    dialect = DIALECTS["mobizon"]
    assert (dialect.ack, dialect.verify) == (ENVELOPE, verify)


# --- over HTTP --------------------------------------------------------------------------------------


def message(client: TestClient, message_id: str) -> dict[str, Any]:
    response = client.get(f"/messages/{message_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


def history(client: TestClient, message_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/messages/{message_id}/history")
    assert response.status_code == 200, response.text
    return response.json()["data"]["items"]  # type: ignore[no-any-return]


def test_webhook_end_to_end_and_a_retry_is_a_duplicate(client: TestClient) -> None:
    """The documented event is applied and read back; its retry (same eventId, attempt 2, other data) answers
    code 0, applied false, reason duplicate, changes nothing and adds no history row."""
    first = client.post("/dlr/mobizon", json=DOCUMENTED)
    assert first.status_code == 200
    assert first.json() == {
        "code": 0,
        "data": {"id": "169275418", "status": "DELIVRD", "applied": True, "reason": None},
        "message": "",
    }
    retry = event(attempt=2, data_status="UNDELIV", sign=sign("26", "2", "2026-01-15 11:42:28", SECRET))
    again = client.post("/dlr/mobizon", json=retry)
    assert again.json() == {
        "code": 0,
        "data": {"id": "169275418", "status": "DELIVRD", "applied": False, "reason": "duplicate"},
        "message": "",
    }
    data = message(client, "169275418")
    assert (data["status"], data["final"], data["segments_total"]) == ("DELIVRD", True, 3)
    assert [s["status"] for s in data["segments"]] == ["DELIVRD"] * 3
    assert (data["to"], data["campaign"]) == ("380737893456", "245455096")
    items = history(client, "169275418")
    assert len(items) == 1
    assert items[0]["source"] == "mobizon"
    assert items[0]["event_id"] == "26"
    assert items[0]["raw_status"] == "DELIVRD"
    assert items[0]["segment"] is None
    assert items[0]["event_time"].startswith("2026-01-15T11:42:08")


def test_a_replayed_event_naming_another_message_is_never_applied(client: TestClient) -> None:
    """Mobizon's `sign` covers the event id, not its data: event 26, applied to message A, replayed (attempt 2,
    freshly signed) with `data.messageId` = B is a duplicate. B is neither changed nor created, and nothing
    is added to either history."""
    client.post("/messages", json={"id": "b-message"})
    assert client.post("/dlr/mobizon", json=DOCUMENTED).json()["data"]["applied"] is True
    replay = event(
        attempt=2,
        data_messageId="b-message",
        data_status="DELIVRD",
        sign=sign("26", "2", "2026-01-15 11:42:28", SECRET),
    )
    assert client.post("/dlr/mobizon", json=replay).json()["data"] == {
        "id": "b-message",
        "status": "NEW",
        "applied": False,
        "reason": "duplicate",
    }
    assert message(client, "b-message")["status"] == "NEW"
    assert history(client, "b-message") == []
    unknown = event(
        attempt=3,
        data_messageId="c-message",
        data_status="DELIVRD",
        sign=sign("26", "3", "2026-01-15 11:42:28", SECRET),
    )
    assert client.post("/dlr/mobizon", json=unknown).json()["data"]["reason"] == "duplicate"
    assert client.get("/messages/c-message").status_code == 404


def test_form_body_end_to_end(client: TestClient) -> None:
    """The same event as a form with `data[...]` keys and string numbers is applied the same way."""
    body = as_form(event(eventId=27, data_messageId=169275419, data_status="REJECTD", data_segNum=1))
    response = client.post("/dlr/mobizon", content=body, headers={"content-type": FORM})
    assert response.json()["data"] == {"id": "169275419", "status": "REJECTD", "applied": True, "reason": None}
    assert message(client, "169275419")["status"] == "REJECTD"


def test_unknown_status_is_acknowledged_and_kept_without_a_transition(client: TestClient) -> None:
    """UNKNOWN maps to no status: code 0, the status stays as it was, one history row with the raw word."""
    client.post("/dlr/mobizon", json=event(eventId=30, data_messageId=555, data_status="ACCEPTD"))
    response = client.post("/dlr/mobizon", json=event(eventId=31, data_messageId=555, data_status="UNKNOWN"))
    assert response.status_code == 200
    assert response.json()["code"] == 0
    assert response.json()["data"]["applied"] is False
    assert message(client, "555")["status"] == "ACCEPTD"
    assert [(i["status"], i["raw_status"], i["reason"]) for i in history(client, "555")] == [
        ("ACCEPTD", "ACCEPTD", None),
        (None, "UNKNOWN", "unmapped"),
    ]


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        (event(eventType="form-submission", data={"formId": 846}), 1, "eventType"),
        (event(data_messageId=None), 11, "data.messageId"),
    ],
)
def test_invalid_event_is_refused_and_quarantined(
    client: TestClient, db: str, payload: dict[str, Any], code: int, field: str
) -> None:
    """A form event or an event without messageId: the envelope error names the field, the payload is kept."""
    response = client.post("/dlr/mobizon", json=payload)
    assert (response.status_code, response.json()["code"]) == (400, code)
    assert field in response.json()["data"]
    kept = client.get("/quarantine?dialect=mobizon").json()["data"]["items"]
    assert len(kept) == 1
    assert json.loads(kept[0]["body"]) == payload
    assert field in kept[0]["error"]
    assert fetch(db, "SELECT count(*) AS n FROM messages")[0]["n"] == 0


def test_signed_webhook_over_http(settings: Settings, db: str) -> None:
    """With DLR_WEBHOOK_SECRET_MOBIZON set: the right sign is applied; a wrong or missing one is code 8, HTTP
    401, and nothing is stored or quarantined."""
    app = create_app(replace(settings, webhook_secrets={"mobizon": Secret(SECRET)}))
    with TestClient(app) as client:
        assert client.post("/dlr/mobizon", json=DOCUMENTED).json()["data"]["applied"] is True
        other = event(eventId=40, data_messageId=777)  # sign of event 26: wrong for 40
        for payload in (other, event(eventId=40, data_messageId=777, sign=None)):
            refused = client.post("/dlr/mobizon", json=payload)
            assert (refused.status_code, refused.json()["code"]) == (401, 8)
        form = client.post("/dlr/mobizon", content=as_form(other), headers={"content-type": FORM})
        assert form.status_code == 401
    assert {r["id"] for r in fetch(db, "SELECT id FROM messages")} == {"169275418"}
    assert fetch(db, "SELECT count(*) AS n FROM quarantine")[0]["n"] == 0
