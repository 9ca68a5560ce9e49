"""Applying sender reports: read the messages, let the ledger decide, write back. Nothing else."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, nullcontext

from service.ledger import Ledger, ReportDecision, match_zero_padded
from service.reports import IncomingReport
from service.store.messages import Connection, read, retrying_races, write_back


async def apply_reports(conn: Connection, reports: Sequence[IncomingReport], *, lifetime: int) -> list[ReportDecision]:
    """Apply reports in arrival order, in one transaction; one decision per report, in the same order.

    One report is simply a batch of one: there is no separate single-report path.
    """
    return await retrying_races(conn, lambda lock: _apply_batch(conn, reports, lifetime, lock))


async def _apply_batch(
    conn: Connection, reports: Sequence[IncomingReport], lifetime: int, lock: bool
) -> list[ReportDecision]:
    async with transaction(conn, lock):
        reports = await _match_zero_padded(conn, reports)
        found = await read(conn, {r.message_id for r in reports}, lock=lock)
        ledger = Ledger(found.records, lifetime)
        await _load_seen_events(conn, ledger, reports)
        await _load_sequences(conn, ledger, reports)
        decisions = [ledger.apply_report(r) for r in reports]
        await write_back(conn, ledger, found.versions)
    return decisions


def transaction(conn: Connection, lock: bool) -> AbstractAsyncContextManager[object]:
    """A transaction to hold the locks in, or none: unlocked, the write-back is one statement, atomic alone."""
    return conn.transaction() if lock else nullcontext()


async def _match_zero_padded(conn: Connection, reports: Sequence[IncomingReport]) -> Sequence[IncomingReport]:
    wanted = {r.message_id.lstrip("0") for r in reports if r.match_zero_padded}
    if not wanted:
        return reports
    # An id without leading zeros is its own trimmed form (the primary key finds it); only ids starting with a
    # zero are in the trimmed index (migration 0007).
    rows = await conn.fetch(
        """
        SELECT id FROM messages WHERE id = ANY($1::text[])
        UNION SELECT id FROM messages WHERE id LIKE '0%' AND ltrim(id, '0') = ANY($1::text[])
        """,
        sorted(wanted),
    )
    return match_zero_padded(reports, (row["id"] for row in rows))


async def _load_seen_events(conn: Connection, ledger: Ledger, reports: Sequence[IncomingReport]) -> None:
    keys = {(r.source, r.event_id) for r in reports if r.event_id is not None}
    if not keys:
        return
    sources, ids = zip(*sorted(keys), strict=True)
    rows = await conn.fetch(
        """
        SELECT source, event_id FROM sender_events
        WHERE (source, event_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
        """,
        list(sources),
        list(ids),
    )
    ledger.seen_events.update((row["source"], row["event_id"]) for row in rows)


async def _load_sequences(conn: Connection, ledger: Ledger, reports: Sequence[IncomingReport]) -> None:
    with_sequence = sorted({r.message_id for r in reports if r.sequence is not None})
    if not with_sequence:
        return
    rows = await conn.fetch(
        """
        SELECT message_id, source, max(sequence) AS last FROM history
        WHERE message_id = ANY($1::text[]) AND sequence IS NOT NULL GROUP BY message_id, source
        """,
        with_sequence,
    )
    ledger.last_sequences.update({(row["message_id"], row["source"]): row["last"] for row in rows})
