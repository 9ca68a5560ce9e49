"""Behind a transaction-mode pooler (PgBouncer before 1.21): DLR_DB_PREPARED_STATEMENTS=off."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from service import database, store
from service.config import Settings
from service.engine import Report
from service.reports import IncomingReport
from service.statuses import Status


async def _session_after_work(dsn: str, prepared_statements: bool) -> tuple[int, str]:
    """Apply a report, read it back and sweep on one pooled connection; then what that session holds:
    its named prepared statements, and its plan_cache_mode."""
    pool = await database.create_pool(dsn, 1, 10.0, prepared_statements=prepared_statements)
    try:
        async with pool.acquire() as conn:
            report = IncomingReport("p1", Report(Status.ACCEPTD), "generic", datetime.now(UTC))
            await store.apply_reports(conn, [report], lifetime=86400)
            assert (await store.get_message(conn, "p1")) is not None
            await store.sweep_batch(conn, datetime.now(UTC), 250)
            named = int(await conn.fetchval("SELECT count(*) FROM pg_prepared_statements"))
            return named, str(await conn.fetchval("SHOW plan_cache_mode"))
    finally:
        await pool.close()


@pytest.mark.parametrize(
    ("prepared_statements", "keeps_statements", "plan_cache_mode"),
    [(True, True, "force_custom_plan"), (False, False, "auto")],
)
def test_without_prepared_statements_a_session_keeps_nothing_between_transactions(
    db: str, prepared_statements: bool, keeps_statements: bool, plan_cache_mode: str
) -> None:
    """Off, the service leaves no named prepared statement on a server connection (PgBouncer in transaction
    mode hands the next transaction another one, where it is missing, or where another client's statement of
    the same name exists) and sends no setting at connect (PgBouncer 1.18 refuses `plan_cache_mode` as an
    unsupported startup parameter). On, as shipped: statements are kept, and plans are custom."""
    named, mode = asyncio.run(_session_after_work(db, prepared_statements))
    assert (named > 0) is keeps_statements
    assert mode == plan_cache_mode


def test_prepared_statements_setting() -> None:
    """DLR_DB_PREPARED_STATEMENTS is on by default, `off` turns it off, anything else is a named error."""
    assert Settings.from_env({}, env_file=None).db_prepared_statements is True
    assert Settings.from_env({"DLR_DB_PREPARED_STATEMENTS": "off"}, env_file=None).db_prepared_statements is False
    with pytest.raises(ValueError, match="DLR_DB_PREPARED_STATEMENTS"):
        Settings.from_env({"DLR_DB_PREPARED_STATEMENTS": "maybe"}, env_file=None)


async def _scans(dsn: str) -> dict[str, tuple[int, int]]:
    """(sequential scans, index scans) so far of the tables a writer reads, as the statistics have them."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT relname, seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables"
            " WHERE relname IN ('messages', 'history', 'sender_events')"
        )
        return {row[0]: (row[1], row[2]) for row in rows}
    finally:
        await conn.close()


async def _writer_on_a_growing_table(dsn: str) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]], str]:
    """One writers' session: a batch on the empty tables (its plans are made then), the messages grown to
    20,000 through the same session, then batches reading and changing them and a sender's event ids."""

    def report(message_id: str, status: Status, event_id: str | None = None) -> IncomingReport:
        return IncomingReport(message_id, Report(status), "generic", datetime.now(UTC), event_id=event_id)

    pool = await database.create_pool(dsn, 1, 30.0, writers=True)
    try:
        async with pool.acquire() as conn:
            await store.apply_reports(conn, [report("first", Status.ACCEPTD, "e0")], lifetime=86400)
            for start in range(0, 20_000, 1_000):
                batch = [report(f"m{n}", Status.ACCEPTD) for n in range(start, start + 1_000)]
                await store.apply_reports(conn, batch, lifetime=86400)
            await conn.execute("SELECT pg_stat_force_next_flush()")
            await conn.execute("SELECT 1")  # the flush comes at a transaction's end
            before = await _scans(dsn)
            for n in range(0, 20_000, 2_000):
                batch = [report(f"m{n + i}", Status.DELIVRD, f"e{n + i}") for i in range(100)]
                await store.apply_reports(conn, batch, lifetime=86400)
            await conn.execute("SELECT pg_stat_force_next_flush()")
            await conn.execute("SELECT 1")
            mode = str(await conn.fetchval("SHOW plan_cache_mode"))
        return before, await _scans(dsn), mode
    finally:
        await pool.close()


def test_the_writers_plans_made_on_empty_tables_still_take_the_indexes_once_they_have_grown(
    fresh_database: object,
) -> None:
    """The group-commit writers plan their statements once per connection (a generic plan), however large the
    tables grow after that: a plan made while they were empty must not scan them whole for every batch, as
    PostgreSQL 15 plans it unless told not to."""
    dsn = fresh_database()  # type: ignore[operator]
    database.migrate(dsn)
    before, after, mode = asyncio.run(_writer_on_a_growing_table(dsn))
    assert mode == "force_generic_plan"
    for table in ("messages", "history", "sender_events"):
        assert after[table][0] == before[table][0], f"{table} scanned whole: {before[table]} -> {after[table]}"
    assert after["messages"][1] > before["messages"][1]
