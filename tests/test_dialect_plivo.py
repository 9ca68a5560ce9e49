"""`/dlr/plivo`: status callbacks as form POSTs or GET queries, `Sequence` ordering, `X-Plivo-Signature-V2`.

Sample payloads: 32 written out, and 100 generated per run (every parameter given any text), plus 6 signature
header sets. Written out: the delivered callback as a form and as a GET query; one per mapping row (9, odd
casing and an unknown word included); a queued callback with only its early times and one with only
MessageTime; ErrorCode 30 and 000; a legacy split part (ParentMessageUUID, PartInfo "2 of 2"); one without
Sequence; 6 with a missing or bad parameter; a JSON array; over HTTP: sent, queued (late) and delivered for
one message plus a resend, sent then an older failed, an undelivered GET, a signed and a forged callback.
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
from service.dialects.plivo import EVENT_TIMES, parse, signature_v2, verify
from service.dialects.types import ENVELOPE
from service.payloads import FORM, RefusedPayload, RequestParts
from service.reports import IncomingReport
from service.statuses import Status
from tests.conftest import fetch

RECEIVED = datetime(2025, 11, 24, 16, 0, 9, tzinfo=UTC)
UUID = "db3ce55a-7f1d-11e1-8ea7-1231380bc196"


def callback(**changes: Any) -> dict[str, str]:
    """A delivered callback as Plivo sends it: every value a string, empty ones included (None removes one)."""
    data = {
        "MessageUUID": UUID,
        "To": "14155550100",
        "From": "14155550199",
        "Type": "sms",
        "Status": "delivered",
        "Units": "1",
        "TotalRate": "0.00500",
        "TotalAmount": "0.00500",
        "MCC": "310",
        "MNC": "260",
        "ErrorCode": "",
        "ParentMessageUUID": UUID,
        "PartInfo": "",
        "Sequence": "3",
        "MessageTime": "2025-11-24 16:00:00.123456",
        "QueuedTime": "2025-11-24 16:00:00.234567",
        "SentTime": "2025-11-24 16:00:01.345678",
        "DeliveryReportTime": "2025-11-24 16:00:07.456789",
        "PowerpackUUID": "",
        "requester_ip": "203.0.113.7",
    }
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def form(data: dict[str, str]) -> RequestParts:
    return RequestParts("POST", FORM, b"", urlencode(data).encode())


def query(data: dict[str, str]) -> RequestParts:
    return RequestParts("GET", None, urlencode(data).encode(), b"")


def only(parts: RequestParts) -> IncomingReport | ItemError:
    parsed = parse(parts, RECEIVED, 1000)
    assert parsed.batch is False
    assert len(parsed.items) == 1
    return parsed.items[0]


def report(parts: RequestParts) -> IncomingReport:
    item = only(parts)
    assert isinstance(item, IncomingReport), item
    return item


# --- the parser -------------------------------------------------------------------------------------


@pytest.mark.parametrize("encode", [form, query], ids=["form-post", "get-query"])
def test_delivered_callback_as_form_and_as_query(encode: Any) -> None:
    """The same parameters as a form body or a GET query give the same message-level report."""
    item = report(encode(callback()))
    assert item.message_id == UUID
    assert (item.report.status, item.report.segment, item.report.segments) == (Status.DELIVRD, None, 1)
    assert item.event_time == datetime(2025, 11, 24, 16, 0, 7, 456789, tzinfo=UTC)  # DeliveryReportTime, UTC
    assert (item.recipient, item.error, item.raw_status) == ("14155550100", None, "delivered")
    assert (item.sequence, item.event_id, item.source) == (3, None, "plivo")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("queued", Status.ENQUEUD),
        ("sent", Status.ACCEPTD),
        ("delivered", Status.DELIVRD),
        ("read", Status.DELIVRD),
        ("undelivered", Status.UNDELIV),
        ("failed", Status.REJECTD),
        ("rejected", Status.REJECTD),
        ("Delivered", Status.DELIVRD),
        ("received", None),
    ],
)
def test_status_mapping(status: str, expected: Status | None) -> None:
    """Plivo's words onto the nine statuses; an unknown word maps to no status with the raw word kept."""
    item = report(form(callback(Status=status)))
    assert item.report.status is expected
    assert item.raw_status == status


