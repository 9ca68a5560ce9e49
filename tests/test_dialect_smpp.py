"""`/dlr/smpp`: a raw SMPP delivery receipt (`id:... stat:... err:...`), every deviation from the wild.

The receipt comes as a `text/plain` body, a GET `answer=` parameter or a form `text=` field. The
payloads are reconstructed from the reference (§4) and the public issues it cites: SMPP 3.4 Appendix B,
Nexmo's zero-padded ids, clickatell's 12-digit dates (jasmin#70), YYYYMMDDhhmm dates and missing
sub/dlvrd (jasmin#753), a receipt without the `stat:` label (ksmppd), `err:0000` and trailing binary
garbage (php-smpp#70), err on DELIVRD (jasmin#760).
Sample payloads tested: 61 (17 state rows, 15 deviation receipts, 7 transports, 9 invalid, 13 over HTTP).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import quote, quote_plus

import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.auth import standard_webhook_signature, whsec_key
from service.config import Secret, Settings
from service.dialects import DIALECTS, ItemError
from service.dialects.receipt import parse_receipt, receipt_time
from service.dialects.smpp import parse
from service.dialects.types import ENVELOPE
from service.payloads import RefusedPayload, RequestParts
from service.reports import IncomingReport
from service.statuses import Status
from tests.conftest import fetch

NOW = datetime(2026, 1, 15, 11, 42, 30, tzinfo=UTC)
TEXT = "text/plain"
FORM = "application/x-www-form-urlencoded"


def receipt(stat: str = "DELIVRD", err: str = "000", smsc_id: str = "1234567890") -> str:
    """SMPP 3.4 Appendix B, 10-digit dates."""
    return (
        f"id:{smsc_id} sub:001 dlvrd:{'001' if stat == 'DELIVRD' else '000'} submit date:2601151140 "
        f"done date:2601151141 stat:{stat} err:{err} text:Your code is 4711"
    )


def parse_one(body: bytes | str, content_type: str | None = TEXT) -> IncomingReport | ItemError:
    raw = body.encode() if isinstance(body, str) else body
    parsed = parse(RequestParts("POST", content_type, b"", raw), NOW, 1000)
    assert parsed.batch is False
    assert len(parsed.items) == 1
    return parsed.items[0]


def report(body: bytes | str, content_type: str | None = TEXT) -> IncomingReport:
    item = parse_one(body, content_type)
    assert isinstance(item, IncomingReport), item
    return item


# -- every stat: value ------------------------------------------------------------------------------

STATES = [
    ("DELIVRD", Status.DELIVRD),
    ("EXPIRED", Status.EXPIRED),
    ("DELETED", Status.DELETED),
    ("UNDELIV", Status.UNDELIV),
    ("REJECTD", Status.REJECTD),
    ("ACCEPTD", Status.ACCEPTD),
    ("ENROUTE", Status.ACCEPTD),
    ("ACKED", Status.ACCEPTD),
    ("BUFFRED", Status.ACCEPTD),
    ("BUFFERD", Status.ACCEPTD),
    ("UNKNOWN", None),
    ("DELIVERED", Status.DELIVRD),  # message_state names written out
    ("UNDELIVERABLE", Status.UNDELIV),
    ("REJECTED", Status.REJECTD),
    ("SKIPPED", None),
    ("delivrd", Status.DELIVRD),  # odd casing
    ("FAILED", None),  # a word no table knows: kept raw, no transition
]


@pytest.mark.parametrize(("stat", "status"), STATES)
def test_every_stat_maps_onto_a_status_or_none(stat: str, status: Status | None) -> None:
    """The seven SMPP states, the non-standard ACKED/BUFFRED/BUFFERD/ENROUTE (ACCEPTD), UNKNOWN and unknown
    words (no status, raw kept) each map as the reference's table says."""
    item = report(receipt(stat))
    assert item.report.status is status
    assert item.raw_status == stat
    assert item.report.segment is None


# -- deviations seen in the wild ---------------------------------------------------------------------


def test_appendix_b_receipt_fields() -> None:
    """The spec receipt: id as sent, done date as event time (UTC), err as the operator error."""
    item = report(receipt("UNDELIV", "001"))
    assert (item.message_id, item.source, item.error) == ("1234567890", "smpp", "001")
    assert item.event_time == datetime(2026, 1, 15, 11, 41, tzinfo=UTC)
    assert item.received_at == NOW


