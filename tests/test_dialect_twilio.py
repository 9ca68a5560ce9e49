"""`/dlr/twilio`: Twilio status callbacks (form POST, empty 200) and `X-Twilio-Signature`.

Payloads reconstructed from the reference §5.1: the standard request parameters, `MessageStatus` and
`ErrorCode`, `RawDlrDoneDate` on delivered/undelivered, the older `SmsSid`/`SmsStatus` names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.config import Secret, Settings
from service.dialects import DIALECTS
from service.dialects.twilio import parse, signature, verify
from service.dialects.types import EMPTY
from service.payloads import FORM, RefusedPayload, RequestParts
from service.reports import IncomingReport
from service.statuses import Status
from tests.conftest import fetch

RECEIVED = datetime(2023, 2, 10, 15, 31, tzinfo=UTC)
SID = "SM1342fe1b2c904d1ab04f0fc7a58abca9"
ACCOUNT = "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
FORM_HEADERS = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}


def callback(status: str, sid: str = SID, **extra: str) -> dict[str, str]:
    """The parameters of a status callback, in the order Twilio sends them."""
    return {
        "SmsSid": sid,
        "SmsStatus": status,
        "MessageStatus": status,
        "To": "+15558675310",
        "MessagingServiceSid": "MGXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        "MessageSid": sid,
        "AccountSid": ACCOUNT,
        "From": "+15017122661",
        "ApiVersion": "2010-04-01",
        **extra,
    }


def form(params: dict[str, str]) -> bytes:
    return urlencode(params).encode()


def parse_form(body: bytes) -> IncomingReport:
    parsed = parse(RequestParts("POST", FORM, b"", body), RECEIVED, 1000)
    assert parsed.batch is False
    (item,) = parsed.items
    assert isinstance(item, IncomingReport), item
    return item


# --- the parser --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("twilio_status", "status"),
    [
        ("accepted", Status.NEW),
        ("scheduled", Status.NEW),
        ("queued", Status.ENQUEUD),
        ("sending", Status.ENQUEUD),
        ("sent", Status.ACCEPTD),
        ("partially_delivered", Status.PDLIVRD),
        ("delivered", Status.DELIVRD),
        ("read", Status.DELIVRD),
        ("undelivered", Status.UNDELIV),
        ("failed", Status.REJECTD),
        ("canceled", Status.DELETED),
        ("receiving", None),
        ("received", None),
    ],
)
def test_every_twilio_status_maps_as_the_reference_table_says(twilio_status: str, status: Status | None) -> None:
    """Each Twilio status maps to its row of reference §7; inbound ones map to no status; all message-level."""
    report = parse_form(form(callback(twilio_status)))
    assert report.report.status is status
    assert report.report.segment is None
    assert report.raw_status == twilio_status
    assert report.message_id == SID
    assert report.source == "twilio"


def test_delivered_callback_carries_recipient_and_done_date_as_utc() -> None:
    """`To` is the recipient; `RawDlrDoneDate` (YYMMDDhhmm, no zone) is the event time, taken as UTC."""
    report = parse_form(form(callback("delivered", RawDlrDoneDate="2302101530")))
    assert report.recipient == "+15558675310"
    assert report.event_time == datetime(2023, 2, 10, 15, 30, tzinfo=UTC)
    assert report.error is None
    assert report.received_at == RECEIVED


def test_undelivered_callback_keeps_the_error_code() -> None:
    """`ErrorCode` is the operator error, kept as sent."""
    report = parse_form(form(callback("undelivered", ErrorCode="30003", RawDlrDoneDate="2302101530")))
    assert (report.report.status, report.error) == (Status.UNDELIV, "30003")


def test_sent_callback_without_done_date_or_error_code() -> None:
    """A `sent` callback has no RawDlrDoneDate and an empty ErrorCode: neither is an error."""
    report = parse_form(form(callback("sent", ErrorCode="")))
    assert (report.event_time, report.error) == (None, None)


def test_older_callbacks_with_only_sms_sid_and_sms_status() -> None:
    """Older callbacks name the message `SmsSid` and its status `SmsStatus` only; they are read instead."""
    report = parse_form(b"SmsSid=SMold0001&SmsStatus=delivered&To=%2B15558675310&AccountSid=" + ACCOUNT.encode())
    assert (report.message_id, report.report.status, report.raw_status) == ("SMold0001", Status.DELIVRD, "delivered")


def test_odd_casing_of_the_status_is_accepted_and_kept_raw() -> None:
    """`Delivered` is read as `delivered`; the raw status keeps what was sent."""
    report = parse_form(form(callback("Delivered")))
    assert (report.report.status, report.raw_status) == (Status.DELIVRD, "Delivered")


def test_unknown_extra_parameters_are_ignored() -> None:
    """Twilio adds parameters without notice: unknown ones change nothing."""
    report = parse_form(form(callback("sent", ChannelPrefix="sms", NewField="x", NumMedia="0")))
    assert report.report.status is Status.ACCEPTD


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        (b"MessageStatus=delivered&To=%2B15558675310", 11, "MessageSid"),
        (b"MessageSid=SM1&To=%2B15558675310", 11, "MessageStatus"),
        (b"MessageSid=SM1&MessageStatus=deliverd", 1, "MessageStatus"),
        (b"MessageSid=SM1&MessageStatus=delivered&RawDlrDoneDate=2313401530", 1, "RawDlrDoneDate"),
        (b"MessageSid=SM1&MessageStatus=delivered&RawDlrDoneDate=23-02-10", 1, "RawDlrDoneDate"),
        (b"MessageSid=SM1&MessageStatus=delivered&RawDlrDoneDate=230210153000", 1, "RawDlrDoneDate"),
    ],
)
def test_invalid_callbacks_name_the_twilio_field(body: bytes, code: int, field: str) -> None:
    """A missing id or status is code 11, a bad status or done date code 1, each named by Twilio's field."""
    (item,) = parse(RequestParts("POST", FORM, b"", body), RECEIVED, 1000).items
    assert not isinstance(item, IncomingReport)
    assert item.code == code
    assert field in item.errors


