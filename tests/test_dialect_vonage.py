"""`/dlr/vonage`: Vonage (Nexmo) SMS API delivery receipts as GET, form POST or JSON POST, and `sig`.

Payloads reconstructed from the reference §5.2: `msisdn`, `to`, `network-code`, `messageId`, `price`,
`status`, `scts`, `err-code`, `message-timestamp`, `api-key`, `client-ref`; `timestamp`, `nonce`, `sig`
when signing is on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.config import Secret, Settings
from service.dialects import DIALECTS
from service.dialects.types import ENVELOPE
from service.dialects.vonage import parse, signed_string, verify, verify_at
from service.payloads import FORM, JSON, RefusedPayload, RequestParts
from service.reports import IncomingReport
from service.statuses import Status
from tests.conftest import fetch

RECEIVED = datetime(2020, 1, 1, 14, 0, 5, tzinfo=UTC)
MESSAGE_ID = "0A0000001234567B"  # hex with a leading zero: kept as sent


def receipt(status: str = "delivered", message_id: str = MESSAGE_ID, **extra: str) -> dict[str, str]:
    """A receipt's parameters, as Vonage sends them."""
    return {
        "msisdn": "447700900000",
        "to": "AcmeInc",
        "network-code": "23410",
        "messageId": message_id,
        "price": "0.03330000",
        "status": status,
        "scts": "2001011400",
        "err-code": "0",
        "api-key": "abcd1234",
        "message-timestamp": "2020-01-01 14:00:03",
        **extra,
    }


def get_parts(params: dict[str, str]) -> RequestParts:
    return RequestParts("GET", None, urlencode(params).encode(), b"")


def parse_one(parts: RequestParts) -> IncomingReport:
    parsed = parse(parts, RECEIVED, 1000)
    assert parsed.batch is False
    (item,) = parsed.items
    assert isinstance(item, IncomingReport), item
    return item


# --- the parser --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vonage_status", "status"),
    [
        ("accepted", Status.ACCEPTD),
        ("buffered", Status.ACCEPTD),
        ("delivered", Status.DELIVRD),
        ("expired", Status.EXPIRED),
        ("failed", Status.UNDELIV),
        ("rejected", Status.REJECTD),
        ("unknown", None),
    ],
)
def test_every_vonage_status_maps_as_the_reference_table_says(vonage_status: str, status: Status | None) -> None:
    """Each Vonage status maps to its row of reference §7 (`unknown` to no status); all message-level."""
    report = parse_one(get_parts(receipt(vonage_status)))
    assert report.report.status is status
    assert report.report.segment is None
    assert report.raw_status == vonage_status
    assert report.source == "vonage"


@pytest.mark.parametrize(
    "parts",
    [
        get_parts(receipt()),
        RequestParts("POST", FORM, b"", urlencode(receipt()).encode()),
        RequestParts("POST", JSON, b"", json.dumps(receipt()).encode()),
    ],
    ids=["GET", "POST form", "POST JSON"],
)
def test_the_three_methods_give_the_same_report(parts: RequestParts) -> None:
    """GET query, form POST and JSON POST carry the same receipt: id with its leading zero, msisdn as the
    recipient, err-code as the error, scts (YYMMDDHHMM, no zone, taken as UTC) as the event time."""
    report = parse_one(parts)
    assert report.message_id == MESSAGE_ID
    assert report.report.status is Status.DELIVRD
    assert report.recipient == "447700900000"
    assert report.error == "0"
    assert report.event_time == datetime(2020, 1, 1, 14, 0, tzinfo=UTC)
    assert report.received_at == RECEIVED


def test_leading_zeros_of_the_message_id_are_never_stripped() -> None:
    """A messageId of hex digits with leading zeros is stored exactly as sent."""
    assert parse_one(get_parts(receipt(message_id="00000123ABCD4567"))).message_id == "00000123ABCD4567"


