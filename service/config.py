"""Settings: read once from the environment (a `.env` file may add to it) into a frozen dataclass."""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

from starlette.config import Config

if TYPE_CHECKING:
    from service.access import ApiKey, RateLimit


class Secret:
    """A string that never prints: repr, str and f-strings show a mask, never the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _is_whsec(secret: str) -> bool:
    if not secret.startswith("whsec_"):
        return False
    try:
        return bool(base64.b64decode(secret.removeprefix("whsec_"), validate=True))
    except (binascii.Error, ValueError):
        return False


_DURATION = re.compile(r"^([0-9]{1,9}(?:\.[0-9]{1,6})?)([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float | None:
    """`90`, `90s`, `15m`, `2h`, `7d` -> seconds; None for anything else."""
    match = _DURATION.match(text.strip())
    if match is None:
        return None
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


_SIZE = re.compile(r"^([0-9]{1,7})(MB|GB)$")


def parse_size_mb(text: str) -> int | None:
    """`512MB`, `4GB` -> megabytes (PostgreSQL's spelling of the units); None for anything else."""
    match = _SIZE.match(text.strip())
    if match is None:
        return None
    return int(match.group(1)) * (1024 if match.group(2) == "GB" else 1)


_SCHEDULE_STEP = re.compile(r"^[0-9]{1,6}(?:\.[0-9]{1,3})?$")
MAX_SCHEDULE_STEP = 7 * 86400.0
MAX_SCHEDULE_ATTEMPTS = 50


def parse_schedule(text: str) -> tuple[float, ...] | None:
    """`0,5,300` -> (0.0, 5.0, 300.0): seconds before each delivery attempt; None for anything else."""
    steps = [step.strip() for step in text.split(",")]
    if not 1 <= len(steps) <= MAX_SCHEDULE_ATTEMPTS or not all(_SCHEDULE_STEP.match(step) for step in steps):
        return None
    seconds = tuple(float(step) for step in steps)
    return seconds if all(s <= MAX_SCHEDULE_STEP for s in seconds) else None


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("json", "text")
DispatchMode = Literal["on", "off", "process"]
DISPATCH_MODES: tuple[DispatchMode, ...] = ("on", "off", "process")
# With one subscriber flat out, ingest kept 0.7x its rate with deliveries in its own event loop and 1.0x with
# them in a process of their own (bench.subscriptions, docs/PERFORMANCE.md).
DEFAULT_DISPATCH: DispatchMode = "process"


# Group-commit writer tasks per worker. One gathers each batch from everything that arrived while the last one
# committed; two halve the batches and run two write-backs at once, which contend in PostgreSQL: one writer
# measured 12-31% more reports/s at 64 connections (medians of five sittings, the embedded server and
# PostgreSQL 15), p99 lower in every round (PERFORMANCE.md).
DEFAULT_WRITERS = 1
DEFAULT_DELIVERY_CONCURRENCY = 128
# A subscriber on loopback took ~300 deliveries/s with 8 in flight and ~900/s with 32 (bench.subscriptions).
DEFAULT_DELIVERY_CONCURRENCY_PER_SUBSCRIPTION = 32
# Svix's schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (DESIGN "Subscriptions").
DEFAULT_DELIVERY_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)

