"""`/dlr/kannel`: smsbox's dlr-url GET, parsed and then end to end through HTTP.

Payloads are the documented dlr-url (`id=<own id>&type=%d&answer=%A&to=%p&from=%P&ts=%T&smsc=%i&
smsc_msgid=%F`) as smsbox expands it: values URL-encoded the way Kannel's octstr_url_encode does (space as
`+`, everything else unsafe as `%XX`), `%A` holding the SMPP receipt, `ACK/` or `NACK/<code>/<text>`.
Sample payloads tested: 55 (20 mapping rows, 14 requests recorded from a real Kannel 1.4.5, 11 quirk
payloads, 9 invalid ones, 1 over HTTP only).
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
from service.dialects.kannel import parse
from service.dialects.types import ENVELOPE
from service.payloads import RefusedPayload, RequestParts
from service.reports import IncomingReport
from service.statuses import Status
from tests.conftest import fetch

NOW = datetime(2026, 1, 15, 11, 42, 30, tzinfo=UTC)
TS = "1768477348"  # %T: 2026-01-15 11:42:28 UTC


def receipt(stat: str, err: str = "000", smsc_id: str = "3A4B5C6D") -> str:
    """An SMPP receipt as an SMSC writes it into deliver_sm, which Kannel passes on as %A."""
    dlvrd = "001" if stat == "DELIVRD" else "000"
    return (
        f"id:{smsc_id} sub:001 dlvrd:{dlvrd} submit date:2601151140 done date:2601151141 "
        f"stat:{stat} err:{err} text:Your code is 4711"
    )


def dlr_query(message_id: str = "mz-1001", dlr_type: str = "1", answer: str = "", **extra: str) -> bytes:
    """The documented dlr-url after smsbox expanded it (space as `+`, like octstr_url_encode)."""
    params = {
        "id": message_id,
        "type": dlr_type,
        "answer": answer,
        "to": "+380501234567",
        "from": "Mobizon",
        "ts": TS,
        "smsc": "smpp-lifecell",
        "smsc_msgid": "3A4B5C6D",
        **extra,
    }
    return urlencode(params).encode()


def parse_get(query: bytes) -> IncomingReport | ItemError:
    parsed = parse(RequestParts("GET", None, query, b""), NOW, 1000)
    assert parsed.batch is False
    assert len(parsed.items) == 1
    return parsed.items[0]


def report(query: bytes) -> IncomingReport:
    item = parse_get(query)
    assert isinstance(item, IncomingReport), item
    return item


# -- parser: every mapping row -------------------------------------------------------------------

MAPPING = [
    # (type %d, answer %A, status, error, raw_status)
    ("1", receipt("DELIVRD"), Status.DELIVRD, "000", "1/DELIVRD"),
    ("1", "", Status.DELIVRD, None, "1"),  # fakesmsc: Kannel's own success DLR, %A empty
    ("2", receipt("UNDELIV", "001"), Status.UNDELIV, "001", "2/UNDELIV"),
    ("2", receipt("EXPIRED", "027"), Status.EXPIRED, "027", "2/EXPIRED"),
    ("2", receipt("REJECTD", "011"), Status.REJECTD, "011", "2/REJECTD"),
    ("2", receipt("DELETED", "000"), Status.DELETED, "000", "2/DELETED"),
    ("2", receipt("UNKNOWN", "000"), Status.UNDELIV, "000", "2/UNKNOWN"),  # Kannel says failed; UNKNOWN adds nothing
    ("2", "", Status.UNDELIV, None, "2"),  # state from the message_state TLV, no receipt text
    ("2", receipt("DELIVRD"), Status.UNDELIV, "000", "2/DELIVRD"),  # contradiction: Kannel's type decides
    ("2", receipt("expired", "027"), Status.EXPIRED, "027", "2/expired"),  # odd casing
    ("34", receipt("EXPIRED", "027"), Status.EXPIRED, "027", "34/EXPIRED"),  # Kannel 1.4.5: 32 | 2
    ("33", receipt("DELIVRD"), Status.DELIVRD, "000", "33/DELIVRD"),  # 32 | 1
    ("4", receipt("ENROUTE"), Status.ACCEPTD, "000", "4/ENROUTE"),
    ("4", receipt("ACCEPTD"), Status.ACCEPTD, "000", "4/ACCEPTD"),
    ("36", receipt("BUFFRED"), Status.ACCEPTD, "000", "36/BUFFRED"),  # 32 | 4
    ("32", "", Status.ACCEPTD, None, "32"),
    ("8", "ACK/", Status.ACCEPTD, None, "8"),
    ("8", "ACK/3A4B5C6D", Status.ACCEPTD, None, "8"),
    ("16", "NACK/0x0000000b/Invalid Destination Address", Status.REJECTD, "0x0000000b", "16"),
    ("16", "NACK/Retries Exceeded", Status.REJECTD, "Retries Exceeded", "16"),
]


@pytest.mark.parametrize(("dlr_type", "answer", "status", "error", "raw"), MAPPING)
def test_type_bits_and_receipt_map_onto_statuses(
    dlr_type: str, answer: str, status: Status, error: str | None, raw: str
) -> None:
    """%d is read as bits (1 delivered, 2 failed, 4 buffered, 8 SMSC ack, 16 SMSC nack, 32 intermediate);
    a failure is refined by the receipt's stat:, and the operator error comes from err: or the NACK code."""
    item = report(dlr_query(dlr_type=dlr_type, answer=answer))
    assert item.report.status is status
    assert item.error == error
    assert item.raw_status == raw


