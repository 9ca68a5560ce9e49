"""`/dlr/infobip`: `{"results": [...]}` batches, the status groups and ids, Standard Webhooks signatures.

Sample payloads: 42 written out, and 100 generated per run (every report field given any value). Written out:
the two-report batch; the v3 shape (`sender`, `messageCount`); one per mapping row (16, numbers as strings,
names only and odd casing included); 3 error objects; smsCount 0 without times; 6 batches with one bad report;
4 bodies that are no `results` batch; an oversized batch; the Standard Webhooks vector body; 8 over HTTP
(operator then handset, an error code, partly valid, none valid, a bare report, signed and forged batches).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from service.app import create_app
from service.auth import standard_webhook_signature, verify_callback, whsec_key
from service.config import Secret, Settings
from service.dialects import DIALECTS, ItemError
from service.dialects.infobip import parse
from service.dialects.types import ENVELOPE
from service.payloads import JSON, BatchTooLarge, RefusedPayload, RequestParts
from service.reports import IncomingReport
from service.statuses import Status
from tests.conftest import fetch

RECEIVED = datetime(2025, 11, 24, 16, 0, 5, tzinfo=UTC)

DELIVERED = {
    "groupId": 3,
    "groupName": "DELIVERED",
    "id": 5,
    "name": "DELIVERED_TO_HANDSET",
    "description": "Message delivered to handset",
}
NO_ERROR = {"groupId": 0, "groupName": "OK", "id": 0, "name": "NO_ERROR", "description": "No Error", "permanent": False}


def result(message_id: str = "4f3c1c9d-1b2a-4c5e-9d10-aa11bb22cc33", **changes: Any) -> dict[str, Any]:
    """One report as Infobip's SMS delivery-report webhook posts it (None removes a field)."""
    item: dict[str, Any] = {
        "bulkId": "BULK-2025-11-24",
        "price": {"pricePerMessage": 0.01, "currency": "EUR"},
        "status": DELIVERED,
        "error": NO_ERROR,
        "messageId": message_id,
        "doneAt": "2025-11-24T16:00:03.123+0000",
        "smsCount": 1,
        "sentAt": "2025-11-24T16:00:00.000+0000",
        "to": "41793026727",
        "from": "InfoSMS",
        "mccMnc": "22801",
        "callbackData": "order-1234",
    }
    for key, value in changes.items():
        if value is None:
            item.pop(key, None)
        else:
            item[key] = value
    return item


PENDING = {
    "groupId": 1,
    "groupName": "PENDING",
    "id": 7,
    "name": "PENDING_ENROUTE",
    "description": "Message sent to next instance",
}
DOCUMENTED = {"results": [result(), result("4f3c1c9d-0002", status=PENDING, doneAt=None, smsCount=2)]}


def parts_of(data: Any) -> RequestParts:
    return RequestParts("POST", JSON, b"", json.dumps(data).encode())


def items(data: Any, max_batch: int = 1000) -> list[IncomingReport | ItemError]:
    parsed = parse(parts_of(data), RECEIVED, max_batch)
    assert parsed.batch is True  # {"results": [...]} is a batch, even of one
    return parsed.items


def one(report: dict[str, Any]) -> IncomingReport:
    (item,) = items({"results": [report]})
    assert isinstance(item, IncomingReport), item
    return item


# --- the parser -------------------------------------------------------------------------------------


def test_documented_batch() -> None:
    """Each report becomes a message-level report: id, status, part count, times, recipient, bulk, raw status."""
    first, second = items(DOCUMENTED)
    assert isinstance(first, IncomingReport)
    assert isinstance(second, IncomingReport)
    assert first.message_id == "4f3c1c9d-1b2a-4c5e-9d10-aa11bb22cc33"
    assert (first.report.status, first.report.segment, first.report.segments) == (Status.DELIVRD, None, 1)
    assert first.event_time == datetime(2025, 11, 24, 16, 0, 3, 123000, tzinfo=UTC)  # doneAt, +0000 offset
    assert (first.recipient, first.campaign, first.error) == ("41793026727", "BULK-2025-11-24", None)
    assert (first.raw_status, first.source, first.event_id) == ("DELIVERED_TO_HANDSET", "infobip", None)
    assert (second.report.status, second.report.segments) == (Status.ACCEPTD, 2)
    assert second.event_time == datetime(2025, 11, 24, 16, 0, tzinfo=UTC)  # no doneAt yet: sentAt
    assert second.raw_status == "PENDING_ENROUTE"