DEVIATIONS = [
    # (receipt, id, status, error, event time)
    (  # Nexmo: zero-padded decimal id, kept as sent
        "id:0000000012345678 sub:001 dlvrd:001 submit date:1601010100 done date:1601010101 stat:DELIVRD err:000 "
        "text:none",
        "0000000012345678", Status.DELIVRD, "000", datetime(2016, 1, 1, 1, 1, tzinfo=UTC),
    ),
    (  # hex id (SMPP 3.3 style), kept as sent
        "id:5E8A1B2C sub:001 dlvrd:000 submit date:2601151140 done date:2601151141 stat:EXPIRED err:027 text:",
        "5E8A1B2C", Status.EXPIRED, "027", datetime(2026, 1, 15, 11, 41, tzinfo=UTC),
    ),
    (  # clickatell (jasmin#70): uuid-ish id, 12-digit YYMMDDhhmmss
        "id:a29f6845555647139e5c8f3b817f2c9a sub:001 dlvrd:001 submit date:141023215253 "
        "done date:141023215259 stat:DELIVRD err:000 text:",
        "a29f6845555647139e5c8f3b817f2c9a", Status.DELIVRD, "000", datetime(2014, 10, 23, 21, 52, 59, tzinfo=UTC),
    ),
    (  # jasmin#753: no sub:/dlvrd:, 12-digit YYYYMMDDhhmm
        "id:7220e8e7-4c4a-4d5a-9b77-5d2b8f1e6a01 submit date:201906190720 done date:201906190721 stat:UNDELIV err:001 "
        "text:Test",
        "7220e8e7-4c4a-4d5a-9b77-5d2b8f1e6a01", Status.UNDELIV, "001", datetime(2019, 6, 19, 7, 21, tzinfo=UTC),
    ),
    (  # ksmppd: the state without its `stat:` label
        "id:171026125222636445993424531920 sub:001 dlvrd:001 submit date:171026130350 done date:171026130355 "
        "DELIVRD err:000 text:",
        "171026125222636445993424531920", Status.DELIVRD, "000", datetime(2017, 10, 26, 13, 3, 55, tzinfo=UTC),
    ),
    (  # `Text:` capitalised, and the text itself saying "stat:" -- the header decides
        "id:42 sub:001 dlvrd:000 submit date:2601151140 done date:2601151141 stat:REJECTD err:011 Text:stat:DELIVRD",
        "42", Status.REJECTD, "011", datetime(2026, 1, 15, 11, 41, tzinfo=UTC),
    ),
    (  # php-smpp#70: 4-digit err
        "id:3012345678 sub:001 dlvrd:001 submit date:2601151140 done date:2601151141 stat:DELIVRD err:0000 text:",
        "3012345678", Status.DELIVRD, "0000", datetime(2026, 1, 15, 11, 41, tzinfo=UTC),
    ),
    (  # jasmin#760: a non-zero err on DELIVRD, kept as sent
        "id:99 sub:001 dlvrd:001 submit date:2601151140 done date:2601151141 stat:DELIVRD err:002 text:hi",
        "99", Status.DELIVRD, "002", datetime(2026, 1, 15, 11, 41, tzinfo=UTC),
    ),
    (  # 14-digit YYYYMMDDhhmmss dates
        "id:77 sub:001 dlvrd:001 submit date:20260115114000 done date:20260115114107 stat:DELIVRD err:000",
        "77", Status.DELIVRD, "000", datetime(2026, 1, 15, 11, 41, 7, tzinfo=UTC),
    ),
    (  # placeholder dates from a simulator: no date, the status still counts
        "id:78 sub:001 dlvrd:000 submit date:0000000000 done date:0000000000 stat:ENROUTE err:000 text:",
        "78", Status.ACCEPTD, "000", None,
    ),
    (  # dates split by a space (yyyyMMdd HHmmss): unreadable, ignored
        "id:79 sub:001 dlvrd:001 submit date:20260115 114000 done date:20260115 114107 stat:DELIVRD err:000",
        "79", Status.DELIVRD, "000", None,
    ),
    (  # no err:, no text:
        "id:80 sub:001 dlvrd:000 submit date:2601151140 done date:2601151141 stat:ACKED",
        "80", Status.ACCEPTD, None, datetime(2026, 1, 15, 11, 41, tzinfo=UTC),
    ),
    (  # a trailing newline and CRs from a line-oriented bridge
        "id:81 sub:001 dlvrd:001 submit date:2601151140 done date:2601151141 stat:DELIVRD err:000 text:ok\r\n",
        "81", Status.DELIVRD, "000", datetime(2026, 1, 15, 11, 41, tzinfo=UTC),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message_id", "status", "error", "event_time"), DEVIATIONS)
def test_receipts_from_the_wild(
    text: str, message_id: str, status: Status, error: str | None, event_time: datetime | None
) -> None:
    """Hex or decimal ids with leading zeros (kept as sent), 10/12/14-digit dates, missing labels,
    `Text:`/`text:`, 4-digit err and placeholder dates are all read."""
    item = report(text)
    assert (item.message_id, item.report.status, item.error, item.event_time) == (
        message_id,
        status,
        error,
        event_time,
    )


def test_trailing_binary_garbage_is_ignored() -> None:
    """php-smpp#70: TLV bytes, NULs and bytes that are not UTF-8 after the text do not spoil the receipt."""
    body = receipt("EXPIRED", "027").encode() + b"\x00\x04\x27\x00\x01\x03\x00\x1e\x00\x0b1234567890\x00\xff\xfe"
    item = report(body)
    assert (item.message_id, item.report.status, item.error) == ("1234567890", Status.EXPIRED, "027")


def test_twelve_digit_dates_take_the_reading_nearer_arrival() -> None:
    """12 digits are YYMMDDhhmmss or YYYYMMDDhhmm; when both are dates, the one nearer arrival wins."""
    assert receipt_time("201001120000", datetime(2020, 10, 1, 12, 5, tzinfo=UTC)) == datetime(
        2020, 10, 1, 12, 0, tzinfo=UTC
    )
    assert receipt_time("201001120000", datetime(2010, 1, 12, 0, 5, tzinfo=UTC)) == datetime(
        2010, 1, 12, 0, 0, tzinfo=UTC
    )
    assert receipt_time("ND", NOW) is None
    assert receipt_time("26011511", NOW) is None


def test_receipt_fields_are_all_read() -> None:
    """parse_receipt keeps every field as written, the text after `text:` included."""
    parsed = parse_receipt(receipt("DELIVRD"))
    assert (parsed.id, parsed.sub, parsed.dlvrd, parsed.submit_date, parsed.done_date) == (
        "1234567890",
        "001",
        "001",
        "2601151140",
        "2601151141",
    )
    assert (parsed.stat, parsed.err, parsed.text) == ("DELIVRD", "000", "Your code is 4711")


# -- transports ---------------------------------------------------------------------------------------

ENCODED = quote_plus(receipt("EXPIRED", "027")).encode()


@pytest.mark.parametrize(
    ("method", "content_type", "query", "body"),
    [
        ("POST", TEXT, b"", receipt("EXPIRED", "027").encode()),
        ("POST", None, b"", receipt("EXPIRED", "027").encode()),  # no Content-Type: a receipt starts `id:`
        ("GET", None, b"answer=" + ENCODED, b""),
        ("POST", FORM, b"", b"text=" + ENCODED),
        ("POST", None, b"", b"text=" + ENCODED),  # no Content-Type: `text=` is a form
    ],
)
def test_the_receipt_comes_as_body_answer_or_text(
    method: str, content_type: str | None, query: bytes, body: bytes
) -> None:
    """A text/plain body, a GET `answer=` and a form `text=` carry the same receipt."""
    parsed = parse(RequestParts(method, content_type, query, body), NOW, 1000)
    [item] = parsed.items
    assert isinstance(item, IncomingReport)
    assert (item.message_id, item.report.status, item.error) == ("1234567890", Status.EXPIRED, "027")


@pytest.mark.parametrize("field", ["answer", "text"])
def test_binary_text_in_a_parameter_is_read_leniently(field: str) -> None:
    """A receipt whose text: echoes a UDH (a NUL) or bytes that are not UTF-8, percent-encoded in `answer=`
    or `text=`, is read: only the receipt's fields matter (seen from a real Kannel: %A of a multipart)."""
    encoded = ENCODED.replace(b"Your+code", b"%05%00%03%0A%03%01%D0%FFYour+code")
    payload = field.encode() + b"=" + encoded
    parts = RequestParts("GET", None, payload, b"") if field == "answer" else RequestParts("POST", FORM, b"", payload)
    [item] = parse(parts, NOW, 1000).items
    assert isinstance(item, IncomingReport)
    assert (item.report.status, item.error) == (Status.EXPIRED, "027")


def test_smpp_uses_the_envelope_and_no_own_signature() -> None:
    """SMPP bridges get the envelope; no scheme of their own, so Standard Webhooks/tokens apply."""
    assert (DIALECTS["smpp"].ack, DIALECTS["smpp"].verify) == (ENVELOPE, None)


# -- invalid ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "content_type", "query", "body", "code", "field"),
    [
        ("POST", TEXT, b"", b"", 11, "body"),
        ("POST", TEXT, b"", b"  \r\n", 11, "body"),
        ("GET", None, b"to=380501234567", b"", 11, "answer"),
        ("POST", FORM, b"", b"foo=bar", 11, "text"),
        ("POST", TEXT, b"", b"hello world", 1, "body"),
        ("POST", TEXT, b"", b"id:123 sub:001 dlvrd:001 submit date:2601151140 done date:2601151141 err:0", 11, "stat"),
        ("POST", TEXT, b"", b"sub:001 dlvrd:001 stat:DELIVRD err:000 text:", 11, "id"),
        ("POST", TEXT, b"", b"id:" + b"7" * 300 + b" stat:DELIVRD", 1, "id"),
    ],
)  # fmt: skip
def test_invalid_receipts_name_the_field(
    method: str, content_type: str | None, query: bytes, body: bytes, code: int, field: str
) -> None:
    """No receipt, a receipt without a state or an id, or an id past 255 characters is refused naming
    the field (the receipt's own label, or where the receipt was expected)."""
    refused_code, errors = refusal(RequestParts(method, content_type, query, body))
    assert refused_code == code, errors
    assert field in errors


def refusal(parts: RequestParts) -> tuple[int, dict[str, str]]:
    """The code and field errors a payload is refused with, whether the whole request or its item fails."""
    try:
        parsed = parse(parts, NOW, 1000)
    except RefusedPayload as exc:
        return exc.code, exc.errors
    [item] = parsed.items
    assert isinstance(item, ItemError), item
    return item.code, item.errors


def test_json_is_not_a_receipt_format() -> None:
    """A JSON body is code 6 (unsupported format)."""
    with pytest.raises(RefusedPayload) as raised:
        parse(RequestParts("POST", "application/json", b"", b'{"id": "1"}'), NOW, 1000)
    assert raised.value.code == 6


# -- HTTP, end to end ---------------------------------------------------------------------------------


def post_receipt(client: TestClient, text: str | bytes, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    body = text.encode() if isinstance(text, str) else text
    return client.post("/dlr/smpp", content=body, headers={"content-type": "text/plain", **(headers or {})})


def message(client: TestClient, message_id: str) -> dict:  # type: ignore[type-arg]
    response = client.get(f"/messages/{message_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def history(client: TestClient, message_id: str) -> list[dict]:  # type: ignore[type-arg]
    return client.get(f"/messages/{message_id}/history").json()["data"]["items"]


def test_receipts_over_http(client: TestClient) -> None:
    """A registered message: ENROUTE (text/plain) makes it ACCEPTD, DELIVRD (GET answer=) final; the
    answers are the envelope; history keeps the raw states and the done dates."""
    client.post("/messages", json={"id": "1234567890", "to": "380501234567"})
    first = post_receipt(client, receipt("ENROUTE"))
    assert first.status_code == 200
    assert first.json() == {
        "code": 0,
        "data": {"id": "1234567890", "status": "ACCEPTD", "applied": True, "reason": None},
        "message": "",
    }
    done = client.get("/dlr/smpp?answer=" + quote_plus(receipt("DELIVRD", "002")))
    assert done.json()["data"] == {"id": "1234567890", "status": "DELIVRD", "applied": True, "reason": None}
    data = message(client, "1234567890")
    assert (data["status"], data["final"], data["to"], data["error"]) == ("DELIVRD", True, "380501234567", "002")
    events = history(client, "1234567890")
    assert [(e["status"], e["raw_status"], e["source"], e["applied"]) for e in events] == [
        ("ACCEPTD", "ENROUTE", "smpp", True),
        ("DELIVRD", "DELIVRD", "smpp", True),
    ]
    assert events[1]["event_time"].startswith("2026-01-15T11:41:00")


def test_unknown_state_is_acknowledged_and_kept_without_a_transition(client: TestClient) -> None:
    """stat:UNKNOWN is answered with success, leaves the status as it was and adds one history row."""
    post_receipt(client, receipt("ACCEPTD", smsc_id="555"))
    answer = post_receipt(client, receipt("UNKNOWN", smsc_id="555"))
    assert answer.status_code == 200
    assert answer.json()["data"] == {"id": "555", "status": "ACCEPTD", "applied": False, "reason": "unmapped"}
    assert message(client, "555")["status"] == "ACCEPTD"
    assert [(e["status"], e["raw_status"], e["reason"]) for e in history(client, "555")] == [
        ("ACCEPTD", "ACCEPTD", None),
        (None, "UNKNOWN", "unmapped"),
    ]


def test_invalid_receipt_over_http_is_quarantined(client: TestClient, db: str) -> None:
    """A receipt without a state is 400 code 11 naming `stat`, stores nothing, and its body is kept."""
    body = "id:123 sub:001 dlvrd:001 submit date:2601151140 done date:2601151141 err:000 text:"
    response = post_receipt(client, body)
    assert (response.status_code, response.json()["code"]) == (400, 11)
    assert response.json()["data"] == {"stat": "required"}
    assert fetch(db, "SELECT count(*) AS n FROM messages")[0]["n"] == 0
    [kept] = client.get("/quarantine?dialect=smpp").json()["data"]["items"]
    assert (kept["body"], kept["content_type"], kept["error"]) == (body, "text/plain", {"stat": "required"})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("id:abc\u00e9 stat:DELIVRD", "id"),  # a non-ASCII id: once read as `abc`, another message
        ("id:abc stat:DELIVRD\u00e9", "stat"),  # once read as DELIVRD
        ("id:abc stat:DELIVRD-X", "stat"),
        ("id:abc stat:DELIVRD err:000\u00e9", "err"),  # once read as 000
        (b"id:abc\xff stat:DELIVRD", "id"),  # a byte that is not UTF-8 inside the id
    ],
)
def test_receipt_values_are_read_whole_or_refused(client: TestClient, db: str, body: str | bytes, field: str) -> None:
    """A receipt's id, stat or err is read up to the next space or control character and taken whole:
    one holding a character it may not (a non-ASCII id, a state word running on) is refused with code 1
    naming the field and quarantined, never cut short onto another message or another status."""
    for message_id in ("abc", "abc\u00e9"):
        assert client.post("/messages", json={"id": message_id}).status_code == 200
    response = post_receipt(client, body)
    assert (response.status_code, response.json()["code"]) == (400, 1), response.text
    assert list(response.json()["data"]) == [field]
    for message_id in ("abc", "abc\u00e9"):
        assert message(client, quote(message_id, safe=""))["status"] == "NEW"
    [kept] = client.get("/quarantine?dialect=smpp").json()["data"]["items"]
    assert field in kept["error"]
    assert fetch(db, "SELECT count(*) AS n FROM history")[0]["n"] == 0


@pytest.mark.parametrize(("registered", "receipted"), [("12345678", "0000000012345678"), ("0012345678", "12345678")])
def test_registered_id_matches_with_or_without_leading_zeros(
    client: TestClient, registered: str, receipted: str
) -> None:
    """A receipt for `0000000012345678` updates the message registered as `12345678`, and the other way
    round, without creating a second message."""
    client.post("/messages", json={"id": registered})
    post_receipt(client, receipt("DELIVRD", smsc_id=receipted))
    assert message(client, registered)["status"] == "DELIVRD"
    assert client.get(f"/messages/{receipted}").status_code == 404


SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks test vector's secret


def test_signed_receipts_when_a_secret_is_set(settings: Settings, db: str) -> None:
    """With DLR_WEBHOOK_SECRET_SMPP: the published vector still holds; an unsigned or wrongly signed
    receipt is 401 code 8 and stores nothing; a receipt signed over its body is applied."""
    assert (
        standard_webhook_signature(
            whsec_key(SECRET), "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", b'{"test": 2432232314}'
        )
        == "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )
    body = receipt("DELIVRD", smsc_id="777").encode()
    ts = str(int(datetime.now(UTC).timestamp()))
    good = standard_webhook_signature(whsec_key(SECRET), "evt-s1", ts, body)
    other = standard_webhook_signature(whsec_key(SECRET), "evt-s1", ts, body + b" ")
    with TestClient(create_app(replace(settings, webhook_secrets={"smpp": Secret(SECRET)}))) as client:
        for headers in ({}, {"webhook-id": "evt-s1", "webhook-timestamp": ts, "webhook-signature": f"v1,{other}"}):
            refused = post_receipt(client, body, headers=headers)
            assert (refused.status_code, refused.json()["code"]) == (401, 8)
        assert fetch(db, "SELECT count(*) AS n FROM messages")[0]["n"] == 0
        signed = {"webhook-id": "evt-s1", "webhook-timestamp": ts, "webhook-signature": f"v1,{good}"}
        assert post_receipt(client, body, headers=signed).json()["data"]["status"] == "DELIVRD"
