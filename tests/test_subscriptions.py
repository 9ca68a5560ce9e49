"""`/subscriptions` CRUD through HTTP (DESIGN "Subscriptions"): validation, the secret shown only at creation
and rotation, the address guard at registration, strict parameters, the envelope's codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from starlette.testclient import TestClient

from service.access import parse_api_keys
from service.app import create_app
from service.config import Secret, Settings
from tests.conftest import fetch

HOOK = "http://127.0.0.1:9/hook"


@pytest.fixture
def subs(settings: Settings) -> Iterator[TestClient]:
    """The app with loopback subscribers allowed (the receivers of these tests listen there)."""
    with TestClient(create_app(replace(settings, subscription_allow_private=True))) as client:
        yield client


def create(client: TestClient, **body: Any) -> dict[str, Any]:
    answer = client.post("/subscriptions", json={"url": HOOK, **body})
    assert answer.status_code == 201, answer.text
    assert answer.json()["code"] == 0
    return answer.json()["data"]  # type: ignore[no-any-return]


def test_create_shows_the_secret_once_and_never_again(subs: TestClient) -> None:
    """Creation answers 201 with a generated whsec_ secret; GET (one and all) never shows it."""
    made = create(subs, description="crm", filter={"final": True, "statuses": ["DELIVRD", "UNDELIV"]})
    assert made["secret"].startswith("whsec_")
    assert made["filter"] == {"final": True, "statuses": ["DELIVRD", "UNDELIV"]}
    assert (made["url"], made["description"], made["enabled"], made["disabled_reason"]) == (HOOK, "crm", True, None)
    one = subs.get(f"/subscriptions/{made['id']}").json()["data"]
    assert "secret" not in one
    assert one == {k: v for k, v in made.items() if k != "secret"}
    listed = subs.get("/subscriptions").json()["data"]
    assert listed == {"items": [one], "next_cursor": None}
    assert made["secret"] not in json.dumps(listed)


def test_a_chosen_secret_is_kept_and_a_malformed_one_refused(subs: TestClient) -> None:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert create(subs, secret=secret)["secret"] == secret
    answer = subs.post("/subscriptions", json={"url": HOOK, "secret": "not-a-secret"})
    assert (answer.status_code, answer.json()["code"], list(answer.json()["data"])) == (400, 1, ["secret"])


def test_secrets_are_encrypted_at_rest_with_a_key(settings: Settings, db: str) -> None:
    """With DLR_SUBSCRIPTION_KEY the stored secret is AES-GCM ciphertext, not the secret."""
    key = Secret("q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=")
    with TestClient(create_app(replace(settings, subscription_allow_private=True, subscription_key=key))) as client:
        made = create(client)
    (row,) = fetch(db, "SELECT secret FROM subscriptions")
    assert row["secret"].startswith("aesgcm:")
    assert made["secret"] not in row["secret"]
    assert made["secret"].removeprefix("whsec_") not in row["secret"]


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({}, 11, "url"),
        ({"url": "ftp://example.com/x"}, 1, "url"),
        ({"url": "http://"}, 1, "url"),
        ({"url": "http://user:pw@example.com/"}, 1, "url"),
        ({"url": 5}, 1, "url"),
        ({"url": HOOK, "filter": {"status": ["DELIVRD"]}}, 1, "filter"),
        ({"url": HOOK, "filter": {"statuses": ["DELIVERED"]}}, 1, "filter"),
        ({"url": HOOK, "filter": {"statuses": []}}, 1, "filter"),
        ({"url": HOOK, "filter": {"final": "yes"}}, 1, "filter"),
        ({"url": HOOK, "filter": {"campaigns": "spring"}}, 1, "filter"),
        ({"url": HOOK, "filter": []}, 1, "filter"),
        ({"url": HOOK, "description": "x" * 1001}, 1, "description"),
        ({"url": HOOK, "colour": "red"}, 1, "colour"),
    ],
)
def test_bad_fields_are_refused_naming_them(subs: TestClient, body: dict[str, Any], code: int, field: str) -> None:
    answer = subs.post("/subscriptions", json=body)
    assert (answer.status_code, answer.json()["code"], field in answer.json()["data"]) == (400, code, True)
    assert subs.get("/subscriptions").json()["data"]["items"] == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8080/hook",
        "http://10.1.2.3/",
        "http://192.168.0.10/",
        "http://172.16.5.4/",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://[fe80::1]/",
    ],
)
def test_non_global_addresses_are_refused_unless_allowed(client: TestClient, url: str) -> None:
    """Without DLR_SUBSCRIPTION_ALLOW_PRIVATE a URL whose host is (or resolves to) a loopback, private,
    link-local, shared, multicast or unspecified address is code 1 naming `url`."""
    answer = client.post("/subscriptions", json={"url": url})
    assert (answer.status_code, answer.json()["code"], list(answer.json()["data"])) == (400, 1, ["url"])


def test_a_host_that_does_not_resolve_is_refused(client: TestClient) -> None:
    answer = client.post("/subscriptions", json={"url": "https://no-such-host.invalid/hook"})
    assert (answer.status_code, answer.json()["code"]) == (400, 1)
    assert "does not resolve" in answer.json()["data"]["url"]


def test_patch_changes_the_given_fields_and_enabling_clears_the_reason(subs: TestClient) -> None:
    made = create(subs)
    path = f"/subscriptions/{made['id']}"
    off = subs.patch(path, json={"enabled": False}).json()["data"]
    assert (off["enabled"], off["disabled_reason"]) == (False, "disabled by PATCH")
    on = subs.patch(path, json={"enabled": True, "description": "again", "filter": {"campaigns": ["b", "a"]}})
    data = on.json()["data"]
    assert (data["enabled"], data["disabled_reason"], data["description"]) == (True, None, "again")
    assert data["filter"] == {"campaigns": ["a", "b"]}
    assert subs.patch(path, json={"filter": None}).json()["data"]["filter"] == {}
    for body, code in [({}, 11), ({"enabled": "yes"}, 1), ({"secret": "whsec_x"}, 1), ({"url": "gopher://x"}, 1)]:
        answer = subs.patch(path, json=body)
        assert (answer.status_code, answer.json()["code"]) == (400, code), body


def test_delete_and_unknown_ids_are_code_2(subs: TestClient) -> None:
    made = create(subs)
    path = f"/subscriptions/{made['id']}"
    assert subs.delete(path).json() == {"code": 0, "data": {"id": made["id"], "deleted": True}, "message": ""}
    for method, target, body in [
        ("GET", path, None),
        ("DELETE", path, None),
        ("PATCH", path, {"enabled": True}),
        ("GET", "/subscriptions/abc", None),
        ("POST", f"{path}/rotate-secret", None),
        ("GET", f"{path}/deliveries", None),
        ("POST", f"{path}/replay", {"since": "2020-01-01T00:00:00Z"}),
    ]:
        answer = subs.request(method, target, json=body)
        assert (answer.status_code, answer.json()["code"]) == (404, 2), (method, target)


def test_rotate_secret_shows_the_new_one_once(subs: TestClient) -> None:
    made = create(subs)
    rotated = subs.post(f"/subscriptions/{made['id']}/rotate-secret").json()["data"]
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != made["secret"]
    assert "previous_secret_expires_at" in rotated
    assert "secret" not in subs.get(f"/subscriptions/{made['id']}").json()["data"]


def test_strict_parameters_and_methods(subs: TestClient) -> None:
    """An unknown query parameter is code 1; a wrong method is code 5 naming the allowed ones."""
    made = create(subs)
    answer = subs.get("/subscriptions", params={"enabled": "true"})
    assert (answer.status_code, answer.json()["code"]) == (400, 1)
    answer = subs.get(f"/subscriptions/{made['id']}/deliveries", params={"state": "lost"})
    assert (answer.status_code, answer.json()["code"]) == (400, 1)
    answer = subs.put(f"/subscriptions/{made['id']}", json={})
    assert (answer.status_code, answer.json()["code"]) == (405, 5)
    assert set(answer.headers["allow"].replace(" ", "").split(",")) >= {"GET", "PATCH", "DELETE"}


def test_subscriptions_need_an_api_key_when_keys_are_set(settings: Settings) -> None:
    keyed = replace(settings, api_keys=parse_api_keys("k1"), subscription_allow_private=True)
    with TestClient(create_app(keyed)) as client:
        assert client.post("/subscriptions", json={"url": HOOK}).json()["code"] == 8
        assert client.get("/subscriptions").status_code == 401
        answer = client.post("/subscriptions", json={"url": HOOK}, headers={"Authorization": "Bearer k1"})
        assert answer.status_code == 201


def test_pages_of_subscriptions(subs: TestClient) -> None:
    ids = [create(subs)["id"] for _ in range(3)]
    first = subs.get("/subscriptions", params={"limit": 2}).json()["data"]
    assert [s["id"] for s in first["items"]] == ids[:2]
    rest = subs.get("/subscriptions", params={"limit": 2, "cursor": first["next_cursor"]}).json()["data"]
    assert ([s["id"] for s in rest["items"]], rest["next_cursor"]) == (ids[2:], None)