def test_a_json_array_is_not_a_callback() -> None:
    """Twilio sends one form per callback: a JSON array is refused as a whole."""
    with pytest.raises(RefusedPayload) as refused:
        parse(RequestParts("POST", "application/json", b"", b"[]"), RECEIVED, 1000)
    assert "body" in refused.value.errors


def test_twilio_is_registered_with_an_empty_acknowledgement() -> None:
    """The registry finds the module; Twilio is answered with an empty 200 and has its own signature."""
    assert DIALECTS["twilio"].ack == EMPTY
    assert DIALECTS["twilio"].verify is verify


# --- end to end --------------------------------------------------------------------------------------


def post(client: TestClient, params: dict[str, str], **headers: str):  # type: ignore[no-untyped-def]
    return client.post("/dlr/twilio", content=form(params), headers={**FORM_HEADERS, **headers})


def test_callbacks_over_http_answer_empty_200_and_apply(client: TestClient) -> None:
    """sent then delivered: each answered with an empty 200; the message reads DELIVRD with its recipient,
    error and the done date in its history."""
    first = post(client, callback("sent"))
    assert (first.status_code, first.content) == (200, b"")
    second = post(client, callback("delivered", ErrorCode="0", RawDlrDoneDate="2302101530"))
    assert (second.status_code, second.content) == (200, b"")
    data = client.get(f"/messages/{SID}").json()["data"]
    assert (data["status"], data["final"], data["to"]) == ("DELIVRD", True, "+15558675310")
    items = client.get(f"/messages/{SID}/history").json()["data"]["items"]
    assert [(i["status"], i["raw_status"], i["applied"], i["source"]) for i in items] == [
        ("ACCEPTD", "sent", True, "twilio"),
        ("DELIVRD", "delivered", True, "twilio"),
    ]
    assert items[1]["event_time"].startswith("2023-02-10T15:30:00")


def test_out_of_order_sent_after_delivered_is_acknowledged_and_not_applied(client: TestClient) -> None:
    """Twilio does not order its callbacks: `sent` after `delivered` is after_final, still an empty 200."""
    post(client, callback("delivered", sid="SMorder1"))
    late = post(client, callback("sent", sid="SMorder1"))
    assert (late.status_code, late.content) == (200, b"")
    assert client.get("/messages/SMorder1").json()["data"]["status"] == "DELIVRD"
    reasons = [i["reason"] for i in client.get("/messages/SMorder1/history").json()["data"]["items"]]
    assert reasons == [None, "after_final"]


