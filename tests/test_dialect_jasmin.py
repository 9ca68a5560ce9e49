"""`/dlr/jasmin`: Jasmin's HTTP DLR callback, levels 1 and 2, GET or POST form, `ND` placeholders.

Payloads are reconstructed from Jasmin's DLRThrower (jasmin/routing/throwers.py) and the HTTP API docs:
level 1 `id, message_status, level, connector`; level 2 adds `id_smsc, sub, dlvrd, subdate, donedate, err,
text`, `ND` for what the SMSC did not send. The answer is always HTTP 200 with the body `ACK/Jasmin`,
except for a failed authentication (401) and a database outage (503): Jasmin must retry those.
Sample payloads tested: 30 (16 mapping rows, 5 quirk payloads, 6 invalid, 3 over HTTP only).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.auth import standard_webhook_signature, whsec_key
from service.config import Secret, Settings
from service.dialects import DIALECTS, ItemError
from service.dialects.jasmin import ACK, parse
from service.payloads import RequestParts
from service.reports import IncomingReport
from service.statuses import Status
from tests.conftest import fetch

NOW = datetime(2026, 1, 15, 11, 42, 30, tzinfo=UTC)
FORM = "application/x-www-form-urlencoded"
JASMIN_HEADERS = {"accept": "text/plain", "user-agent": "Jasmin gateway/1.0 DLRThrower"}
MSG_ID = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"  # the id Jasmin's send call returned


def level1(message_status: str = "ESME_ROK", message_id: str = MSG_ID) -> dict[str, str]:
    return {"id": message_id, "message_status": message_status, "level": "1", "connector": "smppc01"}


def level2(message_status: str = "DELIVRD", message_id: str = MSG_ID, **fields: str) -> dict[str, str]:
    # Current Jasmin puts the DLR's raw id into `connector` at level 2 (a known quirk): not relied on.
    return {
        "id": message_id,
        "id_smsc": "08B2F4C1",
        "message_status": message_status,
        "level": "2",
        "connector": MSG_ID,
        "sub": "001",
        "dlvrd": "001" if message_status == "DELIVRD" else "000",
        "subdate": "2601151140",
        "donedate": "2601151141",
        "err": "000",
        "text": "Your code is 4711",
        **fields,
    }


def parse_form(params: dict[str, str], method: str = "POST") -> IncomingReport | ItemError:
    encoded = urlencode(params).encode()
    query, body, kind = (encoded, b"", None) if method == "GET" else (b"", encoded, FORM)
    parsed = parse(RequestParts(method, kind, query, body), NOW, 1000)
    assert parsed.batch is False
    [item] = parsed.items
    return item


def report(params: dict[str, str], method: str = "POST") -> IncomingReport:
    item = parse_form(params, method)
    assert isinstance(item, IncomingReport), item
    return item


# -- every mapping row --------------------------------------------------------------------------------

MAPPING = [
    # (callback, status, error)
    (level1("ESME_ROK"), Status.ACCEPTD, None),
    (level1("ESME_RINVNUMDESTS"), Status.REJECTD, "ESME_RINVNUMDESTS"),
    (level1("ESME_RINVDSTADR"), Status.REJECTD, "ESME_RINVDSTADR"),
    (level1("ESME_RTHROTTLED"), Status.REJECTD, "ESME_RTHROTTLED"),
    (level1("ESME_RSUBMITFAIL"), Status.REJECTD, "ESME_RSUBMITFAIL"),
    (level2("DELIVRD"), Status.DELIVRD, "000"),
    (level2("EXPIRED", err="027"), Status.EXPIRED, "027"),
    (level2("DELETED"), Status.DELETED, "000"),
    (level2("UNDELIV", err="001"), Status.UNDELIV, "001"),
    (level2("REJECTD", err="011"), Status.REJECTD, "011"),
    (level2("ACCEPTD"), Status.ACCEPTD, "000"),
    (level2("UNKNOWN"), None, "000"),
    (level2("ENROUTE"), None, "000"),  # Jasmin refuses anything else; if one slipped through: no status
    (level2("delivrd"), Status.DELIVRD, "000"),  # odd casing
    ({**level1("ESME_ROK"), "level": ""}, Status.ACCEPTD, None),  # level left out: the vocabulary says it
    ({**level2("DELIVRD"), "level": "ND"}, Status.DELIVRD, "000"),
]


@pytest.mark.parametrize(("params", "status", "error"), MAPPING)
def test_levels_map_onto_statuses(params: dict[str, str], status: Status | None, error: str | None) -> None:
    """Level 1: ESME_ROK is ACCEPTD, any other ESME_* REJECTD (its name is the error). Level 2: the five
    finals as they are, ACCEPTD non-final, UNKNOWN no status; err is the operator error."""
    item = report(params)
    assert item.report.status is status
    assert item.error == error
    assert item.raw_status == params["message_status"]
    assert item.report.segment is None


def test_level2_fields() -> None:
    """The Jasmin id is the message id as sent; donedate (no zone: UTC) is the event time."""
    item = report(level2("DELIVRD"))
    assert (item.message_id, item.source, item.recipient) == (MSG_ID, "jasmin", None)
    assert item.event_time == datetime(2026, 1, 15, 11, 41, tzinfo=UTC)
    assert item.received_at == NOW


def test_nd_placeholders_are_absent_fields() -> None:
    """`ND` for sub/dlvrd/subdate/donedate/err/text is read as absent: no error, no event time."""
    params = level2("UNDELIV", sub="ND", dlvrd="ND", subdate="ND", donedate="ND", err="ND", text="ND", id_smsc="ND")
    item = report(params)
    assert (item.report.status, item.error, item.event_time) == (Status.UNDELIV, None, None)


def test_get_and_post_carry_the_same_callback() -> None:
    """dlr-method GET (query string) and POST (form body) are read alike."""
    assert report(level2("EXPIRED"), "GET") == report(level2("EXPIRED"), "POST")


def test_donedate_as_the_smsc_wrote_it() -> None:
    """donedate is whatever the SMSC sent: 12 digits with seconds are read; garbage is ignored."""
    with_seconds = report(level2("DELIVRD", donedate="260115114107"))
    assert with_seconds.event_time == datetime(2026, 1, 15, 11, 41, 7, tzinfo=UTC)
    assert report(level2("DELIVRD", donedate="yesterday")).event_time is None


def test_jasmin_answers_ack_jasmin_and_has_no_own_signature() -> None:
    """The dialect asks for Jasmin's acknowledgement; Jasmin signs nothing (tokens, Standard Webhooks)."""
    assert (DIALECTS["jasmin"].ack, DIALECTS["jasmin"].verify) == (ACK, None)