def test_failed_receipt_keeps_the_err_code() -> None:
    """`failed` with err-code 2 (absent subscriber, temporary) is UNDELIV with error "2"."""
    report = parse_one(get_parts(receipt("failed", **{"err-code": "2"})))
    assert (report.report.status, report.error) == (Status.UNDELIV, "2")


def test_without_scts_the_message_timestamp_is_the_event_time() -> None:
    """No scts: `message-timestamp` (YYYY-MM-DD HH:MM:SS, UTC) stands in; with neither there is none."""
    params = receipt()
    del params["scts"]
    assert parse_one(get_parts(params)).event_time == datetime(2020, 1, 1, 14, 0, 3, tzinfo=UTC)
    del params["message-timestamp"]
    assert parse_one(get_parts(params)).event_time is None


def test_minimal_receipt_and_odd_casing() -> None:
    """Only messageId and status are needed; `DELIVERED` reads as delivered and stays raw as sent."""
    report = parse_one(get_parts({"messageId": "0B00000127FDBC63", "status": "DELIVERED"}))
    assert (report.report.status, report.raw_status, report.recipient) == (Status.DELIVRD, "DELIVERED", None)


def test_client_ref_and_signing_fields_do_not_disturb_the_parse() -> None:
    """client-ref (with & and =), timestamp, nonce and sig are accepted and not taken for anything else."""
    params = receipt(**{"client-ref": "a&b=c", "timestamp": "1577887205", "nonce": "n1", "sig": "00"})
    report = parse_one(RequestParts("POST", FORM, b"", urlencode(params).encode()))
    assert (report.report.status, report.campaign) == (Status.DELIVRD, None)


def test_json_numbers_for_numeric_fields() -> None:
    """In a JSON receipt, numbers where strings are usual (err-code, scts) are read as their text."""
    body = json.dumps({"messageId": MESSAGE_ID, "status": "expired", "err-code": 1, "scts": 2001011400}).encode()
    report = parse_one(RequestParts("POST", JSON, b"", body))
    assert (report.report.status, report.error) == (Status.EXPIRED, "1")
    assert report.event_time == datetime(2020, 1, 1, 14, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"status": "delivered", "msisdn": "447700900000"}, 11, "messageId"),
        ({"messageId": MESSAGE_ID}, 11, "status"),
        ({"messageId": MESSAGE_ID, "status": "delivred"}, 1, "status"),
        ({"messageId": MESSAGE_ID, "status": "delivered", "scts": "2013011400"}, 1, "scts"),
        ({"messageId": MESSAGE_ID, "status": "delivered", "scts": "202001011400"}, 1, "scts"),
        ({"messageId": MESSAGE_ID, "status": "delivered", "message-timestamp": "yesterday"}, 1, "message-timestamp"),
    ],
)
def test_invalid_receipts_name_the_vonage_field(params: dict[str, str], code: int, field: str) -> None:
    """A missing messageId or status is code 11; a bad status or date code 1; each named by Vonage's field."""
    (item,) = parse(get_parts(params), RECEIVED, 1000).items
    assert not isinstance(item, IncomingReport)
    assert item.code == code
    assert field in item.errors


def test_a_json_array_is_not_a_receipt() -> None:
    """Vonage sends one receipt per request: a JSON array is refused as a whole."""
    with pytest.raises(RefusedPayload) as refused:
        parse(RequestParts("POST", JSON, b"", b"[{}]"), RECEIVED, 1000)
    assert "body" in refused.value.errors


def test_vonage_is_registered_with_the_envelope() -> None:
    """The registry finds the module; Vonage is answered with the envelope and has its own signature."""
    assert DIALECTS["vonage"].ack == ENVELOPE
    assert DIALECTS["vonage"].verify is verify


# --- end to end --------------------------------------------------------------------------------------


