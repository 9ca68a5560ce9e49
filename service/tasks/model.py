"""What a task is: its kinds, its states and the parameters each kind takes. Pure: no I/O, no clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from service import fields
from service.dialects import DIALECTS
from service.engine import CLOSING_STATUSES
from service.errors import BadPayload, PayloadLimit
from service.fields import FieldError


class Kind(StrEnum):
    EXPORT = "export"
    CLOSE = "close"
    REPLAY = "replay"


class State(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


# A task in one of these may still be cancelled; the others are where a task ends, and never change.
UNFINISHED = frozenset({State.QUEUED, State.RUNNING})


class ExportFormat(StrEnum):
    CSV = "csv"
    NDJSON = "ndjson"


MEDIA_TYPES = {ExportFormat.CSV: "text/csv; charset=utf-8", ExportFormat.NDJSON: "application/x-ndjson"}


def _choice(value: Any, allowed: list[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise FieldError(f"must be one of {', '.join(allowed)}")
    return value


def _read(body: Any, known: tuple[str, ...], read: dict[str, tuple[Any, bool]]) -> dict[str, Any]:
    """The body's fields by their readers ((reader, required) by name), or the refusal (code 1 for a bad or
    unknown field, 11 for a missing one). A field the operation does not read is refused, not ignored: a
    misspelt `satus` must not close a campaign with the default."""
    if not isinstance(body, dict):
        raise BadPayload({"body": "must be a JSON object"})
    f = fields.FieldErrors()
    for name in body:
        if name not in known:
            f.add(str(name)[:64], f"not a field of this operation; it reads {', '.join(known) or 'none'}")
    out = {name: f.read(body, name, reader, required=required) for name, (reader, required) in read.items()}
    if f:
        raise f.refusal()
    return {name: value for name, value in out.items() if value is not None}


def export_params(campaign: str, body: Any) -> dict[str, Any]:
    formats = [f.value for f in ExportFormat]
    read = _read(body, ("format",), {"format": (lambda v: _choice(v, formats), True)})
    return {"campaign": campaign, **read}


def close_params(campaign: str, body: Any) -> dict[str, Any]:
    statuses = sorted(s.value for s in CLOSING_STATUSES)
    read = _read(body, ("status",), {"status": (lambda v: _choice(v, statuses), True)})
    return {"campaign": campaign, **read}


def _dialect(value: Any) -> str:
    # A misspelt dialect would match nothing and report success: refused instead.
    return _choice(value, sorted(DIALECTS))


def replay_params(body: Any) -> dict[str, Any]:
    read = _read(
        body,
        ("dialect", "since", "until"),
        {"dialect": (_dialect, False), "since": (fields.timestamp, False), "until": (fields.timestamp, False)},
    )
    if "since" in read and "until" in read and read["since"] > read["until"]:
        raise PayloadLimit({"until": "before since"}, "bad time range: until is before since")
    # Kept as text in the task's jsonb parameters, to the microsecond.
    return {name: value.isoformat() if isinstance(value, datetime) else value for name, value in read.items()}


@dataclass(frozen=True, slots=True)
class Batch:
    """What one batch of a task did, committed with its progress: where the next batch resumes (`position`,
    the kind's own JSON, running totals included), how many units it went through, whether the task is done,
    and what to count once the transaction has committed (never before: a rolled-back batch counted nothing)."""

    position: dict[str, Any]
    done: int
    finished: bool
    count: Callable[[], None] = field(default=lambda: None)
    changed: bool = False  # a message changed: wake this process's feed readers