def test_partially_delivered_is_a_message_level_pdlivrd(client: TestClient) -> None:
    """`partially_delivered` makes the message PDLIVRD; a later `delivered` resolves it."""
    post(client, callback("sent", sid="SMpart1"))
    post(client, callback("partially_delivered", sid="SMpart1"))
    assert client.get("/messages/SMpart1").json()["data"]["status"] == "PDLIVRD"
    post(client, callback("delivered", sid="SMpart1"))
    assert client.get("/messages/SMpart1").json()["data"]["status"] == "DELIVRD"


def test_inbound_status_is_kept_in_history_without_a_transition(client: TestClient) -> None:
    """`received` maps to no status: acknowledged, the status unchanged, one history row `unmapped`."""
    post(client, callback("queued", sid="SMin1"))
    answer = post(client, callback("received", sid="SMin1"))
    assert (answer.status_code, answer.content) == (200, b"")
    assert client.get("/messages/SMin1").json()["data"]["status"] == "ENQUEUD"
    last = client.get("/messages/SMin1/history").json()["data"]["items"][-1]
    assert (last["status"], last["raw_status"], last["applied"], last["reason"]) == (
        None,
        "received",
        False,
        "unmapped",
    )


def test_invalid_callback_is_an_envelope_error_and_quarantined(client: TestClient) -> None:
    """A callback without MessageStatus is code 11 naming it (not an empty 200), and is kept in quarantine."""
    body = form({"MessageSid": "SMbad1", "To": "+15558675310", "AccountSid": ACCOUNT})
    response = client.post("/dlr/twilio", content=body, headers=FORM_HEADERS)
    assert response.status_code == 400
    assert response.json()["code"] == 11
    assert "MessageStatus" in response.json()["data"]
    (kept,) = client.get("/quarantine?dialect=twilio").json()["data"]["items"]
    assert kept["body"] == body.decode()
    assert "MessageStatus" in kept["error"]
    assert client.get("/messages/SMbad1").status_code == 404


# --- signatures --------------------------------------------------------------------------------------

VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
VECTOR_TOKEN = "12345"
VECTOR_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_published_vector_is_computed_exactly() -> None:
    """Twilio's published test vector: the signature of those parameters at that URL with token 12345."""
    assert signature(VECTOR_URL, VECTOR_PARAMS.items(), VECTOR_TOKEN) == VECTOR_SIGNATURE


def test_published_vector_verifies_as_a_received_form_post() -> None:
    """The vector as a request (form body, header, URL): it verifies; another token, URL or value does not."""
    parts = RequestParts("POST", FORM, b"", form(VECTOR_PARAMS), {"x-twilio-signature": VECTOR_SIGNATURE}, VECTOR_URL)
    assert verify(parts, VECTOR_TOKEN)
    assert not verify(parts, "54321")
    assert not verify(replace(parts, url=VECTOR_URL.replace("foo=1", "foo=2")), VECTOR_TOKEN)
    assert not verify(replace(parts, body=parts.body.replace(b"Digits=1234", b"Digits=1235")), VECTOR_TOKEN)
    assert not verify(replace(parts, headers={}), VECTOR_TOKEN)


def test_repeated_parameter_names_are_each_signed() -> None:
    """A name sent twice contributes both values (sorted), as Twilio signs them, though the parser keeps one;
    the expected signature is computed here by hand from the documented algorithm."""
    url = "https://x.test/dlr/twilio"
    body = b"MessageSid=SM1&MessageStatus=sent&MediaUrl=b&MediaUrl=a"
    by_hand = url + "MediaUrla" + "MediaUrlb" + "MessageSidSM1" + "MessageStatussent"
    expected = base64.b64encode(hmac.new(b"tok", by_hand.encode(), hashlib.sha1).digest()).decode()
    parts = RequestParts("POST", FORM, b"", body, {"x-twilio-signature": expected}, url)
    assert verify(parts, "tok")
    last_only = url + "MediaUrlb" + "MessageSidSM1" + "MessageStatussent"
    wrong = base64.b64encode(hmac.new(b"tok", last_only.encode(), hashlib.sha1).digest()).decode()
    assert not verify(replace(parts, headers={"x-twilio-signature": wrong}), "tok")