def test_get_receipts_over_http_answer_the_envelope_and_apply(client: TestClient) -> None:
    """accepted then delivered by GET: code 0 answers; the message reads DELIVRD with its id as sent,
    recipient and err-code; the history has both with the scts event time."""
    first = client.get("/dlr/vonage", params=receipt("accepted", scts="2001011359"))
    assert first.status_code == 200
    assert first.json() == {
        "code": 0,
        "data": {"id": MESSAGE_ID, "status": "ACCEPTD", "applied": True, "reason": None},
        "message": "",
    }
    assert client.get("/dlr/vonage", params=receipt()).json()["data"]["status"] == "DELIVRD"
    data = client.get(f"/messages/{MESSAGE_ID}").json()["data"]
    assert (data["id"], data["status"], data["to"], data["error"]) == (MESSAGE_ID, "DELIVRD", "447700900000", None)
    items = client.get(f"/messages/{MESSAGE_ID}/history").json()["data"]["items"]
    assert [(i["status"], i["raw_status"], i["source"]) for i in items] == [
        ("ACCEPTD", "accepted", "vonage"),
        ("DELIVRD", "delivered", "vonage"),
    ]
    assert items[0]["event_time"].startswith("2020-01-01T13:59:00")


def test_form_and_json_posts_over_http(client: TestClient) -> None:
    """A form POST and a JSON POST are applied like a GET."""
    form = urlencode(receipt("buffered", message_id="0C00000000000001")).encode()
    posted = client.post("/dlr/vonage", content=form, headers={"content-type": FORM})
    assert posted.json()["data"]["status"] == "ACCEPTD"
    as_json = client.post("/dlr/vonage", json=receipt("rejected", message_id="0C00000000000001", **{"err-code": "6"}))
    assert as_json.json()["data"] == {"id": "0C00000000000001", "status": "REJECTD", "applied": True, "reason": None}
    assert client.get("/messages/0C00000000000001").json()["data"]["error"] == "6"


def test_multipart_message_gets_one_receipt_per_part_each_its_own_message(client: TestClient) -> None:
    """A 2-part SMS: Vonage sends one receipt per part, each with the part's own messageId; each is tracked."""
    for part_id in ("0D00000000000001", "0D00000000000002"):
        assert client.get("/dlr/vonage", params=receipt(message_id=part_id)).json()["code"] == 0
    assert client.get("/messages/0D00000000000001").json()["data"]["status"] == "DELIVRD"
    assert client.get("/messages/0D00000000000002").json()["data"]["status"] == "DELIVRD"


def test_unknown_status_is_acknowledged_and_kept_without_a_transition(client: TestClient) -> None:
    """`unknown` is code 0, the status stays as it was, and one history row says `unmapped`."""
    client.get("/dlr/vonage", params=receipt("accepted", message_id="0E00000000000001"))
    answer = client.get("/dlr/vonage", params=receipt("unknown", message_id="0E00000000000001", **{"err-code": "1"}))
    assert (answer.status_code, answer.json()["code"]) == (200, 0)
    assert answer.json()["data"]["status"] == "ACCEPTD"
    assert client.get("/messages/0E00000000000001").json()["data"]["status"] == "ACCEPTD"
    last = client.get("/messages/0E00000000000001/history").json()["data"]["items"][-1]
    assert (last["status"], last["raw_status"], last["reason"]) == (None, "unknown", "unmapped")


def test_invalid_receipt_is_refused_naming_the_field_and_quarantined(client: TestClient) -> None:
    """A receipt without messageId is code 11 naming it; its query string is kept in the quarantine."""
    response = client.get("/dlr/vonage?msisdn=447700900000&status=delivered&scts=2001011400")
    assert (response.status_code, response.json()["code"]) == (400, 11)
    assert response.json()["data"] == {"messageId": "required"}
    (kept,) = client.get("/quarantine?dialect=vonage").json()["data"]["items"]
    assert kept["query"] == "msisdn=447700900000&status=delivered&scts=2001011400"
    assert kept["error"] == {"messageId": "required"}


# --- signatures --------------------------------------------------------------------------------------
# No published vector exists: the signed string below is written out by hand from the documented algorithm
# (every parameter but sig, sorted by name, `&k=v`, `&` and `=` in values replaced by `_`) and hashed here with
# hashlib/hmac, independently of the implementation.