def test_documented_dlr_url_fields() -> None:
    """id is kept exactly as sent, %p is the recipient, %T the event time; from/smsc/smsc_msgid and any
    other parameter (a token, say) are ignored; no segment is named."""
    item = report(dlr_query("000123", "1", receipt("DELIVRD"), token="t0k", foo="bar"))
    assert item.message_id == "000123"
    assert item.source == "kannel"
    assert item.recipient == "+380501234567"
    assert item.event_time == datetime(2026, 1, 15, 11, 42, 28, tzinfo=UTC)
    assert item.received_at == NOW
    assert item.report.segment is None
    assert item.report.segments is None


def test_percent_encoded_space_and_plus_forms_read_alike() -> None:
    """%A encoded with %20 (another proxy) reads like smsbox's `+` for spaces."""
    plus = dlr_query(dlr_type="2", answer=receipt("EXPIRED"))
    percent = plus.replace(b"+", b"%20").replace(b"to=%20380", b"to=%2B380")
    assert report(percent).report.status is Status.EXPIRED
    assert report(percent).recipient == "+380501234567"


def test_without_ts_the_receipt_done_date_is_the_event_time() -> None:
    """When the dlr-url has no %T, the receipt's done date (read as UTC) stands in; without either, none."""
    query = urlencode({"id": "m1", "type": "2", "answer": receipt("EXPIRED")}).encode()
    assert report(query).event_time == datetime(2026, 1, 15, 11, 41, tzinfo=UTC)
    assert report(b"id=m1&type=8&answer=ACK%2F").event_time is None


def test_minimal_url_with_only_id_and_type() -> None:
    """A shorter dlr-url (`?id=...&type=%d`) is enough: recipient, error and time stay empty."""
    item = report(b"id=m2&type=1")
    assert (item.report.status, item.recipient, item.error, item.event_time) == (Status.DELIVRD, None, None, None)


