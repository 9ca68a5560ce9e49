"""Callback authenticity: Standard Webhooks signatures (the published test vector, then over HTTP)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.auth import standard_webhook_signature, verify_standard_webhook, whsec_key
from service.config import Secret, Settings
from service.errors import AuthFailed
from tests.conftest import fetch

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID, VECTOR_TS, VECTOR_BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_standard_webhooks_published_vector() -> None:
    """The signature of the Standard Webhooks test vector is computed exactly, and verifies at its time."""
    assert "v1," + standard_webhook_signature(whsec_key(SECRET), VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE
    headers = {"webhook-id": VECTOR_ID, "webhook-timestamp": VECTOR_TS, "webhook-signature": VECTOR_SIGNATURE}
    assert verify_standard_webhook(headers, VECTOR_BODY, SECRET, float(VECTOR_TS) + 10) == VECTOR_ID


@pytest.mark.parametrize(
    ("change", "now_offset"),
    [
        ({"webhook-signature": "v1,AAAA" + VECTOR_SIGNATURE[7:]}, 0),
        ({"webhook-signature": "v2," + VECTOR_SIGNATURE[3:]}, 0),
        ({"webhook-id": "msg_other"}, 0),
        ({"webhook-timestamp": "1614265331"}, 0),
        ({}, 301),
        ({}, -301),
        ({"webhook-signature": ""}, 0),
    ],
)
def test_standard_webhooks_refusals(change: dict[str, str], now_offset: int) -> None:
    """A wrong or unknown-version signature, another id or timestamp, or a time outside 5 minutes is refused."""
    headers = {"webhook-id": VECTOR_ID, "webhook-timestamp": VECTOR_TS, "webhook-signature": VECTOR_SIGNATURE}
    headers.update(change)
    with pytest.raises(AuthFailed):
        verify_standard_webhook(headers, VECTOR_BODY, SECRET, float(VECTOR_TS) + now_offset)


def test_rotated_keys_any_listed_v1_signature_verifies() -> None:
    """Several signatures may be listed (key rotation): one valid v1 is enough."""
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": VECTOR_TS,
        "webhook-signature": "v1a,xyz v1,bm90LWl0 " + VECTOR_SIGNATURE,
    }
    assert verify_standard_webhook(headers, VECTOR_BODY, SECRET, float(VECTOR_TS)) == VECTOR_ID


def signed(body: bytes, webhook_id: str, when: float | None = None) -> dict[str, str]:
    ts = str(int(when if when is not None else time.time()))
    signature = standard_webhook_signature(whsec_key(SECRET), webhook_id, ts, body)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": ts,
        "webhook-signature": f"v1,{signature}",
        "content-type": "application/json",
    }


def test_signed_generic_callbacks_over_http(settings: Settings, db: str) -> None:
    """With DLR_WEBHOOK_SECRET set: a signed report is applied once per webhook-id (a retry is a duplicate),
    an unsigned, wrongly signed or replayed-too-late one is code 8 / 401 and stores nothing."""
    app = create_app(replace(settings, webhook_secret=Secret(SECRET)))
    body = b'{"id": "sw1", "status": "DELIVRD"}'
    with TestClient(app) as client:
        first = client.post("/dlr/generic", content=body, headers=signed(body, "evt_1"))
        assert first.json()["data"] == {"id": "sw1", "status": "DELIVRD", "applied": True, "reason": None}
        retry = client.post("/dlr/generic", content=body, headers=signed(body, "evt_1"))
        assert retry.json()["data"]["reason"] == "duplicate"
        other = b'{"id": "sw2", "status": "DELIVRD"}'
        for headers in (
            {"content-type": "application/json"},
            {**signed(body, "evt_2"), "content-type": "application/json"},  # signature of another body
            signed(other, "evt_3", time.time() - 600),
        ):
            refused = client.post("/dlr/generic", content=other, headers=headers)
            assert (refused.status_code, refused.json()["code"]) == (401, 8)
        assert "sw2" not in {r["id"] for r in fetch(db, "SELECT id FROM messages")}
        assert fetch(db, "SELECT count(*) AS n FROM quarantine")[0]["n"] == 0
        assert 'dlr_auth_failures_total{kind="signature"}' in client.get("/metrics").text


def test_per_dialect_secret_overrides_the_global_one(settings: Settings) -> None:
    """DLR_WEBHOOK_SECRET_GENERIC takes the place of DLR_WEBHOOK_SECRET for that dialect."""
    other = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
    app = create_app(replace(settings, webhook_secret=Secret(other), webhook_secrets={"generic": Secret(SECRET)}))
    body = b'{"id": "pd1", "status": "ACCEPTD"}'
    with TestClient(app) as client:
        assert client.post("/dlr/generic", content=body, headers=signed(body, "evt_pd")).status_code == 200
