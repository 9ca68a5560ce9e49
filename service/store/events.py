"""The event feed's SQL: reading it gap-free, and pruning it.

Rows are written by the write-back of the change that makes them (store/messages.py, store/sweep.py), in
the same statement. A reader is served only rows whose writing transaction (`tx`) is below the oldest one
still running, in (tx, position) order: every row it has not been given yet sorts after its cursor, whatever
order the writers commit in (migrations/versions/0006_event_feed.py says why `position` alone is not enough).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import asyncpg

from service.ledger import MessageRecord
from service.statuses import Status
from service.store.messages import EVENT_COLUMNS, STATUS_BY_VALUE, Connection, record_from_row

_CURSOR = re.compile(r"^([0-9]{1,20})-([0-9]{1,19})$")


class Cursor(NamedTuple):
    """A place in the feed: the writing transaction and the position of the last event served."""

    tx: int
    position: int

    def __str__(self) -> str:
        return f"{self.tx}-{self.position}"

    @classmethod
    def parse(cls, text: str) -> Cursor | None:
        """The cursor `str()` wrote, or None for anything else."""
        match = _CURSOR.match(text)
        if match is None:
            return None
        tx, position = int(match.group(1)), int(match.group(2))
        if tx >= 2**63 or position >= 2**63:
            return None
        return cls(tx, position)


class FeedEvent(NamedTuple):
    """One stored event: where it stands in the feed, and the change it records."""

    cursor: Cursor  # also the event's id: the same event always has the same one
    message: MessageRecord  # as it was after the change
    previous_status: Status | None
    source: str
    at: datetime


class Page(NamedTuple):
    events: list[FeedEvent]
    next_cursor: Cursor


class CursorExpired(Exception):
    """The cursor is older than the oldest event kept: what came between is gone."""

    def __init__(self, oldest: Cursor) -> None:
        super().__init__(f"events before {oldest} are no longer kept")
        self.oldest = oldest


_HORIZON = "SELECT tx::text AS tx, position FROM event_horizon"
_PRESENT = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text"


async def oldest(conn: Connection) -> Cursor:
    """Where the feed starts: everything before this was pruned."""
    row = await conn.fetchrow(_HORIZON)
    return Cursor(int(row["tx"]), row["position"])


async def present(conn: Connection) -> Cursor:
    """A cursor before every event not yet committed (`after=latest`). Events of transactions that were
    running when it was taken sort after it, so none is skipped; a few committed just before may follow."""
    return Cursor(int(await conn.fetchval(_PRESENT)), 0)


async def read_page(
    conn: Connection,
    after: Cursor,
    limit: int,
    *,
    campaign: str | None = None,
    final: bool | None = None,
) -> Page:
    """Up to `limit` events after `after`, in feed order, among those every reader can already see."""
    horizon = await oldest(conn)
    if after < horizon:
        raise CursorExpired(horizon)
    clauses = ["(tx, position) > ($1::text::xid8, $2::bigint)", "tx < pg_snapshot_xmin(pg_current_snapshot())"]
    args: list[object] = [str(after.tx), after.position]
    if campaign is not None:
        args.append(campaign)
        clauses.append(f"campaign = ${len(args)}")
    if final is not None:
        clauses.append("final_at IS NOT NULL" if final else "final_at IS NULL")
    args.append(limit)
    rows = await conn.fetch(
        f"""
        SELECT tx::text AS tx_text, position, {EVENT_COLUMNS} FROM events
        WHERE {" AND ".join(clauses)}
        ORDER BY tx, position  -- the column, not its text: the primary key's order, read from the index
        LIMIT ${len(args)}
        """,
        *args,
    )
    events = [_event(row) for row in rows]
    return Page(events, events[-1].cursor if events else after)


def _event(row: asyncpg.Record) -> FeedEvent:
    """A row selected as `tx::text, position, EVENT_COLUMNS`."""
    return FeedEvent(
        Cursor(int(row[0]), row[1]),
        record_from_row(row[5:]),
        None if row[3] is None else STATUS_BY_VALUE[row[3]],
        row[2],
        row[4],
    )


async def events_at(conn: Connection, cursors: Sequence[Cursor]) -> dict[Cursor, FeedEvent]:
    """The events at these places of the feed that it still keeps."""
    rows = await conn.fetch(
        f"""
        SELECT tx::text AS tx_text, position, {EVENT_COLUMNS} FROM events
        WHERE (tx, position) IN (SELECT * FROM unnest($1::text[]::xid8[], $2::bigint[]))
        """,
        [str(c.tx) for c in cursors],
        [c.position for c in cursors],
    )
    return {event.cursor: event for event in map(_event, rows)}


async def prune(conn: Connection, before: datetime, limit: int) -> int:
    """Delete the start of the feed, at most `limit` events, up to the first one made at `before` or later,
    and move the horizon past them. The feed's order follows time closely (there is no index by time: it
    cost every event an index entry); deleting only a prefix keeps the rule simple: everything before the
    horizon is gone. SKIP LOCKED: replicas pruning at once take different rows.

    The start is looked for after the horizon, not from the index's first entry: those of the events deleted
    earlier in the pass stay in the index, dead, until a vacuum comes by, and each step would walk them all
    (retention's message steps did, and grew from 4 to 18 ms over a million rows)."""
    return int(
        await conn.fetchval(
            """
            WITH head AS (
                SELECT tx, position, at FROM events
                WHERE (tx, position) > (SELECT tx, position FROM event_horizon)
                ORDER BY tx, position LIMIT $2
            ), kept AS (
                SELECT tx, position FROM head WHERE at >= $1 ORDER BY tx, position LIMIT 1
            ), doomed AS (
                SELECT e.tx, e.position FROM events AS e JOIN head AS h USING (tx, position)
                WHERE NOT EXISTS (SELECT FROM kept AS k WHERE (h.tx, h.position) >= (k.tx, k.position))
                FOR UPDATE OF e SKIP LOCKED
            ), gone AS (
                DELETE FROM events AS e USING doomed AS d
                WHERE e.tx = d.tx AND e.position = d.position
                RETURNING e.tx, e.position
            ), last AS (
                SELECT tx, position FROM gone ORDER BY tx DESC, position DESC LIMIT 1
            ), moved AS (
                UPDATE event_horizon AS h SET tx = last.tx, position = last.position
                FROM last WHERE (last.tx, last.position) > (h.tx, h.position)
            )
            SELECT count(*) FROM gone
            """,
            before,
            limit,
        )
    )


async def oldest_time(conn: Connection) -> datetime | None:
    """When the first event of the feed was made: the oldest kept, give or take a batch's commit order."""
    return await conn.fetchval("SELECT at FROM events ORDER BY tx, position LIMIT 1")
