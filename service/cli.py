"""The `dlr-tracker` command: `serve` (migrate, then serve), `dispatch` (deliveries alone), `migrate` and `sweep`
(one pass); `events`, and
`export`, `close` and `replay` (`service/tasks/client.py`), through a running service's HTTP API."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from service.dispatch_process import DispatchProcess
from service.embedded import DataDirInUse, EmbeddedPostgres
from service.statuses import Status
from service.subscriptions.dispatch import SubscriptionDispatcher
from service.sweeper import ExpirySweeper
from service.tasks import client as task_commands

logger = logging.getLogger("dlr_tracker")

GRACEFUL_SHUTDOWN_SECONDS = 30
DISPATCH_PARENT = "DLR_DISPATCH_PARENT"  # the pid of the `serve` that started a dispatcher: it stops with it
DISPATCH_NICENESS = 10


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """`DATABASE_URL` when set; otherwise the embedded server, for exactly as long as the block runs."""
    if settings.database_url is not None:
        yield settings.database_url.reveal()
        return
    with EmbeddedPostgres(settings.data_dir, settings.embedded_shared_buffers_mb) as dsn:
        yield dsn


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    # uvicorn restores the previous handler and re-raises the signal once it has shut down; turning it
    # into SystemExit lets the embedded server be stopped on the way out instead of being orphaned.
    raise SystemExit(0)


def serve(settings: Settings) -> None:
    import uvicorn

    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGINT, _exit_on_signal)
    own_dispatcher = settings.subscription_dispatch == "process"
    if settings.web_concurrency > 1 or own_dispatcher:
        # Each worker keeps its metrics in files here; /metrics in any worker adds them all up.
        # Set before the workers start: prometheus_client picks its storage when it is imported.
        given = os.environ.get(metrics.MULTIPROC_DIR)
        shared = Path(given) if given else Path(tempfile.mkdtemp(prefix="dlr-tracker-metrics-"))
        metrics.prepare_multiprocess_dir(shared)
        os.environ[metrics.MULTIPROC_DIR] = str(shared)
    with database_url(settings) as dsn:
        database.migrate(dsn)
        # Workers build their own app from the environment; they must find the same database (the embedded
        # server's size is this process's business: beside DATABASE_URL the setting would stop their start).
        os.environ["DATABASE_URL"] = dsn
        os.environ.pop("DLR_EMBEDDED_SHARED_BUFFERS", None)
        dispatcher = None
        if own_dispatcher:
            # Deliveries in a process of their own: their HTTP calls and signing never share the GIL with ingest.
            child_env = {**os.environ, "DLR_SUBSCRIPTION_DISPATCH": "on", DISPATCH_PARENT: str(os.getpid())}
            dispatcher = DispatchProcess(child_env)
            dispatcher.start()
            os.environ["DLR_SUBSCRIPTION_DISPATCH"] = "off"  # the workers read their settings from here
        try:
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
        finally:
            if dispatcher is not None:
                dispatcher.stop(GRACEFUL_SHUTDOWN_SECONDS)


def dispatch(settings: Settings) -> None:
    """Deliver subscriptions' events, with no HTTP API, until SIGTERM or SIGINT: beside serving processes run
    with DLR_SUBSCRIPTION_DISPATCH=off, or started by `serve` itself (=process). Its metrics go to the
    shared directory when `serve` started it, else it answers /metrics on HOST:PORT itself."""
    import uvloop
    from prometheus_client import start_http_server

    async def run(dsn: str) -> None:
        pool = await database.create_pool(
            dsn, settings.db_pool_size, settings.db_timeout, prepared_statements=settings.db_prepared_statements
        )
        dispatcher = SubscriptionDispatcher(pool, settings)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        parent = os.environ.get(DISPATCH_PARENT)
        dispatcher.start()
        logger.info("delivering subscriptions' events")
        try:
            while not stopping.is_set():
                if parent is not None and os.getppid() != int(parent):
                    logger.warning("the serve process that started this dispatcher is gone: stopping")
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1):
                        await stopping.wait()
        finally:
            await dispatcher.stop()
            await pool.close()
            metrics.worker_stopped()

    if os.environ.get(DISPATCH_PARENT):
        # Beside `serve`'s workers on the same cores: an acknowledged report matters more than a delivery made a
        # moment sooner, so under a flat-out load deliveries take the CPU ingest leaves and catch up after.
        os.nice(DISPATCH_NICENESS)
    if metrics.MULTIPROC_DIR not in os.environ:
        start_http_server(settings.port, settings.host, registry=metrics.registry())
    with database_url(settings) as dsn:
        database.migrate(dsn)
        uvloop.run(run(dsn))


def migrate(settings: Settings) -> None:
    with database_url(settings) as dsn:
        database.migrate(dsn)
    print(f"schema at {database.head_revision()}")


def sweep(settings: Settings) -> None:
    async def one_pass(dsn: str) -> Counter[Status]:
        pool = await database.create_pool(
            dsn, 2, settings.db_timeout, prepared_statements=settings.db_prepared_statements
        )
        try:
            sweeper = ExpirySweeper(
                pool,
                interval=settings.sweep_interval,
                batch_size=settings.sweep_batch,
                duty=settings.sweep_duty,
                timeout=settings.db_timeout,
                event_retention=settings.event_retention,
                retention=settings.retention,
                lifetime=settings.lifetime,
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


def events(settings: Settings, args: argparse.Namespace) -> int:
    """Print the event feed as JSON lines, read from a running service (`DLR_URL`, else HOST:PORT) with
    `DLR_API_KEY` when it asks for one: from the oldest event kept, or after `--after` (an event's id or a
    next_cursor); with `--follow`, long-polling for new ones until Ctrl-C."""
    import json
    import urllib.error
    import urllib.request
    from urllib.parse import urlencode

    base = (args.url or os.environ.get("DLR_URL") or f"http://{settings.host}:{settings.port}").rstrip("/")
    if not base.startswith(("http://", "https://")):
        print(f"dlr-tracker: the service URL must start with http:// or https://, got {base!r}", file=sys.stderr)
        return 2
    key = os.environ.get("DLR_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    wait = 30 if args.follow else 0
    after = args.after
    try:
        while True:
            query = {"limit": "1000", "wait": str(wait)}
            query |= {"after": after} if after else {}
            query |= {"campaign": args.campaign} if args.campaign else {}
            query |= {"final": "true"} if args.final else {}
            # S310: the scheme was checked above (http or https only).
            request = urllib.request.Request(f"{base}/events?{urlencode(query)}", headers=headers)  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=wait + 30) as response:  # noqa: S310
                    page = json.load(response)["data"]
            except urllib.error.HTTPError as exc:
                answer = json.loads(exc.read() or b"{}")
                print(f"dlr-tracker: {exc.code} {answer.get('message', exc.reason)}", file=sys.stderr)
                return 1
            except (urllib.error.URLError, OSError) as exc:
                print(f"dlr-tracker: cannot read {base}/events: {exc}", file=sys.stderr)
                return 1
            for item in page["items"]:
                print(json.dumps(item, ensure_ascii=False, separators=(",", ":")), flush=True)
            after = page["next_cursor"]
            if not page["items"] and not args.follow:
                return 0
    except KeyboardInterrupt:
        return 0  # Ctrl-C: every line printed so far is whole; resume with --after the last id
    except BrokenPipeError:
        return 0  # the reader went away (| head)


COMMANDS = {"serve": serve, "dispatch": dispatch, "migrate": migrate, "sweep": sweep}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dlr-tracker", description="Delivery-report tracking for SMS platforms.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="apply migrations, then serve HTTP on HOST:PORT")
    sub.add_parser("dispatch", help="deliver subscriptions' events (no HTTP API; /metrics on HOST:PORT)")
    sub.add_parser("migrate", help="bring the database schema to the latest revision")
    sub.add_parser("sweep", help="run one expiry sweep pass and print what it resolved, by outcome")
    feed = sub.add_parser("events", help="print the event feed of a running service as JSON lines")
    feed.add_argument("--follow", action="store_true", help="keep waiting for new events (Ctrl-C ends)")
    feed.add_argument("--after", help="start after this event id or cursor (default: the oldest kept)")
    feed.add_argument("--campaign", help="only this campaign's events")
    feed.add_argument("--final", action="store_true", help="only events that made a message final")
    feed.add_argument("--url", help="the service's base URL (default: DLR_URL, else http://HOST:PORT)")
    task_commands.add_commands(sub)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"dlr-tracker: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    if args.command == "events":
        return events(settings, args)
    if args.command in task_commands.COMMANDS:
        return task_commands.main(settings, args)
    try:
        COMMANDS[args.command](settings)
    except DataDirInUse as exc:
        logger.error("%s", exc)
        print(f"dlr-tracker: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
