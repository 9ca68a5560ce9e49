"""What a dialect's parser returns."""

from __future__ import annotations

from dataclasses import dataclass

from service.payloads import RequestParts
from service.store import IncomingReport


@dataclass(frozen=True, slots=True)
class ItemError:
    """One report that failed validation, with what to keep in the quarantine to replay it."""

    index: int
    code: int  # 1 (bad value) or 11 (required field missing)
    errors: dict[str, str]
    parts: RequestParts
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class Parsed:
    items: list[IncomingReport | ItemError]
    batch: bool  # the sender sent a list: answer with per-item results (codes 0/98/99)