def test_v3_payload_shape() -> None:
    """The newer webhook names the sender `sender` and the part count `messageCount`: both are read."""
    item = one(result(smsCount=None, messageCount=3, sender="InfoSMS", **{"from": None}))
    assert item.report.segments == 3


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"groupId": 1, "groupName": "PENDING", "id": 3, "name": "PENDING_WAITING_DELIVERY"}, Status.ACCEPTD),
        ({"groupId": 1, "groupName": "PENDING", "id": 7, "name": "PENDING_ENROUTE"}, Status.ACCEPTD),
        ({"groupId": 1, "groupName": "PENDING", "id": 26, "name": "PENDING_ACCEPTED"}, Status.ACCEPTD),
        ({"groupId": 3, "groupName": "DELIVERED", "id": 2, "name": "DELIVERED_TO_OPERATOR"}, Status.ACCEPTD),
        ({"groupId": 3, "groupName": "DELIVERED", "id": 5, "name": "DELIVERED_TO_HANDSET"}, Status.DELIVRD),
        ({"groupId": 2, "groupName": "UNDELIVERABLE", "id": 9, "name": "UNDELIVERABLE_NOT_DELIVERED"}, Status.UNDELIV),
        (
            {"groupId": 2, "groupName": "UNDELIVERABLE", "id": 4, "name": "UNDELIVERABLE_REJECTED_OPERATOR"},
            Status.UNDELIV,
        ),
        ({"groupId": 4, "groupName": "EXPIRED", "id": 15, "name": "EXPIRED_EXPIRED"}, Status.EXPIRED),
        ({"groupId": 5, "groupName": "REJECTED", "id": 6, "name": "REJECTED_NETWORK"}, Status.REJECTD),
        ({"groupId": 5, "groupName": "REJECTED", "id": 12, "name": "REJECTED_NOT_ENOUGH_CREDITS"}, Status.REJECTD),
        ({"groupId": "3", "id": "5"}, Status.DELIVRD),  # numbers as strings, no names
        ({"name": "DELIVERED_TO_HANDSET"}, Status.DELIVRD),  # names only
        ({"groupName": "DELIVERED", "name": "delivered_to_operator"}, Status.ACCEPTD),  # odd casing
        ({"name": "REJECTED_DESTINATION"}, Status.REJECTD),  # a member's name says its group
        ({"groupName": "Expired"}, Status.EXPIRED),
        ({"groupId": 9, "groupName": "SOMETHING_NEW", "id": 99, "name": "SOMETHING_NEW"}, None),
    ],
)
def test_status_mapping(status: dict[str, Any], expected: Status | None) -> None:
    """Decided by id (2, 5) then groupId, names as the fallback; unknown values map to no status, raw kept."""
    item = one(result(status=status))
    assert item.report.status is expected
    assert item.raw_status == status.get("name", status.get("groupName", "groupId='3' id='5'"))


def test_error_code_is_kept_and_no_error_is_none() -> None:
    """`error.id` is the operator error code; id 0 (NO_ERROR, sent on every report) records none."""
    absent = {"groupId": 1, "groupName": "HANDSET_ERRORS", "id": 27, "name": "EC_ABSENT_SUBSCRIBER", "permanent": False}
    undelivered = {"groupId": 2, "groupName": "UNDELIVERABLE", "id": 9, "name": "UNDELIVERABLE_NOT_DELIVERED"}
    assert one(result(status=undelivered, error=absent)).error == "27"
    assert one(result(error=None)).error is None
    assert one(result()).error is None


def test_missing_optional_fields_and_zero_parts() -> None:
    """smsCount 0 (a message refused before it was split) is an unknown count; no times, no event time."""
    item = one(result(smsCount=0, doneAt=None, sentAt=None, to=None, bulkId=None))
    assert (item.report.segments, item.event_time, item.recipient, item.campaign) == (None, None, None, None)


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"messageId": None}, 11, "messageId"),
        ({"status": None}, 11, "status"),
        ({"status": "DELIVERED_TO_HANDSET"}, 1, "status"),
        ({"doneAt": "24/11/2025 16:00"}, 1, "doneAt"),
        ({"smsCount": -1}, 1, "smsCount"),
        ({"error": "EC_ABSENT_SUBSCRIBER"}, 1, "error"),
        # false == 0 in Python, but it is neither Infobip's "0 parts" nor its "no error" id 0
        ({"smsCount": False}, 1, "smsCount"),
        ({"error": {"id": False}}, 1, "error"),
    ],
)
def test_bad_report_fails_alone_and_replays(change: dict[str, Any], code: int, field: str) -> None:
    """A bad report is an item error naming Infobip's field; what is kept for it replays to the same error."""
    good, bad = items({"results": [result("ok-1"), result("bad-1", **change)]})
    assert isinstance(good, IncomingReport)
    assert isinstance(bad, ItemError)
    assert (bad.index, bad.code, field in bad.errors) == (1, code, True)
    replayed = parse(bad.parts, RECEIVED, 1000)
    assert json.loads(bad.parts.body) == {"results": [result("bad-1", **change)]}
    assert isinstance(replayed.items[0], ItemError)
    assert replayed.items[0].errors == bad.errors


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"messageId": "x", "status": DELIVERED}, 11, "results"),
        ({"results": []}, 1, "results"),
        ({"results": {"messageId": "x"}}, 1, "results"),
        ([result()], 1, "body"),
    ],
)
def test_body_that_is_not_a_results_batch_is_refused_whole(body: Any, code: int, field: str) -> None:
    """No `results` array (a bare report, an array, an empty batch): the request as a whole is refused."""
    with pytest.raises(RefusedPayload) as raised:
        parse(parts_of(body), RECEIVED, 1000)
    assert (raised.value.code, field in raised.value.errors) == (code, True)


