"""What a subscription asks for: its filter, read from a request and matched against feed events. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service import fields
from service.statuses import Status
from service.store.events import FeedEvent

MAX_CAMPAIGNS = 20
FILTER_KEYS = ("final", "statuses", "campaigns")


@dataclass(frozen=True, slots=True)
class Filter:
    """Every field None matches everything; each field set narrows (all of them must match)."""

    final: bool | None = None
    statuses: frozenset[Status] | None = None
    campaigns: frozenset[str] | None = None

    def matches(self, event: FeedEvent) -> bool:
        message = event.message
        if self.final is not None and message.final != self.final:
            return False
        if self.statuses is not None and message.status not in self.statuses:
            return False
        return self.campaigns is None or message.campaign in self.campaigns

    def to_json(self) -> dict[str, Any]:
        """As stored and shown: only the fields set, lists sorted (a stable answer for the same filter)."""
        out: dict[str, Any] = {}
        if self.final is not None:
            out["final"] = self.final
        if self.statuses is not None:
            out["statuses"] = sorted(self.statuses)
        if self.campaigns is not None:
            out["campaigns"] = sorted(self.campaigns)
        return out


def read_filter(value: Any) -> Filter:
    """A filter as a client sends it (`{"final"?, "statuses"?, "campaigns"?}`; null or {} for everything), or
    FieldError naming what is wrong. Unknown keys are refused: a misspelt `status` would match everything."""
    if value is None:
        return Filter()
    if not isinstance(value, dict):
        raise fields.FieldError("must be an object with final, statuses and/or campaigns")
    unknown = sorted(set(value) - set(FILTER_KEYS))
    if unknown:
        raise fields.FieldError(f"unknown key {unknown[0]!r}; a filter has {', '.join(FILTER_KEYS)}")
    final = value.get("final")
    if final is not None and not isinstance(final, bool):
        raise fields.FieldError("final must be true or false")
    return Filter(final, _statuses(value.get("statuses")), _campaigns(value.get("campaigns")))


def _statuses(value: Any) -> frozenset[Status] | None:
    if value is None:
        return None
    known = ", ".join(Status)
    if not isinstance(value, list) or not value:
        raise fields.FieldError(f"statuses must be a non-empty list of {known}")
    found = set()
    for item in value:
        if not isinstance(item, str) or item not in Status.__members__:
            raise fields.FieldError(f"statuses: unknown status {str(item)[:20]!r}; the statuses are {known}")
        found.add(Status(item))
    return frozenset(found)


def _campaigns(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_CAMPAIGNS:
        raise fields.FieldError(f"campaigns must be a list of 1 to {MAX_CAMPAIGNS} campaign names")
    found = set()
    for item in value:
        try:
            name = fields.text(item) if isinstance(item, str) else None
        except fields.FieldError as exc:
            raise fields.FieldError(f"campaigns: {exc}") from None
        if name is None:
            raise fields.FieldError("campaigns: each must be a non-empty string")
        found.add(name)
    return frozenset(found)


def filter_from_json(stored: dict[str, Any]) -> Filter:
    """A filter as stored by `to_json` (trusted: written by this code)."""
    return read_filter(stored)
