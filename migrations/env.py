"""Alembic environment: async, over asyncpg, serialised by an advisory lock.

The DSN comes from `config.attributes["dsn"]` when the service migrates itself, else from
`DATABASE_URL` (plain `alembic upgrade head` from the repository root).
"""

from __future__ import annotations

import asyncio
import os
import uuid

import asyncpg
from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

# Any constant works; it only has to be the same in every process that migrates this database.
MIGRATION_LOCK = 0x646C72_6D6967  # "dlr" "mig"


def _dsn() -> str:
    dsn = context.config.attributes.get("dsn") or os.environ.get("DATABASE_URL")
    if not dsn:
        raise SystemExit("no database: set DATABASE_URL (or run `dlr-tracker migrate`, which starts the embedded one)")
    return str(dsn)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, transaction_per_migration=False)
    with context.begin_transaction():
        # Several replicas may start at once: the first to take the lock migrates, the others wait and
        # then find the schema already at head. The lock ends with the migration transaction.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


async def _run_async() -> None:
    dsn = _dsn()
    # async_creator lets asyncpg parse the DSN itself (Unix-socket `?host=` included) instead of
    # SQLAlchemy's URL rules. No statement cache and a new name for every prepared statement: through PgBouncer
    # in transaction mode the server connection is shared with other clients, whose `__asyncpg_stmt_1__` may
    # already be there (a migration runs rarely; its statements cost nothing to prepare again).
    engine = create_async_engine(
        "postgresql+asyncpg://",
        async_creator=lambda: asyncpg.connect(dsn, statement_cache_size=0),
        connect_args={
            "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": lambda: f"__alembic_{uuid.uuid4().hex}__",
        },
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: the revisions are hand-written SQL")
asyncio.run(_run_async())