INVALID = [
    ({"message_status": "DELIVRD", "level": "2"}, 11, "id"),
    ({"id": "ND", "message_status": "DELIVRD", "level": "2"}, 11, "id"),
    ({"id": MSG_ID, "level": "1"}, 11, "message_status"),
    ({"id": MSG_ID, "message_status": "ND", "level": "2"}, 11, "message_status"),
    ({"id": MSG_ID, "message_status": "DELIVRD", "level": "3"}, 1, "level"),
    ({"id": MSG_ID, "message_status": "X" * 65, "level": "2"}, 1, "message_status"),
]


@pytest.mark.parametrize(("params", "code", "field"), INVALID)
def test_invalid_callbacks_name_the_field(params: dict[str, str], code: int, field: str) -> None:
    """A missing id or message_status (ND counts as missing) is code 11; a level other than 1 or 2 or an
    overlong status code 1, each naming Jasmin's field."""
    item = parse_form(params)
    assert isinstance(item, ItemError)
    assert item.code == code
    assert field in item.errors


# -- HTTP, end to end ---------------------------------------------------------------------------------


def post(client: TestClient, params: dict[str, str]):  # type: ignore[no-untyped-def]
    return client.post(
        "/dlr/jasmin", content=urlencode(params).encode(), headers={"content-type": FORM, **JASMIN_HEADERS}
    )


