"""All SQL the service runs, by aggregate: each module locks, loads and writes; the ledger decides.

`messages` (locking and writing back message rows), `reports`, `registrations`, `sweep`, `queries`,
`quarantine` and `events` (the feed: read as `store.events`). The names callers use are gathered here.
"""

from service.store.messages import Connection
from service.store.quarantine import RawRequest, drop_quarantined, list_quarantine, quarantine, take_quarantined
from service.store.queries import (
    MessageFilter,
    campaign_stats,
    delivery_histogram,
    get_history,
    get_message,
    get_messages,
    list_messages,
    schema_version,
)
from service.store.registrations import register_messages
from service.store.reports import apply_reports
from service.store.sweep import close_batch, count_open, next_transaction_id, sweep_batch

__all__ = [
    "Connection",
    "MessageFilter",
    "RawRequest",
    "apply_reports",
    "campaign_stats",
    "close_batch",
    "count_open",
    "delivery_histogram",
    "drop_quarantined",
    "get_history",
    "get_message",
    "get_messages",
    "list_messages",
    "list_quarantine",
    "next_transaction_id",
    "quarantine",
    "register_messages",
    "schema_version",
    "sweep_batch",
    "take_quarantined",
]