def test_receipt_with_12_digit_dates_and_4_digit_err() -> None:
    """A receipt with YYMMDDhhmmss dates and a 4-digit err is read (err kept as sent, seconds kept)."""
    answer = "id:0A1B sub:001 dlvrd:000 submit date:260115114000 done date:260115114105 stat:REJECTD err:0011 text:"
    item = report(urlencode({"id": "m3", "type": "2", "answer": answer}).encode())
    assert (item.report.status, item.error) == (Status.REJECTD, "0011")
    assert item.event_time == datetime(2026, 1, 15, 11, 41, 5, tzinfo=UTC)
    with_ts = report(urlencode({"id": "m3", "type": "2", "answer": answer, "ts": TS}).encode())
    assert with_ts.event_time == datetime(2026, 1, 15, 11, 42, 28, tzinfo=UTC)  # %T wins over the done date


def test_kannel_is_registered_with_the_envelope_and_no_own_signature() -> None:
    """Kannel needs a 200/202 only: the envelope; it signs nothing, so Standard Webhooks/tokens apply."""
    dialect = DIALECTS["kannel"]
    assert (dialect.ack, dialect.verify) == (ENVELOPE, None)


# -- requests recorded from a real Kannel 1.4.5 ------------------------------------------------------
# bearerbox + smsbox (Debian 1.4.5-12), an SMPP SMSC (tests/smpp_simulator.py) and Kannel's own fakesmsc,
# sendsms with dlr-mask 31/63 and the documented dlr-url: query strings exactly as smsbox sent them.
_R = (
    "id%3A{mid}+sub%3A001+dlvrd%3A{d}+submit+date%3A2611251322+done+date%3A2611251322+stat%3A{stat}+err%3A{err}+text%3A"
)
_TAIL = "&from=Mobizon&ts=1795612957&smsc=sim&smsc_msgid="
RECORDED = [
    # (query, status, error)
    ("id=k-1&type=8&answer=ACK%2F&to=380501234561" + _TAIL + "1000000001", Status.ACCEPTD, None),
    (
        "id=k-1&type=1&answer=" + _R.format(mid=1000000001, d="001", stat="DELIVRD", err="000")
        + "Your+code+is+4711&to=380501234561" + _TAIL + "1000000001",
        Status.DELIVRD, "000",
    ),
    (
        "id=k-5&type=16&answer=NACK%2F0x0000000b%2FInvalid+Destination+Address&to=380501234565" + _TAIL,
        Status.REJECTD, "0x0000000b",
    ),
    (
        "id=k-2&type=34&answer=" + _R.format(mid=1000000002, d="000", stat="EXPIRED", err="027")
        + "Your+code+is+4711&to=380501234562" + _TAIL + "1000000002",
        Status.EXPIRED, "027",
    ),
    (
        "id=k-3&type=2&answer=" + _R.format(mid=1000000003, d="000", stat="UNDELIV", err="001")
        + "Your+code+is+4711&to=380501234563" + _TAIL + "1000000003",
        Status.UNDELIV, "001",
    ),
    (
        "id=k-4&type=2&answer=" + _R.format(mid=1000000004, d="000", stat="REJECTD", err="011")
        + "Your+code+is+4711&to=380501234564" + _TAIL + "1000000004",
        Status.REJECTD, "011",
    ),
    (  # message_state 7 UNKNOWN: Kannel calls it a failure (type 2) and forgets the message
        "id=k-6&type=2&answer=" + _R.format(mid=1000000005, d="000", stat="UNKNOWN", err="000")
        + "Your+code+is+4711&to=380501234566" + _TAIL + "1000000005",
        Status.UNDELIV, "000",
    ),
    (
        "id=k-8&type=2&answer=" + _R.format(mid=1000000007, d="000", stat="DELETED", err="000")
        + "Your+code+is+4711&to=380501234568" + _TAIL + "1000000007",
        Status.DELETED, "000",
    ),
    (
        "id=k-7&type=4&answer=" + _R.format(mid=1000000006, d="000", stat="ENROUTE", err="000")
        + "Your+code+is+4711&to=380501234567" + _TAIL + "1000000006",
        Status.ACCEPTD, "000",
    ),
    (
        "id=k-9&type=4&answer=" + _R.format(mid=1000000008, d="000", stat="ACCEPTD", err="000")
        + "Your+code+is+4711&to=380501234569" + _TAIL + "1000000008",
        Status.ACCEPTD, "000",
    ),
    (  # the first part of a 3-part message: the receipt's text echoes the part's UDH, a NUL in it
        "id=k-11&type=1&answer=" + _R.format(mid=1000000010, d="001", stat="DELIVRD", err="000")
        + "%05%00%03%0A%03%01Long+message+x&to=380501234561" + _TAIL + "1000000010",
        Status.DELIVRD, "000",
    ),
    (
        "id=k-13&type=34&answer=" + _R.format(mid=1000000016, d="000", stat="EXPIRED", err="027")
        + "%05%00%03%0C%03%01Long+message+x&to=380501234562" + _TAIL + "1000000016",
        Status.EXPIRED, "027",
    ),
    (  # fakesmsc: the SMSC ack has no SMSC id ...
        "id=f-1&type=8&answer=ACK%2F&to=380501234560&from=Mobizon&ts=1795613092&smsc=fake&smsc_msgid=",
        Status.ACCEPTD, None,
    ),
    (  # ... and its success DLR no receipt text
        "id=f-1&type=1&answer=&to=380501234560&from=Mobizon&ts=1795613092&smsc=fake"
        "&smsc_msgid=c135843e-b292-466d-aa77-fbbbb3ad5949",
        Status.DELIVRD, None,
    ),
]  # fmt: skip