def test_event_time_is_the_latest_moment_the_callback_knows() -> None:
    """A queued callback has no sent or delivery time yet: its event time is QueuedTime."""
    item = report(form(callback(Status="queued", Sequence="1", SentTime="", DeliveryReportTime="")))
    assert item.event_time == datetime(2025, 11, 24, 16, 0, 0, 234567, tzinfo=UTC)
    assert report(form(callback(QueuedTime=None, SentTime=None, DeliveryReportTime=None))).event_time == datetime(
        2025, 11, 24, 16, 0, 0, 123456, tzinfo=UTC
    )


def test_error_code_is_kept_and_000_means_none() -> None:
    """ErrorCode of an undelivered callback is the error; "000" (Plivo's success code) records none."""
    assert report(form(callback(Status="undelivered", ErrorCode="30"))).error == "30"
    assert report(form(callback(ErrorCode="000"))).error is None


def test_split_part_stays_its_own_message() -> None:
    """ParentMessageUUID and PartInfo are not used: the report is for MessageUUID, at message level."""
    part = report(form(callback(MessageUUID="part-2-uuid", ParentMessageUUID=UUID, PartInfo="2 of 2")))
    assert (part.message_id, part.report.segment) == ("part-2-uuid", None)


def test_sequence_in_json_may_be_written_with_a_fraction() -> None:
    """JSON does not tell 2 from 2.0: both are Sequence 2."""
    body = json.dumps({**callback(), "Sequence": 2.0}).encode()
    [item] = parse(RequestParts("POST", "application/json", b"", body), RECEIVED, 1000).items
    assert isinstance(item, IncomingReport)
    assert item.sequence == 2


def test_without_sequence_there_is_no_order_and_no_event_id() -> None:
    """An old-style callback without Sequence falls back to the (message, segment, status) rule."""
    item = report(form(callback(Sequence=None)))
    assert (item.sequence, item.event_id) == (None, None)


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"MessageUUID": None}, 11, "MessageUUID"),
        ({"Status": ""}, 11, "Status"),
        ({"Sequence": "three"}, 1, "Sequence"),
        ({"Sequence": "-1"}, 1, "Sequence"),
        ({"DeliveryReportTime": "24/11/2025"}, 1, "DeliveryReportTime"),
        ({"Units": "0"}, 1, "Units"),
    ],
)
def test_invalid_parameters_are_named_as_plivo_names_them(change: dict[str, Any], code: int, field: str) -> None:
    """A missing or bad parameter is an error naming Plivo's own parameter."""
    item = only(form(callback(**change)))
    assert isinstance(item, ItemError)
    assert (item.code, field in item.errors) == (code, True)


def test_json_array_body_is_refused_whole() -> None:
    """Plivo never sends a list: the request as a whole is refused."""
    with pytest.raises(RefusedPayload):
        parse(RequestParts("POST", "application/json", b"", b"[]"), RECEIVED, 1000)


FIELDS = ["MessageUUID", "Status", "Sequence", "Units", "To", "ErrorCode", *EVENT_TIMES]
FORM_VALUES = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.sampled_from(["", "0", "000", "3", "-1", "1e3", "delivered", "2025-11-24 16:00:07.456789", "\x00"]),
)


@given(changes=st.dictionaries(st.sampled_from(FIELDS), FORM_VALUES, max_size=4))
def test_any_parameter_values_give_a_report_or_an_error_naming_plivo_parameters(changes: dict[str, str]) -> None:
    """Whatever the parameters hold: a report, an item error naming only Plivo's parameters, or (a NUL, say)
    the request refused whole."""
    outcome: IncomingReport | ItemError | RefusedPayload
    try:
        outcome = only(form(callback(**changes)))
    except RefusedPayload as exc:
        outcome = exc
    if isinstance(outcome, RefusedPayload | ItemError):
        assert outcome.code in (1, 11)
    if isinstance(outcome, ItemError):
        assert set(outcome.errors) <= set(FIELDS)


# --- the signature ----------------------------------------------------------------------------------


