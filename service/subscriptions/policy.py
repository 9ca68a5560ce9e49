"""What one delivery attempt's outcome means: delivered, try again when, give up, disable the subscription.
Pure: the clock and the jitter are arguments.

- 2xx: delivered.
- 410 Gone: the subscriber says the endpoint is gone: the delivery fails and the subscription is disabled.
- Anything else (another status, a redirect, a timeout, no connection): retried after the next step of the
  schedule (`DLR_DELIVERY_SCHEDULE`: seconds before each attempt, the first one included), stretched or shrunk
  by the jitter so that a subscriber's failed deliveries do not all come back at the same moment; never sooner
  than a 429's or 503's `Retry-After`. After the last step the delivery is `failed` (kept, replayable).
- A subscription failing without a success in between for `DLR_SUBSCRIPTION_DISABLE_AFTER` is disabled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Literal

State = Literal["pending", "delivered", "failed"]
PENDING: State = "pending"
DELIVERED: State = "delivered"
FAILED: State = "failed"
STATES: tuple[State, ...] = ("pending", "delivered", "failed")
JITTER = (0.8, 1.2)  # the range of the factor each wait is multiplied by
MAX_RETRY_AFTER = 86400.0  # a Retry-After further off than this is read as this
THROTTLED = (429, 503)


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST to a subscriber came to."""

    at: datetime
    duration: float
    status: int | None = None  # the HTTP status, None when there was no answer
    error: str | None = None  # why there was no answer: "timeout", "connect: ...", ...
    retry_after: float | None = None  # seconds, from a 429's or 503's Retry-After

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def outcome(self) -> str:
        """A bounded metric label: 2xx, 3xx, 4xx, 5xx, timeout or error."""
        if self.status is not None:
            return f"{min(max(self.status // 100, 1), 5)}xx"
        return "timeout" if self.error == "timeout" else "error"

    def to_json(self) -> dict[str, object]:
        return {
            "at": self.at.isoformat(),
            "status": self.status,
            "error": self.error,
            "duration": round(self.duration, 4),
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    state: State
    next_attempt_at: datetime | None  # when pending
    disable: str | None = None  # why the subscription is to be disabled, if it is


def decide(
    attempt: Attempt,
    attempts_made: int,
    schedule: Sequence[float],
    failing_since: datetime | None,
    disable_after: float,
    jitter: float,
) -> Verdict:
    """The delivery's state after its `attempts_made`-th attempt (this one included)."""
    if attempt.delivered:
        return Verdict(DELIVERED, None)
    if attempt.status == 410:
        return Verdict(FAILED, None, "the subscriber answered 410 Gone")
    since = failing_since or attempt.at
    disable = None
    if attempt.at - since >= timedelta(seconds=disable_after):
        disable = f"failing since {since.isoformat()} ({disable_after:g} s without a successful delivery)"
    if attempts_made >= len(schedule):
        return Verdict(FAILED, None, disable)
    wait = schedule[attempts_made] * jitter
    if attempt.status in THROTTLED and attempt.retry_after is not None:
        wait = max(wait, attempt.retry_after)
    return Verdict(PENDING, attempt.at + timedelta(seconds=wait), disable)


def recovered(attempt: Attempt, failing_since: datetime | None, schedule: Sequence[float]) -> bool:
    """Whether this attempt ends an outage: a success after the subscriber failed for longer than the first
    retry wait. Its other deliveries waiting for a retry are then due at once, not at their backed-off times
    (after a five-minute outage the third attempt of the last failures is five minutes on, the fourth half an
    hour). A shorter streak is one event's failure among successes: its own backoff stands."""
    if not attempt.delivered or failing_since is None:
        return False
    first_wait = next((wait for wait in schedule if wait > 0), 0.0)
    return attempt.at - failing_since >= timedelta(seconds=first_wait)


@dataclass(frozen=True, slots=True)
class Streak:
    """What a batch of one subscription's attempts does to its failing streak: `ended` by a success in the
    batch, and `since` when the failing that is left began (None: the last attempt succeeded)."""

    ended: bool
    since: datetime | None


def streak(attempts: Sequence[Attempt]) -> Streak:
    """The streak change of these attempts of one subscription, taken in the order they were made."""
    ended = False
    since: datetime | None = None
    for attempt in sorted(attempts, key=lambda a: a.at):
        if attempt.delivered:
            ended, since = True, None
        elif since is None:
            since = attempt.at
    return Streak(ended, since)


def retry_after(header: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), or None when absent or unreadable."""
    if header is None:
        return None
    text = header.strip()
    if text.isascii() and text.isdigit():
        return min(float(text[:12]), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(0.0, (when - now).total_seconds()), MAX_RETRY_AFTER)
