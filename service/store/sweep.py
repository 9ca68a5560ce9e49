"""The expiry sweep's SQL, generated from the engine's own expiry tables.

At a million overdue messages, pulling every row into Python to decide and sending it back costs more than
the sweep itself, so the resolution runs set-wise in one statement per batch. The statement is not a second
copy of the rules: its CASE expressions are written out from the engine's resolution tables
(`engine.resolution_tables`: the sweep's are `SEGMENT_EXPIRY` and `MESSAGE_EXPIRY`) and `statuses.FINAL`, and
tests/test_sweep.py checks that it resolves every open state exactly as `Ledger.expire` does (statuses,
segment times, final times, versions and history rows: the same change as the ledger's `ChangeEvent`). A
campaign's close (`close_batch`) is the same statement with its own target status, source and selection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import NamedTuple

from service.engine import CLOSING_STATUSES, FIRST_FINAL_SEGMENT, WITHOUT_SEGMENT_DETAIL, resolution_tables
from service.ledger import CLOSE as CLOSE_SOURCE
from service.ledger import SWEEP
from service.statuses import FINAL, Status
from service.store.messages import COLUMN_TYPES, COLUMNS, EVENT_COLUMNS, Connection


def _literal(status: Status) -> str:
    return f"'{status.value}'"


def _segment_case(column: str, table: Mapping[Status, Status]) -> str:
    whens = " ".join(f"WHEN {_literal(s)} THEN {_literal(e)}" for s, e in sorted(table.items()))
    return f"CASE {column} {whens} END"


_FIRST_FINAL_SEGMENT = f"""coalesce(
    (SELECT u.s FROM unnest(m.segment_statuses) WITH ORDINALITY AS u(s, n)
     WHERE u.s IN ({", ".join(_literal(s) for s in sorted(FINAL))}) ORDER BY u.n LIMIT 1),
    {_literal(WITHOUT_SEGMENT_DETAIL)})"""


def _message_case(table: Mapping[Status, Status | None]) -> str:
    return "CASE m.status {} END".format(
        " ".join(
            f"WHEN {_literal(s)} THEN {_FIRST_FINAL_SEGMENT if e is FIRST_FINAL_SEGMENT else _literal(e)}"
            for s, e in sorted(table.items())
        )
    )


_RETURNED = ", ".join(f"m.{column}" for column in COLUMN_TYPES)


def resolution_statement(due: str, target: Status, source: str) -> str:
    """One statement that resolves the open messages `due` selects (and locks) to `target` by the engine's
    tables, writing each change's history row and event-feed row; it answers the counts by (previous,
    status). `due` selects `id, status, segment_statuses` and may use $2 onwards; $1 is the time of the
    change. Atomic without a transaction block, and inside one it commits with what else the caller does."""
    segment_table, message_table = resolution_tables(target)
    segment_case = _segment_case("u.s", segment_table)
    return f"""
WITH due AS ({due}
), resolved AS (
UPDATE messages AS m SET
    status = {_message_case(message_table)},
    segment_statuses = ARRAY(
        SELECT {segment_case} FROM unnest(m.segment_statuses) WITH ORDINALITY AS u(s, n) ORDER BY u.n),
    segment_updated_at = ARRAY(
        SELECT CASE WHEN {segment_case} = u.s THEN u.t ELSE $1 END
        FROM unnest(m.segment_statuses, m.segment_updated_at) WITH ORDINALITY AS u(s, t, n) ORDER BY u.n),
    final_at = $1,
    updated_at = $1,
    version = m.version + 1
FROM due
WHERE m.id = due.id
RETURNING {_RETURNED}, due.status AS previous_status
), logged AS (
    -- Ledger.sweep_history's row, written here to spare a round trip per batch (the tests compare them).
    INSERT INTO history (message_id, status, received_at, source, applied)
    SELECT id, status, $1, '{source}', true FROM resolved
), fed AS (
    -- The change's row in the event feed, as write_back writes a report's (the tests compare them).
    INSERT INTO events ({EVENT_COLUMNS})
    SELECT '{source}', previous_status, $1, {COLUMNS} FROM resolved
)
SELECT previous_status, status, count(*) AS n FROM resolved GROUP BY previous_status, status
"""


# SKIP LOCKED: the sweeper never waits for a row, so it cannot deadlock with ingest or with other sweepers;
# a row another transaction holds is simply left for the next batch or the next pass.
RESOLVE = resolution_statement(
    """
    SELECT id, status, segment_statuses FROM messages
    WHERE final_at IS NULL AND expires_at <= $1
    ORDER BY expires_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED""",
    Status.EXPIRED,
    SWEEP,
)

# A closing campaign's batch: the ids its page read, those still open locked in id order (the order the write
# path locks in, so the two wait for each other and never deadlock). It waits for a row ingest holds rather
# than skipping it: ingest's transactions are short, and a skipped message would stay open.
CLOSE = {
    target: resolution_statement(
        """
    SELECT id, status, segment_statuses FROM messages
    WHERE id = ANY($2::text[]) AND final_at IS NULL
    ORDER BY id
    FOR UPDATE""",
        target,
        CLOSE_SOURCE,
    )
    for target in sorted(CLOSING_STATUSES)
}


class Resolved(NamedTuple):
    """How many messages a sweep batch moved from one status to another."""

    previous: Status
    status: Status
    n: int


async def sweep_batch(conn: Connection, now: datetime, limit: int) -> list[Resolved]:
    """Resolve up to `limit` overdue open messages in one statement (atomic without a transaction block).

    What comes back is only counted: at a million overdue messages, carrying every resolved row into Python
    would cost more than resolving it.
    """
    rows = await conn.fetch(RESOLVE, now, limit)
    return [Resolved(Status(row["previous_status"]), Status(row["status"]), row["n"]) for row in rows]


async def close_batch(conn: Connection, now: datetime, target: Status, ids: Sequence[str]) -> list[Resolved]:
    """Resolve those of `ids` still open to `target` (a campaign's close), as the sweep resolves; the caller's
    transaction holds them locked until it commits."""
    rows = await conn.fetch(CLOSE[target], now, list(ids))
    return [Resolved(Status(row["previous_status"]), Status(row["status"]), row["n"]) for row in rows]


async def next_transaction_id(conn: Connection) -> int:
    """One past the newest finished transaction's id, without taking one: how far writing has got. A sweep
    pass compares it across its batches to tell whether anyone else wrote meanwhile (`sweeper.DutyCycle`)."""
    return int(await conn.fetchval("SELECT pg_snapshot_xmax(pg_current_snapshot())::text"))


async def count_open(conn: Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM messages WHERE final_at IS NULL"))