def test_plivo_published_vector() -> None:
    """Plivo's own SDK test (plivo-python tests/resources/test_signature.py): URL https://answer.url, nonce
    12345, token my_auth_token -> ehV3...; another token does not give it. Recomputed with openssl too."""
    published = "ehV3IKhLysWBxC1sy8INm0qGoQYdYsHwuoKjsX7FsXc="
    assert signature_v2("https://answer.url", "12345", "my_auth_token") == published
    assert signature_v2("https://answer.url", "12345", "my_auth_tokens") != published


BY_HAND = "p2nKoOOd4otKK8nEygLIT17utpKeB6UuocJLhhKnGh0="


def test_vector_computed_by_hand_drops_the_query() -> None:
    """base64 HMAC-SHA256(token, URL without query + nonce), cross-checked with
    `printf %s 'https://dlr.example.com/dlr/plivo7d9e8f21c0' | openssl dgst -sha256 -hmac ... -binary | base64`."""
    assert signature_v2("https://dlr.example.com/dlr/plivo", "7d9e8f21c0", "MAuthTokenXyz123") == BY_HAND
    assert signature_v2("https://dlr.example.com/dlr/plivo?token=t1#x", "7d9e8f21c0", "MAuthTokenXyz123") == BY_HAND


def signed_parts(headers: dict[str, str], url: str = "https://dlr.example.com/dlr/plivo?token=t1") -> RequestParts:
    return RequestParts("POST", FORM, b"", urlencode(callback()).encode(), headers, url)


@pytest.mark.parametrize(
    ("headers", "valid"),
    [
        ({"x-plivo-signature-v2": BY_HAND, "x-plivo-signature-v2-nonce": "7d9e8f21c0"}, True),
        (
            {
                "x-plivo-signature-ma-v2": BY_HAND,
                "x-plivo-signature-v2": "c3ViYWNjb3VudA==",
                "x-plivo-signature-v2-nonce": "7d9e8f21c0",
            },
            True,
        ),
        ({"x-plivo-signature-v2": BY_HAND, "x-plivo-signature-v2-nonce": "7d9e8f21c1"}, False),
        ({"x-plivo-signature-v2": BY_HAND}, False),
        ({"x-plivo-signature-v2-nonce": "7d9e8f21c0"}, False),
        ({}, False),
    ],
)
def test_verify(headers: dict[str, str], valid: bool) -> None:
    """The V2 header (or the main account's Ma-V2) must match for the nonce sent; no nonce, no signature."""
    assert verify(signed_parts(headers), "MAuthTokenXyz123") is valid


def test_dialect_is_registered_with_its_own_scheme() -> None:
    """The registry finds `plivo`, answered in the envelope and checked by X-Plivo-Signature-V2."""
    assert (DIALECTS["plivo"].ack, DIALECTS["plivo"].verify) == (ENVELOPE, verify)


# --- over HTTP --------------------------------------------------------------------------------------


def post(client: TestClient, data: dict[str, str]) -> Any:
    return client.post("/dlr/plivo", content=urlencode(data).encode(), headers={"content-type": FORM})