@pytest.mark.parametrize(("query", "status", "error"), RECORDED)
def test_requests_recorded_from_kannel(query: str, status: Status, error: str | None) -> None:
    """Every kind of request a real Kannel 1.4.5 sent maps as intended, %p being the handset number."""
    item = report(query.encode())
    assert (item.report.status, item.error) == (status, error)
    assert item.recipient is not None
    assert item.recipient.startswith("38050123456")
    assert item.event_time is not None


def test_binary_bytes_in_the_receipt_text_do_not_spoil_it() -> None:
    """The receipt's text: may hold UDH bytes (a NUL), raw UCS-2 or bytes that are not UTF-8: %A is read
    leniently, while the other parameters stay strict."""
    for text in ("%05%00%03%0A%03%01Long", "%04%1F%04%40%04%38", "%D0%FF%FE"):
        answer = "id%3A7+sub%3A001+dlvrd%3A001+submit+date%3A2601151140+done+date%3A2601151141+stat%3AEXPIRED"
        item = report(f"id=m9&type=2&answer={answer}+err%3A027+text%3A{text}".encode())
        assert (item.report.status, item.error) == (Status.EXPIRED, "027")
    with pytest.raises(RefusedPayload) as raised:
        parse_get(b"id=m9&type=1&to=%00380")
    assert "to" in raised.value.errors


# -- parser: invalid payloads ----------------------------------------------------------------------

INVALID = [
    (b"type=1&answer=ACK%2F", 11, "id"),
    (b"id=m1&answer=ACK%2F", 11, "type"),
    (b"id=m1&type=0", 1, "type"),
    (b"id=m1&type=64", 1, "type"),
    (b"id=m1&type=-1", 1, "type"),
    (b"id=m1&type=delivered", 1, "type"),
    (b"id=m1&type=1&ts=yesterday", 1, "ts"),
    (b"id[]=m1&type=1", 1, "id"),
]


@pytest.mark.parametrize(("query", "code", "field"), INVALID)
def test_invalid_parameters_name_the_field(query: bytes, code: int, field: str) -> None:
    """A missing id/type is code 11, a type that is no DLR bit set or a bad ts is code 1, naming it."""
    item = parse_get(query)
    assert isinstance(item, ItemError)
    assert item.code == code
    assert field in item.errors


def test_unexpanded_escape_cannot_be_read() -> None:
    """A dlr-url pasted where Kannel does not expand it (`type=%d`) is refused: `%d&` is no escape."""
    with pytest.raises(RefusedPayload) as raised:
        parse_get(b"id=m1&type=%d&answer=%A")
    assert "type" in raised.value.errors