# Messages per sweep transaction: small, because ingest commits wait behind the WAL each batch writes.
DEFAULT_SWEEP_BATCH = 250
# Share of a pass spent sweeping: 1M overdue messages in under a minute, with ingest keeping its latency.
DEFAULT_SWEEP_DUTY = 0.65
# Messages per task transaction (an export's chunk, a close's page): as small as the sweep's, for the same reason.
DEFAULT_TASK_BATCH = 500


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: Secret | None = None
    data_dir: Path = Path(".dlr-tracker")
    embedded_shared_buffers_mb: int | None = None  # None: chosen from the machine's memory
    host: str = "127.0.0.1"
    port: int = 8080
    lifetime: int = 86400
    sweep_interval: float = 30.0
    sweep_batch: int = DEFAULT_SWEEP_BATCH
    sweep_duty: float = DEFAULT_SWEEP_DUTY
    api_keys: tuple[ApiKey, ...] = ()
    api_keys_disabled: frozenset[str] = frozenset()  # names of keys refused with code 14
    rate_limit: RateLimit | None = None  # per key and process; never on ingest
    webhook_token: Secret | None = None
    webhook_tokens: Mapping[str, Secret] = field(default_factory=dict)
    webhook_secret: Secret | None = None
    webhook_secrets: Mapping[str, Secret] = field(default_factory=dict)
    public_url: str | None = None
    web_concurrency: int = 1
    log_level: str = "info"
    log_format: str = "json"
    max_body_bytes: int = 1024 * 1024
    max_batch: int = 1000
    db_pool_size: int = 10
    db_timeout: float = 5.0
    # Off: no named prepared statements and no session settings at connect, for a pooler that hands each
    # transaction another server connection (PgBouncer in transaction mode, before 1.21).
    db_prepared_statements: bool = True
    group_commit: bool = True
    campaign_stats_ttl: float = 5.0
    writers: int = DEFAULT_WRITERS
    event_retention: float = 7 * 86400.0  # seconds the event feed keeps an event
    retention: float = 90 * 86400.0  # seconds a final message (and a quarantined payload) is kept; 0: forever
    delivery_timeout: float = 15.0  # seconds a subscriber has to answer one delivery
    delivery_schedule: tuple[float, ...] = DEFAULT_DELIVERY_SCHEDULE
    subscription_disable_after: float = 5 * 86400.0
    subscription_allow_private: bool = False
    delivery_concurrency: int = DEFAULT_DELIVERY_CONCURRENCY  # in flight in one process, all subscribers together
    delivery_concurrency_per_subscription: int = DEFAULT_DELIVERY_CONCURRENCY_PER_SUBSCRIPTION
    # process: `serve` starts one dispatching process of its own beside its workers (an app alone delivers
    # nothing); on: every serving process delivers in its event loop; off: this one delivers nothing (a
    # `dlr-tracker dispatch` process or other replicas do)
    subscription_dispatch: DispatchMode = DEFAULT_DISPATCH
    # The key that encrypts subscription secrets at rest (DLR_SUBSCRIPTION_KEY); None: stored as they are.
    subscription_key: Secret | None = None
    task_batch: int = DEFAULT_TASK_BATCH
    task_duty: float = DEFAULT_SWEEP_DUTY
    task_lease: float = 30.0  # seconds a runner holds a task without committing a batch before others take it
    task_poll: float = 2.0  # seconds between looks for queued tasks (a task made here wakes its runner at once)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env") -> Settings:
        environ = os.environ if environ is None else environ
        if env_file is not None and not Path(env_file).is_file():
            env_file = None
        config = Config(env_file=env_file, environ=environ)
        merged = {**config.file_values, **environ}

        def text(name: str, default: str | None = None) -> str | None:
            value: str | None = config(name, default=default)
            return None if value in (None, "") else str(value)

        def number(name: str, default: float, kind: type[int] | type[float], low: float, high: float) -> float:
            raw = text(name)
            if raw is None:
                return default
            try:
                value: float = kind(raw)
            except ValueError:
                raise SettingsError(
                    f"{name} must be {'an integer' if kind is int else 'a number'}, got {raw!r}"
                ) from None
            if not low <= value <= high:
                raise SettingsError(f"{name} must be between {low} and {high}, got {raw!r}")
            return value

        def duration(name: str, default: str, low: float) -> float:
            raw = text(name) or default
            seconds = parse_duration(raw)
            if seconds is None:
                raise SettingsError(f"{name} must be a duration: seconds, or a number with s, m, h or d, got {raw!r}")
            if seconds < low:
                raise SettingsError(f"{name} must be at least {low:g} seconds, got {raw!r}")
            return seconds

        def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
            value = (text(name) or default).lower()
            if value not in allowed:
                raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
            return value

        def flag(name: str, default: str) -> bool:
            return choice(name, default, ("true", "false")) == "true"

        def schedule(name: str) -> tuple[float, ...]:
            raw = text(name)
            if raw is None:
                return DEFAULT_DELIVERY_SCHEDULE
            steps = parse_schedule(raw)
            if steps is None:
                raise SettingsError(
                    f"{name} must be 1 to {MAX_SCHEDULE_ATTEMPTS} comma-separated seconds, each from 0 to "
                    f"{MAX_SCHEDULE_STEP:g} (e.g. 0,5,300), got {raw!r}"
                )
            return steps

        subscription_key = text("DLR_SUBSCRIPTION_KEY")
        if subscription_key is not None:
            # Lazy: the subscriptions package imports this module.
            from service.subscriptions.sealing import key_problem

            problem = key_problem(subscription_key)
            if problem is not None:
                raise SettingsError(f"DLR_SUBSCRIPTION_KEY {problem}")
        database_url = text("DATABASE_URL")
        token = text("DLR_WEBHOOK_TOKEN")

        def shared_buffers(name: str) -> int | None:
            raw = text(name, "auto") or "auto"
            if database_url is not None and raw != "auto":
                # Silently unused, it would promise a cache the server does not have.
                raise SettingsError(f"{name} sizes the embedded server; with DATABASE_URL set, size your own server")
            if raw == "auto":
                return None
            size = parse_size_mb(raw)
            if size is None or not 16 <= size <= 1024 * 1024:
                raise SettingsError(
                    f"{name} must be auto, or a size from 16MB to 1024GB such as 512MB or 4GB, got {raw!r}"
                )
            return size

        def per_dialect(prefix: str) -> dict[str, Secret]:
            # A misspelt dialect (`..._TWILLIO`) would leave the real one unauthenticated without a word:
            # stop instead. Lazy: the dialects import modules that import this one.
            from service.dialects import DIALECTS

            found = {}
            for name, value in merged.items():
                if not name.startswith(prefix):
                    continue
                dialect = name[len(prefix) :].lower()
                if dialect not in DIALECTS:
                    raise SettingsError(f"{name} names no dialect; the dialects are {', '.join(sorted(DIALECTS))}")
                if value:
                    found[dialect] = Secret(value)
            return found

        secret = text("DLR_WEBHOOK_SECRET")
        if secret is not None and not _is_whsec(secret):
            raise SettingsError("DLR_WEBHOOK_SECRET must be a Standard Webhooks secret: whsec_ followed by base64")
        public_url = text("DLR_PUBLIC_URL")
        if public_url is not None and not public_url.startswith(("http://", "https://")):
            raise SettingsError(f"DLR_PUBLIC_URL must start with http:// or https://, got {public_url!r}")
        # Lazy: access.py holds the parsers and imports Secret and SettingsError from here.
        from service.access import parse_api_keys, parse_disabled, parse_rate_limit

        listed = text("DLR_API_KEYS")
        keys = parse_api_keys(listed) if listed is not None else ()
        disabled = text("DLR_API_KEYS_DISABLED")
        rate = text("DLR_RATE_LIMIT")
        return cls(
            database_url=Secret(database_url) if database_url else None,
            data_dir=Path(text("DLR_DATA_DIR", ".dlr-tracker") or ".dlr-tracker"),
            embedded_shared_buffers_mb=shared_buffers("DLR_EMBEDDED_SHARED_BUFFERS"),
            host=text("HOST", "127.0.0.1") or "127.0.0.1",
            port=int(number("PORT", 8080, int, 0, 65535)),
            lifetime=int(number("DLR_LIFETIME", 86400, int, 1, 10 * 86400)),
            sweep_interval=number("DLR_SWEEP_INTERVAL", 30.0, float, 0.1, 86400),
            sweep_batch=int(number("DLR_SWEEP_BATCH", DEFAULT_SWEEP_BATCH, int, 1, 100_000)),
            sweep_duty=number("DLR_SWEEP_DUTY", DEFAULT_SWEEP_DUTY, float, 0.05, 1.0),
            api_keys=keys,
            api_keys_disabled=parse_disabled(disabled, keys) if disabled is not None else frozenset(),
            rate_limit=parse_rate_limit(rate) if rate is not None else None,
            webhook_token=Secret(token) if token else None,
            webhook_tokens=per_dialect("DLR_WEBHOOK_TOKEN_"),
            webhook_secret=Secret(secret) if secret else None,
            webhook_secrets=per_dialect("DLR_WEBHOOK_SECRET_"),
            public_url=public_url.rstrip("/") if public_url else None,
            web_concurrency=int(number("WEB_CONCURRENCY", 1, int, 1, 64)),
            log_level=choice("LOG_LEVEL", "info", LOG_LEVELS),
            log_format=choice("LOG_FORMAT", "json", LOG_FORMATS),
            max_body_bytes=int(number("DLR_MAX_BODY_BYTES", 1024 * 1024, int, 1024, 64 * 1024 * 1024)),
            max_batch=int(number("DLR_MAX_BATCH", 1000, int, 1, 100_000)),
            db_pool_size=int(number("DLR_DB_POOL_SIZE", 10, int, 1, 200)),
            db_timeout=number("DLR_DB_TIMEOUT", 5.0, float, 0.1, 600),
            db_prepared_statements=choice("DLR_DB_PREPARED_STATEMENTS", "on", ("on", "off")) == "on",
            group_commit=choice("DLR_GROUP_COMMIT", "on", ("on", "off")) == "on",
            writers=int(number("DLR_WRITERS", DEFAULT_WRITERS, int, 1, 32)),
            campaign_stats_ttl=number("DLR_CAMPAIGN_STATS_TTL", 5.0, float, 0, 3600),
            event_retention=duration("DLR_EVENT_RETENTION", "7d", 1),
            retention=duration("DLR_RETENTION", "90d", 0),
            delivery_timeout=number("DLR_DELIVERY_TIMEOUT", 15.0, float, 0.1, 300),
            delivery_schedule=schedule("DLR_DELIVERY_SCHEDULE"),
            subscription_disable_after=duration("DLR_SUBSCRIPTION_DISABLE_AFTER", "5d", 1),
            subscription_allow_private=flag("DLR_SUBSCRIPTION_ALLOW_PRIVATE", "false"),
            delivery_concurrency=int(number("DLR_DELIVERY_CONCURRENCY", DEFAULT_DELIVERY_CONCURRENCY, int, 1, 10_000)),
            delivery_concurrency_per_subscription=int(
                number(
                    "DLR_DELIVERY_CONCURRENCY_PER_SUBSCRIPTION",
                    DEFAULT_DELIVERY_CONCURRENCY_PER_SUBSCRIPTION,
                    int,
                    1,
                    1000,
                )
            ),
            subscription_key=Secret(subscription_key) if subscription_key else None,
            subscription_dispatch=cast(
                DispatchMode, choice("DLR_SUBSCRIPTION_DISPATCH", DEFAULT_DISPATCH, DISPATCH_MODES)
            ),
            task_batch=int(number("DLR_TASK_BATCH", DEFAULT_TASK_BATCH, int, 1, 100_000)),
            task_duty=number("DLR_TASK_DUTY", DEFAULT_SWEEP_DUTY, float, 0.05, 1.0),
            task_lease=number("DLR_TASK_LEASE", 30.0, float, 1, 3600),
            task_poll=number("DLR_TASK_POLL", 2.0, float, 0.05, 3600),
        )

    def token_for(self, dialect: str) -> Secret | None:
        return self.webhook_tokens.get(dialect, self.webhook_token)
