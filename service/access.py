"""Who may do what, and how often: API keys with names and scopes, and per-key rate limits. Pure.

`DLR_API_KEYS` entries are `name:key:scopes` (scopes joined with `+`) or a bare `key`, which has every scope.
`admin` implies the others. The key's name is what logs and metrics show; the key itself never leaves its
`Secret`. A rate limit is a token bucket per key name: `rate` requests a second, a burst of one second's
worth (at least one request).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from service.config import Secret, SettingsError


class Scope(StrEnum):
    READ = "read"  # GET /messages*, /campaigns/*, /events
    REGISTER = "register"  # POST /messages
    ADMIN = "admin"  # quarantine, replay, subscriptions, tasks; implies the others


ALL_SCOPES = frozenset(Scope)
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str  # shown in logs and metric labels: never the key
    key: Secret
    scopes: frozenset[Scope]

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes


def parse_api_keys(listed: str) -> tuple[ApiKey, ...]:
    """`DLR_API_KEYS`: comma-separated `name:key:scopes` or bare keys (named `key-1`, `key-2`, ... by place)."""
    keys: list[ApiKey] = []
    entries = [entry.strip() for entry in listed.split(",") if entry.strip()]
    if not entries:
        # Set to separators only: meant to close the API, it would leave it open.
        raise SettingsError("DLR_API_KEYS is set but holds no key (comma-separated keys; unset it for an open API)")
    for place, entry in enumerate(entries, 1):
        parts = entry.split(":")
        if len(parts) == 1:
            keys.append(ApiKey(f"key-{place}", Secret(entry), ALL_SCOPES))
            continue
        if len(parts) != 3:
            raise SettingsError(
                f"DLR_API_KEYS entry {place} has {len(parts)} parts: write name:key:scopes (scopes joined with +) "
                "or a bare key"
            )
        name, key, scopes = (part.strip() for part in parts)
        if not _NAME.match(name):
            raise SettingsError(f"DLR_API_KEYS entry {place}: a name is 1-64 of A-Z a-z 0-9 _ . -, got {name[:64]!r}")
        if not key:
            raise SettingsError(f"DLR_API_KEYS entry {place} ({name}) has an empty key")
        wanted = [scope.strip() for scope in scopes.split("+")]
        unknown = [scope for scope in wanted if scope not in Scope.__members__.values()]
        if unknown or not wanted:
            raise SettingsError(
                f"DLR_API_KEYS entry {place} ({name}): unknown scope {', '.join(map(repr, unknown))}; "
                f"the scopes are {', '.join(Scope)}"
            )
        keys.append(ApiKey(name, Secret(key), frozenset(Scope(scope) for scope in wanted)))
    names = [key.name for key in keys]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise SettingsError(f"DLR_API_KEYS names {', '.join(twice)} more than once: each key needs its own name")
    return tuple(keys)


def parse_disabled(listed: str, keys: tuple[ApiKey, ...]) -> frozenset[str]:
    """`DLR_API_KEYS_DISABLED`: names of keys refused with code 14. A name no key has is an error: a
    misspelt name would leave the key it meant enabled."""
    names = frozenset(name.strip() for name in listed.split(",") if name.strip())
    unknown = sorted(names - {key.name for key in keys})
    if unknown:
        known = ", ".join(key.name for key in keys) or "none (DLR_API_KEYS is unset)"
        raise SettingsError(f"DLR_API_KEYS_DISABLED names no key: {', '.join(unknown)}; the keys are {known}")
    return names


_RATE = re.compile(r"^([0-9]{1,9}(?:\.[0-9]{1,6})?)/(s|m|h)$")
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class RateLimit:
    per_second: float
    text: str  # as configured, for messages: `50/s`

    @property
    def burst(self) -> float:
        return max(1.0, self.per_second)


def parse_rate_limit(text: str) -> RateLimit:
    """`DLR_RATE_LIMIT`: `50/s`, `600/m`, `1000/h`."""
    match = _RATE.match(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise SettingsError(f"DLR_RATE_LIMIT must be a positive rate like 50/s, 600/m or 1000/h, got {text!r}")
    return RateLimit(float(match.group(1)) / _PER[match.group(2)], text.strip())


@dataclass(slots=True)
class TokenBuckets:
    """One token bucket per key name. `take(name, now)` is 0 when the request may go, else the seconds until
    it could (the `Retry-After`). `now`: a monotonic clock, passed in."""

    limit: RateLimit
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (tokens, at)

    def take(self, name: str, now: float) -> float:
        limit = self.limit
        tokens, at = self._buckets.get(name, (limit.burst, now))
        tokens = min(limit.burst, tokens + (now - at) * limit.per_second)
        if tokens >= 1.0:
            self._buckets[name] = (tokens - 1.0, now)
            return 0.0
        self._buckets[name] = (tokens, now)
        return (1.0 - tokens) / limit.per_second
