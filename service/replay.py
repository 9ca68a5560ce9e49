"""Replaying a quarantined payload: parse it again and, when every report in it is valid, apply them and let
it go. One function for `POST /quarantine/{id}/replay` and for the mass replay task, so that both replay alike.
"""

from __future__ import annotations

from datetime import UTC, datetime

from service import store
from service.dialects import DIALECTS, ItemError
from service.errors import BadPayload, PayloadLimit
from service.ledger import ReportDecision
from service.payloads import BatchTooLarge, RequestParts
from service.reports import IncomingReport
from service.store import Connection


async def replay_quarantined(
    conn: Connection, item_id: int, *, lifetime: int, max_batch: int
) -> list[ReportDecision] | None:
    """Replay one quarantined payload inside the caller's transaction: its decisions, or None when it is not
    (or no longer) in the quarantine. A payload that still fails raises its refusal (a `RefusedPayload`):
    the caller rolls back, and it stays in the quarantine as it was.

    The apply and the removal share the caller's transaction: a replay is never half-done.
    """
    row = await store.take_quarantined(conn, item_id)
    if row is None:
        return None
    dialect = DIALECTS.get(row["dialect"])
    if dialect is None:  # kept by a version that had it
        raise BadPayload({"dialect": f"unknown dialect {row['dialect'][:64]!r}"})
    parts = RequestParts(row["method"], row["content_type"], bytes(row["query"]), bytes(row["body"]))
    try:
        parsed = dialect.parse(parts, datetime.now(UTC), max_batch)
    except BatchTooLarge as exc:
        raise PayloadLimit(exc.errors) from None  # "limits broken: batch", as a replay has always said
    failed = [i for i in parsed.items if isinstance(i, ItemError)]
    if failed:
        raise failed[0].kind({f"item {i.index}.{k}": v for i in failed for k, v in i.errors.items()})
    reports = [i for i in parsed.items if isinstance(i, IncomingReport)]
    decisions = await store.apply_reports(conn, reports, lifetime=lifetime)
    await store.drop_quarantined(conn, item_id)
    return decisions
