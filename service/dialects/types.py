"""What a dialect is, and what its parser returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

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


# How the sender wants to be answered: the {code, data, message} envelope, Jasmin's `ACK/Jasmin` body
# (for duplicates, unmappable values and quarantined payloads too, or it retries), or an empty 200.
Acknowledgement = Literal["envelope", "jasmin", "empty"]


@dataclass(frozen=True, slots=True)
class Dialect:
    """One sender's format: a pure parser, how to answer it, and its own signature scheme if it has one."""

    name: str
    parse: Callable[[RequestParts, datetime, int], Parsed]
    ack: Acknowledgement = "envelope"
    # (parts, secret) -> whether the sender's own signature holds; checked when
    # DLR_WEBHOOK_SECRET_<NAME> is set. Dialects without one get Standard Webhooks signatures instead.
    verify: Callable[[RequestParts, str], bool] | None = None  # (parts with .url set, secret)