# -- HTTP, end to end ------------------------------------------------------------------------------


def kannel_get(client: TestClient, query: bytes, **kw: object):  # type: ignore[no-untyped-def]
    # Exactly what smsbox sends: a GET, no body, its User-Agent.
    return client.get("/dlr/kannel?" + query.decode(), headers={"user-agent": "Kannel/1.4.5"}, **kw)


def message(client: TestClient, message_id: str) -> dict:  # type: ignore[type-arg]
    response = client.get(f"/messages/{message_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def history(client: TestClient, message_id: str) -> list[dict]:  # type: ignore[type-arg]
    return client.get(f"/messages/{message_id}/history").json()["data"]["items"]


def test_ack_then_delivered_over_http(client: TestClient) -> None:
    """A registered message: the SMSC ack (8) makes it ACCEPTD, the handset DLR (1) DELIVRD; both
    answers are the envelope with code 0 and HTTP 200 (what smsbox needs), both are in the history."""
    client.post("/messages", json={"id": "mz-1001", "to": "380501234567", "campaign": "otp"})
    ack = kannel_get(client, dlr_query("mz-1001", "8", "ACK/"))
    assert ack.status_code == 200
    assert ack.json() == {
        "code": 0,
        "data": {"id": "mz-1001", "status": "ACCEPTD", "applied": True, "reason": None},
        "message": "",
    }
    done = kannel_get(client, dlr_query("mz-1001", "1", receipt("DELIVRD")))
    assert done.json()["data"] == {"id": "mz-1001", "status": "DELIVRD", "applied": True, "reason": None}
    data = message(client, "mz-1001")
    assert (data["status"], data["final"], data["to"], data["campaign"]) == ("DELIVRD", True, "380501234567", "otp")
    events = history(client, "mz-1001")
    assert [(e["status"], e["raw_status"], e["source"], e["applied"]) for e in events] == [
        ("ACCEPTD", "8", "kannel", True),
        ("DELIVRD", "1/DELIVRD", "kannel", True),
    ]
    assert events[1]["event_time"].startswith("2026-01-15T11:42:28")


def test_final_report_before_its_smsc_ack(client: TestClient) -> None:
    """Kannel can call back the handset DLR before the SMSC ack: the late 8 is kept as after_final and
    the message stays DELIVRD."""
    assert kannel_get(client, dlr_query("mz-2", "1", receipt("DELIVRD"))).json()["data"]["status"] == "DELIVRD"
    late = kannel_get(client, dlr_query("mz-2", "8", "ACK/")).json()["data"]
    assert late == {"id": "mz-2", "status": "DELIVRD", "applied": False, "reason": "after_final"}
    assert message(client, "mz-2")["status"] == "DELIVRD"
    assert [(e["status"], e["reason"]) for e in history(client, "mz-2")] == [
        ("DELIVRD", None),
        ("ACCEPTD", "after_final"),
    ]


def test_expired_34_and_nack_over_http(client: TestClient) -> None:
    """Kannel 1.4.5's type 34 with stat:EXPIRED gives EXPIRED and the receipt's err; a type-16 NACK gives
    REJECTD with the SMPP command status as the error; the recipient comes from %p."""
    kannel_get(client, dlr_query("mz-3", "34", receipt("EXPIRED", "027")))
    expired = message(client, "mz-3")
    assert (expired["status"], expired["error"], expired["to"]) == ("EXPIRED", "027", "+380501234567")
    kannel_get(client, dlr_query("mz-4", "16", "NACK/0x0000000b/Invalid Destination Address"))
    rejected = message(client, "mz-4")
    assert (rejected["status"], rejected["error"]) == ("REJECTD", "0x0000000b")


def test_multipart_receipt_with_udh_bytes_over_http(client: TestClient) -> None:
    """The live mismatch, fixed: Kannel asks a receipt for the first part only, and its text echoes the UDH
    (`%05%00%03...`); the request is applied (it was refused for its NUL) and covers the whole message."""
    client.post("/messages", json={"id": "k-11", "to": "380501234561", "segments": 3})
    query = RECORDED[10][0]
    assert query.startswith("id=k-11&type=1&")
    response = kannel_get(client, query.encode())
    assert response.json()["data"] == {"id": "k-11", "status": "DELIVRD", "applied": True, "reason": None}
    assert [s["status"] for s in message(client, "k-11")["segments"]] == ["DELIVRD"] * 3


def test_invalid_dlr_is_refused_naming_the_field_and_quarantined(client: TestClient, db: str) -> None:
    """A callback without `type` is code 11 naming it, stores no message, and is kept in the quarantine
    with its query string for a replay."""
    query = b"id=mz-5&answer=ACK%2F&to=%2B380501234567"
    response = kannel_get(client, query)
    assert response.status_code == 400
    assert response.json()["code"] == 11
    assert response.json()["data"] == {"type": "required"}
    assert fetch(db, "SELECT count(*) AS n FROM messages")[0]["n"] == 0
    [kept] = client.get("/quarantine?dialect=kannel").json()["data"]["items"]
    assert (kept["dialect"], kept["method"], kept["query"]) == ("kannel", "GET", query.decode())
    assert kept["error"] == {"type": "required"}


def test_token_in_the_dlr_url(settings: Settings, db: str) -> None:
    """Kannel cannot sign: DLR_WEBHOOK_TOKEN_KANNEL goes into the dlr-url as `token=` and is ignored by the
    parser; without it or with a wrong one the answer is 401 code 8 and nothing is stored."""
    app = create_app(replace(settings, webhook_tokens={"kannel": Secret("k4nnel-t0ken")}))
    with TestClient(app) as client:
        for query in (dlr_query("mz-6", "1"), dlr_query("mz-6", "1", token="wrong")):
            refused = kannel_get(client, query)
            assert (refused.status_code, refused.json()["code"]) == (401, 8)
        assert fetch(db, "SELECT count(*) AS n FROM messages")[0]["n"] == 0
        accepted = kannel_get(client, dlr_query("mz-6", "1", token="k4nnel-t0ken"))
        assert accepted.json()["data"]["status"] == "DELIVRD"


SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks test vector's secret


def test_standard_webhooks_signature_when_a_kannel_secret_is_set(settings: Settings, db: str) -> None:
    """With DLR_WEBHOOK_SECRET_KANNEL (a proxy in front of Kannel signs), an unsigned or wrongly signed GET
    is 401 code 8 and stores nothing; a GET signed over its empty body is applied."""
    assert (
        standard_webhook_signature(
            whsec_key(SECRET), "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", b'{"test": 2432232314}'
        )
        == "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )
    app = create_app(replace(settings, webhook_secrets={"kannel": Secret(SECRET)}))
    with TestClient(app) as client:
        ts = str(int(datetime.now(UTC).timestamp()))
        good = standard_webhook_signature(whsec_key(SECRET), "evt-k1", ts, b"")
        wrong = {"webhook-id": "evt-k1", "webhook-timestamp": ts, "webhook-signature": "v1," + good[::-1]}
        for headers in ({}, wrong):
            refused = client.get("/dlr/kannel?" + dlr_query("mz-7", "1").decode(), headers=headers)
            assert (refused.status_code, refused.json()["code"]) == (401, 8)
        assert fetch(db, "SELECT count(*) AS n FROM messages")[0]["n"] == 0
        signed = {"webhook-id": "evt-k1", "webhook-timestamp": ts, "webhook-signature": f"v1,{good}"}
        accepted = client.get("/dlr/kannel?" + dlr_query("mz-7", "1").decode(), headers=signed)
        assert accepted.json()["data"]["status"] == "DELIVRD"