def message(client: TestClient, message_id: str) -> dict[str, Any]:
    response = client.get(f"/messages/{message_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


def history(client: TestClient, message_id: str) -> list[dict[str, Any]]:
    return client.get(f"/messages/{message_id}/history").json()["data"]["items"]  # type: ignore[no-any-return]


def test_sequence_keeps_a_late_callback_from_counting_and_a_resend_is_a_duplicate(client: TestClient) -> None:
    """Callbacks 2 (sent), 1 (queued, late), 3 (delivered), then 3 again: the late one is stale, the resend a
    duplicate (no second history row); the message ends DELIVRD."""
    answers = [
        post(client, callback(Status="sent", Sequence="2", DeliveryReportTime="")).json(),
        post(client, callback(Status="queued", Sequence="1", SentTime="", DeliveryReportTime="")).json(),
        post(client, callback()).json(),
        post(client, callback()).json(),
    ]
    assert [a["code"] for a in answers] == [0, 0, 0, 0]
    assert [(a["data"]["status"], a["data"]["applied"], a["data"]["reason"]) for a in answers] == [
        ("ACCEPTD", True, None),
        ("ACCEPTD", False, "stale"),
        ("DELIVRD", True, None),
        ("DELIVRD", False, "duplicate"),
    ]
    data = message(client, UUID)
    assert (data["status"], data["final"], data["to"]) == ("DELIVRD", True, "14155550100")
    assert [(i["raw_status"], i["applied"], i["reason"], i["sequence"]) for i in history(client, UUID)] == [
        ("sent", True, None, 2),
        ("queued", False, "stale", 1),
        ("delivered", True, None, 3),
    ]


def test_a_lower_sequence_is_stale_even_when_its_status_would_move_the_message(client: TestClient) -> None:
    """Plivo's order wins over the status rank: failed numbered 1 after sent numbered 2 is not applied."""
    post(client, callback(MessageUUID="p-2", Status="sent", Sequence="2"))
    late = post(client, callback(MessageUUID="p-2", Status="failed", Sequence="1", ErrorCode="300")).json()["data"]
    assert (late["status"], late["applied"], late["reason"]) == ("ACCEPTD", False, "stale")
    assert message(client, "p-2")["status"] == "ACCEPTD"


def test_get_callback_end_to_end(client: TestClient) -> None:
    """A GET callback (method=GET at sending) is read from the query string; ErrorCode reaches the message."""
    params = urlencode(callback(MessageUUID="p-get", Status="undelivered", ErrorCode="30"))
    response = client.get(f"/dlr/plivo?{params}")
    assert response.status_code == 200
    assert response.json()["data"] == {"id": "p-get", "status": "UNDELIV", "applied": True, "reason": None}
    data = message(client, "p-get")
    assert (data["status"], data["error"]) == ("UNDELIV", "30")
    assert history(client, "p-get")[0]["event_time"].startswith("2025-11-24T16:00:07.456789")


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [({"MessageUUID": None}, 11, "MessageUUID"), ({"Sequence": "three"}, 1, "Sequence")],
)
def test_invalid_callback_is_refused_and_quarantined(
    client: TestClient, db: str, change: dict[str, Any], code: int, field: str
) -> None:
    """The envelope error names Plivo's parameter; the callback is kept as received; no message is made."""
    body = urlencode(callback(**change))
    response = post(client, callback(**change))
    assert (response.status_code, response.json()["code"], field in response.json()["data"]) == (400, code, True)
    kept = client.get("/quarantine?dialect=plivo").json()["data"]["items"]
    assert (len(kept), kept[0]["body"], field in kept[0]["error"]) == (1, body, True)
    assert fetch(db, "SELECT count(*) AS n FROM messages")[0]["n"] == 0


def test_signed_callbacks_over_http(settings: Settings, db: str) -> None:
    """With DLR_WEBHOOK_SECRET_PLIVO set: a callback signed over the URL it was sent to (the query does not
    count) is applied; a wrong or missing signature is code 8, HTTP 401, nothing stored or quarantined.

    The signature is computed by hand: `printf %s 'http://testserver/dlr/plivo31415926' | openssl dgst -sha256
    -hmac plivo-auth-token -binary | base64`.
    """
    good = {
        "x-plivo-signature-v2": "rPUVxfOXh1z72f9N0vhDTC6ZqHyJoGiQtP54TXqQjQc=",
        "x-plivo-signature-v2-nonce": "31415926",
    }
    app = create_app(replace(settings, webhook_secrets={"plivo": Secret("plivo-auth-token")}))
    with TestClient(app) as client:
        ok = client.post(
            "/dlr/plivo?ref=x",
            content=urlencode(callback(MessageUUID="p-signed")).encode(),
            headers={"content-type": FORM, **good},
        )
        assert ok.json()["data"]["applied"] is True
        wrong = {**good, "x-plivo-signature-v2-nonce": "31415927"}
        for headers in (wrong, {"x-plivo-signature-v2": good["x-plivo-signature-v2"]}, {}):
            refused = client.post(
                "/dlr/plivo",
                content=urlencode(callback(MessageUUID="p-forged")).encode(),
                headers={"content-type": FORM, **headers},
            )
            assert (refused.status_code, refused.json()["code"]) == (401, 8)
    assert {r["id"] for r in fetch(db, "SELECT id FROM messages")} == {"p-signed"}
    assert fetch(db, "SELECT count(*) AS n FROM quarantine")[0]["n"] == 0
