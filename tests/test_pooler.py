"""Behind a transaction-mode pooler (PgBouncer before 1.21): DLR_DB_PREPARED_STATEMENTS=off."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

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
