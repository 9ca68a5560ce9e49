"""What arrives to be applied: one sender's report, one registration. Plain data, no I/O.

Every dialect builds `IncomingReport`s at the edge and the registration API builds `Registration`s; the
ledger (`service/ledger.py`) decides what each does to its message, and the store writes the result.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from service.engine import Report


class IncomingReport(NamedTuple):
    """One canonical report, as a dialect parsed it, waiting to be applied."""

    message_id: str
    report: Report
    source: str
    received_at: datetime
    event_time: datetime | None = None
    recipient: str | None = None
    campaign: str | None = None
    error: str | None = None
    # The sender's id of this event (Mobizon's eventId, a Standard Webhooks webhook-id): one sender's event
    # is applied once, whatever message a replay of it names.
    event_id: str | None = None
    raw_status: str | None = None
    # The sender's own order of its callbacks for one message (Plivo's Sequence): one below a number already
    # seen from this sender is stale, the same number again a duplicate, whatever its status.
    sequence: int | None = None
    # The id may be zero-padded, or not, where the registration was the other way round (SMPP receipts).
    match_zero_padded: bool = False


class Registration(NamedTuple):
    """A sent message announced by the platform (`POST /messages`)."""

    message_id: str
    received_at: datetime
    recipient: str | None = None
    campaign: str | None = None
    segments: int | None = None
    sent_at: datetime | None = None
    text: str | None = None  # what was sent, kept for whoever looks the message up