SECRET = "vonage-signature-secret"
SIGNED_AT = 1577887205  # 2020-01-01 14:00:05 UTC
SIGNED_PARAMS = receipt(**{"client-ref": "batch=7&x", "timestamp": str(SIGNED_AT), "nonce": "6f1c-4a"})
BY_HAND = (
    "&api-key=abcd1234&client-ref=batch_7_x&err-code=0&message-timestamp=2020-01-01 14:00:03"
    "&messageId=0A0000001234567B&msisdn=447700900000&network-code=23410&nonce=6f1c-4a&price=0.03330000"
    "&scts=2001011400&status=delivered&timestamp=1577887205&to=AcmeInc"
)
HMAC_MD5 = hmac.new(SECRET.encode(), BY_HAND.encode(), hashlib.md5).hexdigest().upper()
LEGACY_MD5 = hashlib.md5((BY_HAND + SECRET).encode(), usedforsecurity=False).hexdigest()
HMAC_SHA1 = hmac.new(SECRET.encode(), BY_HAND.encode(), hashlib.sha1).hexdigest().upper()
HMAC_SHA256 = hmac.new(SECRET.encode(), BY_HAND.encode(), hashlib.sha256).hexdigest().upper()
HMAC_SHA512 = hmac.new(SECRET.encode(), BY_HAND.encode(), hashlib.sha512).hexdigest().upper()


def signed_get(sig: str, params: dict[str, str] = SIGNED_PARAMS) -> RequestParts:
    return get_parts({**params, "sig": sig})


def test_the_signed_string_is_the_documented_one() -> None:
    """Sorted by name, `&k=v`, `&` and `=` in values turned into `_`, `sig` left out."""
    assert signed_string({**SIGNED_PARAMS, "sig": "X"}) == BY_HAND


@pytest.mark.parametrize(
    "sig",
    [HMAC_MD5, HMAC_MD5.lower(), LEGACY_MD5, HMAC_SHA1, HMAC_SHA256, HMAC_SHA512],
    ids=["hmac-md5", "hmac-md5 lower-case", "legacy md5", "hmac-sha1", "hmac-sha256", "hmac-sha512"],
)
def test_hand_computed_signatures_verify(sig: str) -> None:
    """Each method Vonage offers verifies, told by the signature's length (32: HMAC-MD5 or the legacy MD5
    hash), upper- or lower-case, at the signed time and 5 minutes either side of it."""
    for now in (SIGNED_AT, SIGNED_AT + 300, SIGNED_AT - 300):
        assert verify_at(signed_get(sig), SECRET, now)


def test_a_json_post_verifies_over_its_fields() -> None:
    """A JSON receipt is signed over its fields like a query string."""
    body = json.dumps({**SIGNED_PARAMS, "sig": HMAC_SHA256}).encode()
    assert verify_at(RequestParts("POST", JSON, b"", body), SECRET, SIGNED_AT)


def test_a_pinned_method_refuses_the_others() -> None:
    """`sha256:<secret>` accepts HMAC-SHA256 only; `md5hash:<secret>` the legacy hash only."""
    assert verify_at(signed_get(HMAC_SHA256), f"sha256:{SECRET}", SIGNED_AT)
    assert not verify_at(signed_get(HMAC_MD5), f"sha256:{SECRET}", SIGNED_AT)
    assert verify_at(signed_get(LEGACY_MD5), f"md5hash:{SECRET}", SIGNED_AT)
    assert not verify_at(signed_get(HMAC_MD5), f"md5hash:{SECRET}", SIGNED_AT)


def test_empty_values_and_the_token_parameter_may_be_left_out_of_the_signed_string() -> None:
    """Vonage's own verifier skips empty values, and our `token` is a parameter of the configured URL, not of
    the receipt: signatures made without them verify."""
    with_extras = {**SIGNED_PARAMS, "client-ref": "batch=7&x", "network-code": "23410", "token": "t0k"}
    with_extras["price"] = ""
    without = "".join(f"&{k}={v}" for k, v in sorted(with_extras.items()) if k not in ("price", "token"))
    sig = hmac.new(SECRET.encode(), without.replace("batch=7&x", "batch_7_x").encode(), hashlib.md5).hexdigest()
    assert verify_at(signed_get(sig, with_extras), SECRET, SIGNED_AT)


