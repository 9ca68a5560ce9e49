"""The pure parts of subscriptions: the retry policy, Retry-After, signing with standardwebhooks, filters,
the address rules and the configuration that feeds them."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from service.config import DEFAULT_DELIVERY_SCHEDULE, Settings, SettingsError
from service.subscriptions import policy, signing
from service.subscriptions.address_guard import refusal
from service.subscriptions.policy import Attempt, decide, recovered, streak

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SCHEDULE = (0.0, 5.0, 300.0)
DAY = 86400.0


def attempt(status: int | None = None, error: str | None = None, retry_after: float | None = None) -> Attempt:
    return Attempt(NOW, 0.1, status, error, retry_after)


@pytest.mark.parametrize(
    ("result", "made", "state", "wait", "disabled"),
    [
        (attempt(200), 1, "delivered", None, False),
        (attempt(204), 3, "delivered", None, False),
        (attempt(500), 1, "pending", 5.0, False),
        (attempt(error="timeout"), 2, "pending", 300.0, False),
        (attempt(302), 1, "pending", 5.0, False),  # a redirect is not followed: not delivered
        (attempt(500), 3, "failed", None, False),  # the schedule is spent
        (attempt(410), 1, "failed", None, True),
        (attempt(429, retry_after=60), 1, "pending", 60.0, False),  # later than the schedule says
        (attempt(503, retry_after=1), 2, "pending", 300.0, False),  # never sooner than the schedule
        (attempt(500, retry_after=60), 1, "pending", 5.0, False),  # Retry-After counts on 429/503 only
    ],
)
def test_what_an_attempt_means(result: Attempt, made: int, state: str, wait: float | None, disabled: bool) -> None:
    verdict = decide(result, made, SCHEDULE, None, DAY, jitter=1.0)
    assert verdict.state == state
    assert verdict.next_attempt_at == (None if wait is None else NOW + timedelta(seconds=wait))
    assert (verdict.disable is not None) == disabled


def test_jitter_stretches_the_wait_and_failing_too_long_disables() -> None:
    assert decide(attempt(500), 1, SCHEDULE, None, DAY, jitter=1.2).next_attempt_at == NOW + timedelta(seconds=6)
    long_ago = NOW - timedelta(days=2)
    assert decide(attempt(500), 1, SCHEDULE, long_ago, DAY, jitter=1.0).disable is not None
    assert decide(attempt(500), 1, SCHEDULE, NOW - timedelta(hours=1), DAY, jitter=1.0).disable is None
    assert decide(attempt(200), 1, SCHEDULE, long_ago, DAY, jitter=1.0).disable is None  # a success ends it


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("120", 120.0), (" 7 ", 7.0), ("Mon, 01 Jun 2026 12:01:00 GMT", 60.0), ("soon", None), (None, None)],
)
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert policy.retry_after(header, NOW) == seconds


@pytest.mark.parametrize(
    ("secret", "ok"),
    [
        ("whsec_" + "A" * 32, True),
        ("whsec_" + "A" * 32 + "==", False),  # padding after a whole secret
        ("whsec_" + "A" * 31, False),
        ("whsec_" + "A" * 28, False),  # 21 bytes: too short
        ("whsec_" + "A" * 88, False),  # 66 bytes: too long
        ("secret_" + "A" * 32, False),
    ],
)
def test_chosen_secrets(secret: str, ok: bool) -> None:
    assert (signing.secret_problem(secret) is None) == ok


def test_headers_verify_with_standardwebhooks_and_both_secrets_during_rotation() -> None:
    old, new = signing.new_secret(), signing.new_secret()
    body = b'{"type":"message.status_changed","data":{"id":"m1"}}'
    now = datetime.now(UTC)
    headers = signing.headers("123-4", now, body, [new, old])
    assert headers["webhook-id"] == "123-4"
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        assert Webhook(secret).verify(body, headers) == {"type": "message.status_changed", "data": {"id": "m1"}}
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(body + b" ", headers)


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("93.184.216.34", False),
        ("2606:2800:220:1:248:1893:25c8:1946", False),
        ("127.0.0.1", True),
        ("10.0.0.1", True),
        ("100.64.1.1", True),
        ("169.254.169.254", True),
        ("224.0.0.251", True),
        ("0.0.0.0", True),
        ("::1", True),
        ("::ffff:10.0.0.1", True),
        ("fc00::1", True),
        ("240.0.0.1", True),
    ],
)
def test_only_global_unicast_addresses_are_allowed(address: str, refused: bool) -> None:
    assert (refusal(ipaddress.ip_address(address)) is not None) == refused


def test_configuration_defaults() -> None:
    settings = Settings.from_env({}, env_file=None)
    assert settings.delivery_schedule == DEFAULT_DELIVERY_SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert (settings.delivery_timeout, settings.subscription_disable_after) == (15.0, 5 * DAY)
    assert settings.subscription_allow_private is False
    read = Settings.from_env(
        {
            "DLR_DELIVERY_SCHEDULE": "0, 0.2,0.2",
            "DLR_SUBSCRIPTION_ALLOW_PRIVATE": "TRUE",
            "DLR_SUBSCRIPTION_DISABLE_AFTER": "2h",
            "DLR_DELIVERY_TIMEOUT": "3",
        },
        env_file=None,
    )
    assert read.delivery_schedule == (0, 0.2, 0.2)
    assert (read.subscription_allow_private, read.subscription_disable_after, read.delivery_timeout) == (
        True,
        7200,
        3,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DLR_DELIVERY_SCHEDULE", "0;5"),
        ("DLR_DELIVERY_SCHEDULE", "0,-5"),
        ("DLR_DELIVERY_SCHEDULE", "0,5m"),
        ("DLR_DELIVERY_SCHEDULE", ",,"),
        ("DLR_DELIVERY_SCHEDULE", "0,999999"),
        ("DLR_SUBSCRIPTION_ALLOW_PRIVATE", "yes"),
        ("DLR_SUBSCRIPTION_ALLOW_PRIVATE", "ture"),
        ("DLR_SUBSCRIPTION_DISABLE_AFTER", "5days"),
        ("DLR_DELIVERY_TIMEOUT", "0"),
        ("DLR_DELIVERY_TIMEOUT", "15s"),
        ("DLR_SUBSCRIPTION_KEY", "short"),
        ("DLR_SUBSCRIPTION_DISPATCH", "no"),
    ],
)
def test_malformed_values_stop_the_start_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value}, env_file=None)


def test_a_success_ends_an_outage_only_after_a_streak_longer_than_the_first_retry_wait() -> None:
    """A subscriber back after failing longer than the first retry wait has its waiting retries pulled forward;
    one event's failure among successes (a shorter streak), or a failure, pulls nothing."""
    now = datetime(2026, 12, 1, tzinfo=UTC)
    schedule = (0.0, 5.0, 300.0)
    ok, refused = Attempt(now, 0.01, 204), Attempt(now, 0.01, None, "ConnectError")
    assert recovered(ok, now - timedelta(seconds=6), schedule)
    assert not recovered(ok, now - timedelta(seconds=4), schedule)
    assert not recovered(ok, None, schedule)
    assert not recovered(refused, now - timedelta(minutes=5), schedule)


def _tried(second: int, status: int | None) -> Attempt:
    return Attempt(datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC), 0.01, status, None if status else "timeout")


@pytest.mark.parametrize(
    ("attempts", "ended", "since"),
    [
        ([], False, None),
        ([(1, 200)], True, None),
        ([(1, 500)], False, 1),
        ([(1, 500), (2, 500)], False, 1),
        ([(1, 500), (2, 200)], True, None),
        ([(1, 200), (2, 500), (3, 500)], True, 2),
        ([(3, 500), (1, 200), (2, None)], True, 2),  # taken in the order they were made
        ([(2, 200), (1, 500)], True, None),
    ],
)
def test_a_batch_of_attempts_changes_the_failing_streak(
    attempts: list[tuple[int, int | None]], ended: bool, since: int | None
) -> None:
    change = streak([_tried(second, status) for second, status in attempts])
    assert change.ended is ended
    assert change.since == (None if since is None else _tried(since, None).at)