def test_batch_over_the_limit_is_refused_before_any_report_is_built() -> None:
    """More reports than max_batch: BatchTooLarge, whatever the reports look like."""
    with pytest.raises(BatchTooLarge):
        parse(parts_of({"results": [{}] * 3}), RECEIVED, 2)


ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["0", "5", "", "NO_ERROR", "DELIVERED_TO_HANDSET", "2025-11-24T16:00:03.123+0000", "\x00"]),
    st.lists(st.integers(), max_size=2),
)
STATUS_OBJECTS = st.dictionaries(st.sampled_from(["groupId", "groupName", "id", "name"]), ANY_VALUE, max_size=4)
FIELDS = ["messageId", "status", "error", "smsCount", "messageCount", "doneAt", "sentAt", "to", "bulkId"]


@given(
    changes=st.dictionaries(
        st.sampled_from(FIELDS), st.one_of(ANY_VALUE, STATUS_OBJECTS, st.builds(dict, id=ANY_VALUE)), max_size=4
    )
)
def test_any_field_values_give_a_report_or_an_error_naming_infobip_fields(changes: dict[str, Any]) -> None:
    """Whatever a report's fields hold: a report (mapped or unmapped), or an item error naming only its fields."""
    (item,) = items({"results": [result(**changes)]})
    if isinstance(item, ItemError):
        assert item.code in (1, 11)
        assert item.errors
        assert set(item.errors) <= set(FIELDS)
    else:
        assert item.raw_status
        assert "\x00" not in item.raw_status


# --- over HTTP --------------------------------------------------------------------------------------


