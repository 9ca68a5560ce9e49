"""API key scopes (code 9), disabled keys (code 14) and rate limits (code 30), through HTTP and the settings."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from service.access import ALL_SCOPES, RateLimit, Scope, TokenBuckets, parse_api_keys
from service.app import create_app
from service.config import Secret, Settings, SettingsError
from service.logs import JsonFormatter

KEYS = "billing:k-read:read,crm:k-reg:read+register,ops:k-admin:admin,old:k-old:admin"


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(settings: Settings) -> Iterator[TestClient]:
    env = {"DLR_API_KEYS": KEYS, "DLR_API_KEYS_DISABLED": "old", "DLR_RATE_LIMIT": "3/s"}
    configured = Settings.from_env(env, env_file=None)
    secured = replace(
        settings,
        api_keys=configured.api_keys,
        api_keys_disabled=configured.api_keys_disabled,
        rate_limit=configured.rate_limit,
    )
    with TestClient(create_app(secured)) as client:
        yield client


def test_keys_are_read_with_names_and_scopes() -> None:
    keys = parse_api_keys("billing:k1:read, crm:k2:read+register ,bare-key")
    assert [(k.name, k.key, k.scopes) for k in keys] == [
        ("billing", Secret("k1"), frozenset({Scope.READ})),
        ("crm", Secret("k2"), frozenset({Scope.READ, Scope.REGISTER})),
        ("key-3", Secret("bare-key"), ALL_SCOPES),
    ]
    admin = parse_api_keys("ops:k3:admin")[0]
    assert all(admin.allows(scope) for scope in Scope)
    assert not keys[0].allows(Scope.REGISTER)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DLR_API_KEYS": "billing:k1"}, "2 parts"),
        ({"DLR_API_KEYS": "billing:k1:reed"}, "unknown scope 'reed'"),
        ({"DLR_API_KEYS": "billing:k1:read+"}, "unknown scope ''"),
        ({"DLR_API_KEYS": "bil ling:k1:read"}, "a name is"),
        ({"DLR_API_KEYS": "billing::read"}, "empty key"),
        ({"DLR_API_KEYS": "a:k1:read,a:k2:admin"}, "names a more than once"),
        ({"DLR_API_KEYS": "a:k1:read", "DLR_API_KEYS_DISABLED": "b"}, "names no key: b"),
        ({"DLR_API_KEYS_DISABLED": "a"}, "names no key: a"),
        ({"DLR_RATE_LIMIT": "50"}, "DLR_RATE_LIMIT must be"),
        ({"DLR_RATE_LIMIT": "0/s"}, "DLR_RATE_LIMIT must be"),
        ({"DLR_RATE_LIMIT": "50/d"}, "DLR_RATE_LIMIT must be"),
    ],
)
def test_a_malformed_key_list_disabled_name_or_rate_stops_the_start(env: dict[str, str], named: str) -> None:
    """A silent misreading would open or close the API to someone unintended: stop, naming what is wrong,
    never the key itself."""
    with pytest.raises(SettingsError, match=named) as raised:
        Settings.from_env(env, env_file=None)
    assert "k1" not in str(raised.value)


def test_each_scope_opens_its_operations_and_no_others(keyed: TestClient) -> None:
    """read: the reads; register: POST /messages; admin: everything, the quarantine included. A valid key
    without the scope is code 9 (403) naming the scope; no key or a wrong one stays code 8 (401)."""
    assert keyed.post("/messages", json={"id": "a1"}, headers=bearer("k-reg")).json()["code"] == 0
    assert keyed.get("/messages/a1", headers=bearer("k-read")).json()["code"] == 0
    refused = keyed.post("/messages", json={"id": "a2"}, headers=bearer("k-read"))
    assert (refused.status_code, refused.json()["code"], refused.json()["data"]) == (403, 9, {"scope": "register"})
    assert "billing" in refused.json()["message"]
    assert keyed.get("/messages/a2", headers=bearer("k-admin")).json()["code"] == 2  # never registered
    assert keyed.get("/quarantine", headers=bearer("k-reg")).json()["code"] == 9
    assert keyed.get("/quarantine", headers=bearer("k-admin")).json()["code"] == 0
    assert keyed.get("/events", headers=bearer("k-read")).json()["code"] == 0
    assert keyed.get("/campaigns/none", params={"apiKey": "k-read"}).json()["code"] == 2
    wrong = keyed.get("/messages/a1", headers=bearer("k-nope"))
    assert (wrong.status_code, wrong.json()["code"]) == (401, 8)


def test_a_disabled_key_is_code_14_whatever_its_scopes(keyed: TestClient) -> None:
    answer = keyed.get("/messages/a1", headers=bearer("k-old"))
    assert (answer.status_code, answer.json()["code"]) == (403, 14)


def test_past_the_rate_limit_a_key_gets_code_30_with_retry_after_and_others_are_not_held(
    keyed: TestClient,
) -> None:
    """3/s: a burst of three, then 429 code 30 with Retry-After; another key has its own bucket; the
    webhook path is never limited."""
    codes = [keyed.get("/events", headers=bearer("k-read")).json()["code"] for _ in range(3)]
    limited = keyed.get("/events", headers=bearer("k-read"))
    assert codes == [0, 0, 0]
    assert (limited.status_code, limited.json()["code"], limited.headers["retry-after"]) == (429, 30, "1")
    assert keyed.get("/events", headers=bearer("k-admin")).json()["code"] == 0
    for i in range(10):
        report = keyed.post("/dlr/generic", data={"id": f"r{i}", "status": "DELIVRD"})
        assert report.status_code == 200


class _Lines(logging.Handler):
    """Formats each record as it is logged, in the request's context, as the service's own handler does."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_the_key_name_is_logged_never_the_key(keyed: TestClient) -> None:
    access = logging.getLogger("dlr_tracker.access")
    handler, level = _Lines(), access.level
    access.addHandler(handler)
    access.setLevel(logging.DEBUG)
    try:
        keyed.get("/events", headers=bearer("k-admin"))
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    lines = handler.lines
    assert lines
    assert '"api_key": "ops"' in lines[-1]
    assert "k-admin" not in "".join(lines)


def test_metrics_count_requests_and_refusals_by_key_name(keyed: TestClient) -> None:
    keyed.get("/events", headers=bearer("k-read"))
    for _ in range(4):
        keyed.get("/events", headers=bearer("k-reg"))
    text = keyed.get("/metrics").text
    assert 'dlr_api_requests_total{key="billing"}' in text
    assert 'dlr_rate_limited_total{key="crm"}' in text
    assert "k-read" not in text


@given(
    rate=st.sampled_from([0.5, 1.0, 3.0, 50.0]),
    gaps=st.lists(st.floats(min_value=0, max_value=2, allow_nan=False), min_size=1, max_size=60),
)
def test_a_bucket_admits_no_more_than_its_burst_and_rate_allow(rate: float, gaps: list[float]) -> None:
    """Over any run of requests, those admitted up to time t are at most burst + rate * t; and a refused
    request's Retry-After is enough: asking again after it is admitted."""
    buckets = TokenBuckets(RateLimit(rate, f"{rate}/s"))
    now, admitted = 0.0, 0
    limit = buckets.limit
    for gap in gaps:
        now += gap
        wait = buckets.take("k", now)
        if wait == 0:
            admitted += 1
        else:
            assert buckets.take("k", now + wait + 1e-9) == 0
            admitted += 1
            now += wait + 1e-9
        assert admitted <= limit.burst + rate * now + 1e-6
