"""The database's schema and connections: migrations (alembic) and the asyncpg pool."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from service import metrics


def migrations_dir() -> Path:
    """Beside the package in a wheel (`service/migrations`), else at the root of a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise RuntimeError("the migrations directory is missing from this installation")


def _alembic_config(dsn: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if dsn is not None:
        config.attributes["dsn"] = dsn
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def migrate(dsn: str) -> None:
    """Bring the schema to head. Safe from several processes at once (see migrations/env.py's lock).

    Synchronous on purpose: alembic's async env runs its own event loop, so call it before serving.
    """
    command.upgrade(_alembic_config(dsn), "head")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection goes back to the pool with: asyncpg has already rolled back any transaction left
    open. Its default reset (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`) is a round trip
    on every release, and the service leaves no session state to undo: no LISTEN, no session SET, no
    session advisory lock, no cursor WITH HOLD (the migration lock is taken on alembic's own connection)."""


# The group-commit writers run the same few statements for every batch, each finding rows by a key (the
# read, the write-back, the senders' event ids, the sequences): planned once per connection, not once per batch
# (planning the write-back afresh for every batch cost 9-15% of ingest's throughput, docs/PERFORMANCE.md). With
# sequential scans off, a plan made while the tables were empty still takes their indexes once they have grown:
# PostgreSQL 15 plans every one of those statements as a sequential scan of an empty table otherwise.
WRITER_SETTINGS = {
    "application_name": "dlr-tracker writer",
    "plan_cache_mode": "force_generic_plan",
    "enable_seqscan": "off",
}


async def create_pool(
    dsn: str, size: int, seconds: float, *, prepared_statements: bool = True, writers: bool = False
) -> asyncpg.Pool:
    """The pool. Without `prepared_statements` (DLR_DB_PREPARED_STATEMENTS=off), for PgBouncer in transaction
    mode: asyncpg keeps no named statements (a named statement lives on one server connection, and the next
    transaction may get another: "prepared statement ... does not exist" or "already exists"), and no setting
    is sent at connect (PgBouncer refuses a startup parameter it does not know, and would not keep it on every
    server connection anyway). Every statement is then planned afresh with its parameters: a custom plan, which
    is what `plan_cache_mode` asks for otherwise.

    With `writers`, the group-commit writers' own pool (`WRITER_SETTINGS`)."""
    settings = {"application_name": "dlr-tracker"}
    if prepared_statements:
        # A generic plan made while `messages` was small seq-scans it once it has grown (docs/PERFORMANCE.md).
        settings.update(WRITER_SETTINGS if writers else {"plan_cache_mode": "force_custom_plan"})
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=size,
        reset=_keep_session,
        # A statement that runs longer than this is cancelled, so a stuck database cannot pin requests.
        command_timeout=seconds,
        timeout=seconds,
        statement_cache_size=100 if prepared_statements else 0,
        server_settings=settings,
    )
    assert pool is not None
    return pool


async def watch_pool(pool: asyncpg.Pool, every: float = 2.0) -> None:
    """Keep the pool gauges current (a gauge set at scrape time would not work with several workers)."""
    while True:
        size, idle = pool.get_size(), pool.get_idle_size()
        metrics.DB_POOL.labels("in_use").set(size - idle)
        metrics.DB_POOL.labels("idle").set(idle)
        metrics.DB_POOL.labels("max").set(pool.get_max_size())
        await asyncio.sleep(every)