def message(client: TestClient, message_id: str) -> dict[str, Any]:
    response = client.get(f"/messages/{message_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


def history(client: TestClient, message_id: str) -> list[dict[str, Any]]:
    return client.get(f"/messages/{message_id}/history").json()["data"]["items"]  # type: ignore[no-any-return]


def test_batch_end_to_end_and_delivered_to_operator_is_not_final(client: TestClient) -> None:
    """A batch answers code 0 with a result per report; DELIVERED_TO_OPERATOR leaves the message open, and
    DELIVERED_TO_HANDSET later makes it DELIVRD."""
    operator = {"groupId": 3, "groupName": "DELIVERED", "id": 2, "name": "DELIVERED_TO_OPERATOR"}
    response = client.post("/dlr/infobip", json={"results": [result("ib-1", status=operator), result("ib-2")]})
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 0
    assert body["data"]["items"] == [
        {"index": 0, "code": 0, "id": "ib-1", "status": "ACCEPTD", "applied": True, "reason": None},
        {"index": 1, "code": 0, "id": "ib-2", "status": "DELIVRD", "applied": True, "reason": None},
    ]
    data = message(client, "ib-1")
    assert (data["status"], data["final"], data["to"], data["campaign"]) == (
        "ACCEPTD",
        False,
        "41793026727",
        "BULK-2025-11-24",
    )
    client.post("/dlr/infobip", json={"results": [result("ib-1")]})
    assert message(client, "ib-1")["status"] == "DELIVRD"
    assert [(i["status"], i["raw_status"], i["source"]) for i in history(client, "ib-1")] == [
        ("ACCEPTD", "DELIVERED_TO_OPERATOR", "infobip"),
        ("DELIVRD", "DELIVERED_TO_HANDSET", "infobip"),
    ]
    assert history(client, "ib-1")[1]["event_time"].startswith("2025-11-24T16:00:03.123")


def test_error_code_reaches_the_message(client: TestClient) -> None:
    """An UNDELIVERABLE report's error id is the message's error."""
    undelivered = {"groupId": 2, "groupName": "UNDELIVERABLE", "id": 9, "name": "UNDELIVERABLE_NOT_DELIVERED"}
    error = {"groupId": 1, "groupName": "HANDSET_ERRORS", "id": 27, "name": "EC_ABSENT_SUBSCRIBER"}
    client.post("/dlr/infobip", json={"results": [result("ib-3", status=undelivered, error=error)]})
    data = message(client, "ib-3")
    assert (data["status"], data["error"]) == ("UNDELIV", "27")


def test_partly_valid_batch_is_98_and_the_bad_report_is_quarantined(client: TestClient) -> None:
    """One report without messageId: code 98 (HTTP 207), the other applied, the bad one kept in Infobip's shape."""
    response = client.post("/dlr/infobip", json={"results": [result("ib-4"), result(messageId=None)]})
    assert response.status_code == 207
    body = response.json()
    assert body["code"] == 98
    assert body["data"]["items"][1] == {"index": 1, "code": 11, "errors": {"messageId": "required"}}
    assert message(client, "ib-4")["status"] == "DELIVRD"
    kept = client.get("/quarantine?dialect=infobip").json()["data"]["items"]
    assert len(kept) == 1
    assert json.loads(kept[0]["body"]) == {"results": [result(messageId=None)]}
    assert kept[0]["error"] == {"messageId": "required"}


def test_batch_with_no_valid_report_is_99(client: TestClient, db: str) -> None:
    """Every report bad: code 99, HTTP 400, each report's error, each kept, no message."""
    response = client.post("/dlr/infobip", json={"results": [result(status=None), "not a report"]})
    assert (response.status_code, response.json()["code"]) == (400, 99)
    assert [i["code"] for i in response.json()["data"]["items"]] == [11, 1]
    assert len(client.get("/quarantine?dialect=infobip").json()["data"]["items"]) == 2
    assert fetch(db, "SELECT count(*) AS n FROM messages")[0]["n"] == 0


def test_body_without_results_is_refused_and_quarantined(client: TestClient) -> None:
    """A bare report (not wrapped in `results`) is code 11 naming `results`, and kept."""
    response = client.post("/dlr/infobip", json=result("ib-5"))
    assert (response.status_code, response.json()["code"], response.json()["data"]) == (
        400,
        11,
        {"results": "required"},
    )
    assert len(client.get("/quarantine?dialect=infobip").json()["data"]["items"]) == 1


# --- signatures: Infobip has no scheme of its own, so Standard Webhooks applies -----------------------

WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_dialect_has_no_scheme_of_its_own_and_the_published_vector_verifies() -> None:
    """With DLR_WEBHOOK_SECRET_INFOBIP set, the Standard Webhooks test vector verifies through the dialect."""
    assert DIALECTS["infobip"].verify is None
    assert DIALECTS["infobip"].ack == ENVELOPE
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    parts = RequestParts("POST", JSON, b"", b'{"test": 2432232314}', headers)
    settings = Settings(webhook_secrets={"infobip": Secret(WHSEC)})
    assert verify_callback(DIALECTS["infobip"], parts, settings, 1614265330.0) == "msg_p5jXN8AQM9LWM0D4loKWxJek"


def signed(body: bytes, webhook_id: str) -> dict[str, str]:
    ts = str(int(time.time()))
    signature = standard_webhook_signature(whsec_key(WHSEC), webhook_id, ts, body)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": ts,
        "webhook-signature": f"v1,{signature}",
        "content-type": JSON,
    }


def test_signed_batches_over_http(settings: Settings, db: str) -> None:
    """A signed batch is applied once per webhook-id (a resend is a duplicate); an unsigned or wrongly signed
    one is code 8, HTTP 401, and nothing is stored or quarantined."""
    app = create_app(replace(settings, webhook_secrets={"infobip": Secret(WHSEC)}))
    body = json.dumps({"results": [result("ib-s1"), result("ib-s2")]}).encode()
    with TestClient(app) as client:
        first = client.post("/dlr/infobip", content=body, headers=signed(body, "evt_ib_1"))
        assert [i["applied"] for i in first.json()["data"]["items"]] == [True, True]
        again = client.post("/dlr/infobip", content=body, headers=signed(body, "evt_ib_1"))
        assert [i["reason"] for i in again.json()["data"]["items"]] == ["duplicate", "duplicate"]
        other = json.dumps({"results": [result("ib-s3")]}).encode()
        for headers in ({"content-type": JSON}, signed(body, "evt_ib_2")):
            refused = client.post("/dlr/infobip", content=other, headers=headers)
            assert (refused.status_code, refused.json()["code"]) == (401, 8)
    assert {r["id"] for r in fetch(db, "SELECT id FROM messages")} == {"ib-s1", "ib-s2"}
    assert fetch(db, "SELECT count(*) AS n FROM quarantine")[0]["n"] == 0
