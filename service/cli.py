"""The `dlr-tracker` command: `serve` (migrate, then serve), `migrate` and `sweep` (one pass)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from service import database, logs, metrics
from service.config import Settings, SettingsError
from service.embedded import DataDirInUse, EmbeddedPostgres
from service.statuses import Status
from service.sweeper import ExpirySweeper

logger = logging.getLogger("dlr_tracker")

GRACEFUL_SHUTDOWN_SECONDS = 30


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """`DATABASE_URL` when set; otherwise the embedded server, for exactly as long as the block runs."""
    if settings.database_url is not None:
        yield settings.database_url.reveal()
        return
    with EmbeddedPostgres(settings.data_dir) as dsn:
        yield dsn


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    # uvicorn restores the previous handler and re-raises the signal once it has shut down; turning it
    # into SystemExit lets the embedded server be stopped on the way out instead of being orphaned.
    raise SystemExit(0)


def serve(settings: Settings) -> None:
    import uvicorn

    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGINT, _exit_on_signal)
    if settings.web_concurrency > 1:
        # Each worker keeps its metrics in files here; /metrics in any worker adds them all up.
        # Set before the workers start: prometheus_client picks its storage when it is imported.
        given = os.environ.get(metrics.MULTIPROC_DIR)
        shared = Path(given) if given else Path(tempfile.mkdtemp(prefix="dlr-tracker-metrics-"))
        metrics.prepare_multiprocess_dir(shared)
        os.environ[metrics.MULTIPROC_DIR] = str(shared)
    with database_url(settings) as dsn:
        database.migrate(dsn)
        # Workers build their own app from the environment; they must find the same database.
        os.environ["DATABASE_URL"] = dsn
        uvicorn.run(
            "service.app:app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.web_concurrency,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )


def migrate(settings: Settings) -> None:
    with database_url(settings) as dsn:
        database.migrate(dsn)
    print(f"schema at {database.head_revision()}")


def sweep(settings: Settings) -> None:
    import asyncio

    async def one_pass(dsn: str) -> Counter[Status]:
        pool = await database.create_pool(dsn, 2, settings.db_timeout)
        try:
            sweeper = ExpirySweeper(
                pool,
                interval=settings.sweep_interval,
                batch_size=settings.sweep_batch,
                duty=settings.sweep_duty,
                timeout=settings.db_timeout,
            )
            return await sweeper.run_pass()
        finally:
            await pool.close()

    with database_url(settings) as dsn:
        database.migrate(dsn)
        resolved = asyncio.run(one_pass(dsn))
    print(f"resolved {sum(resolved.values())} messages")
    for status, count in sorted(resolved.items()):
        print(f"  {status.value}\t{count}")


COMMANDS = {"serve": serve, "migrate": migrate, "sweep": sweep}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dlr-tracker", description="Delivery-report tracking for SMS platforms.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="apply migrations, then serve HTTP on HOST:PORT")
    sub.add_parser("migrate", help="bring the database schema to the latest revision")
    sub.add_parser("sweep", help="run one expiry sweep pass and print what it resolved, by outcome")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"dlr-tracker: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    try:
        COMMANDS[args.command](settings)
    except DataDirInUse as exc:
        logger.error("%s", exc)
        print(f"dlr-tracker: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