def assert_ack(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 200
    assert response.text == "ACK/Jasmin"
    assert response.headers["content-type"].startswith("text/plain")


def message(client: TestClient, message_id: str) -> dict:  # type: ignore[type-arg]
    response = client.get(f"/messages/{message_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def history(client: TestClient, message_id: str) -> list[dict]:  # type: ignore[type-arg]
    return client.get(f"/messages/{message_id}/history").json()["data"]["items"]


def test_level1_then_level2_over_http(client: TestClient) -> None:
    """dlr-level 3: the level-1 GET makes the message ACCEPTD, the level-2 POST DELIVRD; each is answered
    200 `ACK/Jasmin`; a retry of the level 2 is acknowledged too and stored once."""
    client.post("/messages", json={"id": MSG_ID, "to": "380501234567"})
    assert_ack(client.get("/dlr/jasmin?" + urlencode(level1()), headers=JASMIN_HEADERS))
    assert message(client, MSG_ID)["status"] == "ACCEPTD"
    assert_ack(post(client, level2("DELIVRD")))
    assert_ack(post(client, level2("DELIVRD")))  # Jasmin retried after a timeout: a duplicate
    data = message(client, MSG_ID)
    assert (data["status"], data["final"], data["error"]) == ("DELIVRD", True, None)  # err:000 is no error
    assert [(e["status"], e["raw_status"], e["source"], e["applied"]) for e in history(client, MSG_ID)] == [
        ("ACCEPTD", "ESME_ROK", "jasmin", True),
        ("DELIVRD", "DELIVRD", "jasmin", True),
    ]


def test_refused_submit_over_http(client: TestClient) -> None:
    """A level-1 ESME_RINVDSTADR rejects the message with that error, acknowledged as usual."""
    assert_ack(client.get("/dlr/jasmin?" + urlencode(level1("ESME_RINVDSTADR", "j-rej")), headers=JASMIN_HEADERS))
    data = message(client, "j-rej")
    assert (data["status"], data["error"]) == ("REJECTD", "ESME_RINVDSTADR")


def test_unknown_is_acknowledged_and_kept_without_a_transition(client: TestClient) -> None:
    """Level-2 UNKNOWN: `ACK/Jasmin`, status unchanged, one history row with reason unmapped."""
    post(client, level2("ACCEPTD", "j-unk"))
    assert_ack(post(client, level2("UNKNOWN", "j-unk")))
    assert message(client, "j-unk")["status"] == "ACCEPTD"
    assert [(e["status"], e["raw_status"], e["reason"]) for e in history(client, "j-unk")] == [
        ("ACCEPTD", "ACCEPTD", None),
        (None, "UNKNOWN", "unmapped"),
    ]


def test_invalid_callback_is_acknowledged_and_quarantined(client: TestClient, db: str) -> None:
    """A callback without an id is still answered `ACK/Jasmin` (or Jasmin resends it for ever), stores no
    message, and is kept in the quarantine with the reason naming `id`."""
    body = urlencode({"id": "ND", "message_status": "DELIVRD", "level": "2"})
    assert_ack(client.post("/dlr/jasmin", content=body.encode(), headers={"content-type": FORM}))
    assert_ack(client.post("/dlr/jasmin", content=b"<dlr/>", headers={"content-type": "application/xml"}))
    assert fetch(db, "SELECT count(*) AS n FROM messages")[0]["n"] == 0
    kept = client.get("/quarantine?dialect=jasmin").json()["data"]["items"]
    assert [k["body"] for k in kept] == ["<dlr/>", body]
    assert kept[1]["error"] == {"id": "required"}


def test_database_outage_is_503_not_ack(settings: Settings, database_outage) -> None:  # type: ignore[no-untyped-def]
    """Only a database outage is not acknowledged: 503 code 10, so that Jasmin retries."""
    with TestClient(create_app(settings)) as client:
        with database_outage():
            down = post(client, level2("DELIVRD", "j-down"))
            assert (down.status_code, down.json()["code"]) == (503, 10)
            assert down.text != "ACK/Jasmin"
        assert_ack(post(client, level2("DELIVRD", "j-down")))


SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks test vector's secret


def test_authentication_failures_are_401_not_ack(settings: Settings, db: str) -> None:
    """Jasmin cannot sign: with a token, a callback without it is 401 code 8 (not ACK/Jasmin) and stores
    nothing; with DLR_WEBHOOK_SECRET_JASMIN, only a Standard Webhooks signature over the body passes."""
    assert (
        standard_webhook_signature(
            whsec_key(SECRET), "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", b'{"test": 2432232314}'
        )
        == "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )
    with TestClient(create_app(replace(settings, webhook_tokens={"jasmin": Secret("j4smin")}))) as client:
        refused = post(client, level2("DELIVRD", "j-auth"))
        assert (refused.status_code, refused.json()["code"]) == (401, 8)
        assert_ack(client.get("/dlr/jasmin?" + urlencode({**level2("DELIVRD", "j-auth"), "token": "j4smin"})))
    body = urlencode(level2("DELIVRD", "j-signed")).encode()
    ts = str(int(datetime.now(UTC).timestamp()))
    good = standard_webhook_signature(whsec_key(SECRET), "evt-j1", ts, body)
    with TestClient(create_app(replace(settings, webhook_secrets={"jasmin": Secret(SECRET)}))) as client:
        unsigned = post(client, level2("DELIVRD", "j-signed"))
        assert (unsigned.status_code, unsigned.json()["code"]) == (401, 8)
        assert "j-signed" not in {r["id"] for r in fetch(db, "SELECT id FROM messages")}
        signed = {
            "content-type": FORM,
            "webhook-id": "evt-j1",
            "webhook-timestamp": ts,
            "webhook-signature": f"v1,{good}",
        }
        assert_ack(client.post("/dlr/jasmin", content=body, headers=signed))
        assert message(client, "j-signed")["status"] == "DELIVRD"