@pytest.mark.parametrize(
    ("received", "signed"),
    [
        ("https://dlr.example.com:443/dlr/twilio", "https://dlr.example.com/dlr/twilio"),
        ("https://dlr.example.com/dlr/twilio", "https://dlr.example.com:443/dlr/twilio"),
        ("http://dlr.example.com/dlr/twilio?x=1", "http://dlr.example.com:80/dlr/twilio?x=1"),
    ],
)
def test_default_port_written_or_not_verifies_the_same(received: str, signed: str) -> None:
    """Whether the scheme's default port was written in the configured URL cannot be told from the Host
    header: both spellings verify (as in Twilio's own validators); another port does not."""
    body = form(callback("sent"))
    sig = signature(signed, callback("sent").items(), "tok")
    parts = RequestParts("POST", FORM, b"", body, {"x-twilio-signature": sig}, received)
    assert verify(parts, "tok")
    assert not verify(replace(parts, url=received.replace("dlr.example.com", "dlr.example.com:8443", 1)), "tok")


def test_a_json_body_is_never_verified_over_the_url_alone() -> None:
    """Status callbacks are forms: a JSON body with a signature over the URL alone is refused."""
    url = "https://x.test/dlr/twilio"
    parts = RequestParts("POST", "application/json", b"", b"{}", {"x-twilio-signature": signature(url, [], "t")}, url)
    assert not verify(parts, "t")


def signed_client(settings: Settings, **changes: object) -> TestClient:
    return TestClient(create_app(replace(settings, webhook_secrets={"twilio": Secret("auth-token-1")}, **changes)))


def test_signed_callbacks_over_http(settings: Settings, db: str) -> None:
    """With DLR_WEBHOOK_SECRET_TWILIO set: a callback signed over the URL as received (scheme, Host, path
    and query) is an empty 200 and applied; a wrong or missing signature is code 8 / 401, nothing stored."""
    params = callback("delivered", sid="SMsig1", RawDlrDoneDate="2302101530")
    url = "http://testserver/dlr/twilio?account=main"
    with signed_client(settings) as client:
        good = client.post(
            "/dlr/twilio?account=main",
            content=form(params),
            headers={**FORM_HEADERS, "x-twilio-signature": signature(url, params.items(), "auth-token-1")},
        )
        assert (good.status_code, good.content) == (200, b"")
        assert client.get("/messages/SMsig1").json()["data"]["status"] == "DELIVRD"

        other = callback("delivered", sid="SMsig2")
        for headers in (
            {},
            {"x-twilio-signature": signature(url, other.items(), "another-token")},
            {"x-twilio-signature": signature(url, params.items(), "auth-token-1")},  # another body's
            {"x-twilio-signature": signature("http://testserver/dlr/twilio", other.items(), "auth-token-1")},
        ):
            refused = client.post("/dlr/twilio?account=main", content=form(other), headers={**FORM_HEADERS, **headers})
            assert (refused.status_code, refused.json()["code"]) == (401, 8)
    assert [r["id"] for r in fetch(db, "SELECT id FROM messages")] == ["SMsig1"]
    assert fetch(db, "SELECT count(*) AS n FROM quarantine")[0]["n"] == 0


def test_signed_over_the_public_url_behind_a_proxy(settings: Settings, db: str) -> None:
    """With DLR_PUBLIC_URL set, the signature Twilio made over the public URL verifies; one over the URL the
    proxy passed on (http://testserver) does not."""
    params = callback("sent", sid="SMpub1")
    public = "https://dlr.example.com/dlr/twilio"
    with signed_client(settings, public_url="https://dlr.example.com") as client:
        internal = signature("http://testserver/dlr/twilio", params.items(), "auth-token-1")
        refused = post(client, params, **{"x-twilio-signature": internal})
        assert (refused.status_code, refused.json()["code"]) == (401, 8)
        good = post(client, params, **{"x-twilio-signature": signature(public, params.items(), "auth-token-1")})
        assert (good.status_code, good.content) == (200, b"")
        assert client.get("/messages/SMpub1").json()["data"]["status"] == "ACCEPTD"