@pytest.mark.parametrize(
    ("change", "now", "secret"),
    [
        ({}, SIGNED_AT + 301, SECRET),
        ({}, SIGNED_AT - 301, SECRET),
        ({}, SIGNED_AT, "another-secret"),
        ({"status": "failed"}, SIGNED_AT, SECRET),
        ({"messageId": "A0000001234567B"}, SIGNED_AT, SECRET),
        ({"timestamp": str(SIGNED_AT + 1)}, SIGNED_AT, SECRET),
        ({"sig": HMAC_MD5[:-1]}, SIGNED_AT, SECRET),
        ({"sig": ""}, SIGNED_AT, SECRET),
    ],
)
def test_signature_refusals(change: dict[str, str], now: int, secret: str) -> None:
    """Outside the 5-minute window, another secret, a changed value or timestamp, a cut or empty sig: refused."""
    assert not verify_at(get_parts({**SIGNED_PARAMS, "sig": HMAC_MD5, **change}), secret, now)


def test_without_timestamp_or_sig_nothing_verifies() -> None:
    """A receipt without its signed timestamp, or without sig, is refused when a secret is set."""
    params = {k: v for k, v in SIGNED_PARAMS.items() if k != "timestamp"}
    by_hand = BY_HAND.replace("&timestamp=1577887205", "")
    sig = hmac.new(SECRET.encode(), by_hand.encode(), hashlib.md5).hexdigest()
    assert not verify_at(signed_get(sig, params), SECRET, SIGNED_AT)
    assert not verify_at(get_parts(SIGNED_PARAMS), SECRET, SIGNED_AT)


def sign_now(params: dict[str, str], secret: str = SECRET) -> dict[str, str]:
    """Sign as Vonage does with HMAC-SHA256: `timestamp` now, then the hand-written algorithm."""
    stamped = {**params, "timestamp": str(int(time.time())), "nonce": "e2f7"}
    text = "".join(f"&{k}={v.replace('&', '_').replace('=', '_')}" for k, v in sorted(stamped.items()))
    return {**stamped, "sig": hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest().upper()}


def test_signed_receipts_over_http(settings: Settings, db: str) -> None:
    """With DLR_WEBHOOK_SECRET_VONAGE set: signed GET and JSON receipts are applied; a missing or wrong sig, or
    one made 10 minutes ago, is code 8 / 401 and nothing is stored."""
    app = create_app(replace(settings, webhook_secrets={"vonage": Secret(SECRET)}))
    with TestClient(app) as client:
        good = client.get("/dlr/vonage", params=sign_now(receipt(message_id="0F00000000000001")))
        assert good.json()["data"]["status"] == "DELIVRD"
        posted = client.post("/dlr/vonage", json=sign_now(receipt("expired", message_id="0F00000000000002")))
        assert posted.json()["data"]["status"] == "EXPIRED"

        other = receipt(message_id="0F00000000000003")
        stale = {**other, "timestamp": str(int(time.time()) - 600)}
        stale_text = "".join(f"&{k}={v}" for k, v in sorted(stale.items()))
        stale["sig"] = hmac.new(SECRET.encode(), stale_text.encode(), hashlib.sha256).hexdigest()
        for params in (other, sign_now(other, "wrong-secret"), {**sign_now(other), "status": "failed"}, stale):
            refused = client.get("/dlr/vonage", params=params)
            assert (refused.status_code, refused.json()["code"]) == (401, 8)
    assert sorted(r["id"] for r in fetch(db, "SELECT id FROM messages")) == ["0F00000000000001", "0F00000000000002"]
    assert fetch(db, "SELECT count(*) AS n FROM quarantine")[0]["n"] == 0
