"""Where an ingest request's CPU goes, without an HTTP server or a load generator in the way.

    python -m bench.ingest_cpu [--messages 12800] [--connections 64]

Drives each ASGI app in this process with 64 concurrent callers (ACCEPTD then DELIVRD per message, form
bodies, as bench/ingest.py sends them) and prints the process CPU per request: the bare endpoint, the
durable floor (bench/floor_app.py), dlr-tracker with its writer answering at once (the HTTP layer, the
handler and the dialect: no database), and dlr-tracker as shipped. The differences say what each part
costs; uvicorn's own share (HTTP parsing and writing, ~40 us) comes on top of every row alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop

from bench.harness import database_server, fresh_database, table

App = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[..., Awaitable[None]]], Any]


async def drive(app: App, prefix: str, messages: int, connections: int) -> tuple[float, float]:
    """(requests per second of wall time, CPU microseconds per request)."""

    async def post(body: bytes) -> None:
        sent: list[dict[str, Any]] = []
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return pending.pop() if pending else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/dlr/generic",
            "raw_path": b"/dlr/generic",
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"host", b"127.0.0.1:8080"),
                (b"content-type", b"application/x-www-form-urlencoded"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080),
            "state": {},
        }
        await app(scope, receive, send)
        if sent[0]["status"] != 200:
            raise SystemExit(f"unexpected answer: {sent}")

    async def caller(n: int) -> None:
        for i in range(messages // connections):
            message_id = f"{prefix}-{n}-{i}"
            await post(f"id={message_id}&status=ACCEPTD".encode())
            await post(f"id={message_id}&status=DELIVRD".encode())

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller(n) for n in range(connections)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    requests = 2 * (messages // connections) * connections
    return requests / wall, 1e6 * cpu / requests


async def measure(name: str, dsn: str, args: argparse.Namespace) -> list[object]:
    os.environ["DATABASE_URL"] = dsn
    if name == "bare":
        from bench.bare_app import app
    elif name == "floor":
        from bench.floor_app import app
    else:
        from service.app import create_app
        from service.config import Settings

        app = create_app(Settings.from_env({"DATABASE_URL": dsn, "LOG_LEVEL": "warning"}, env_file=None))
    async with app.router.lifespan_context(app):
        await drive(app, "warm", 2 * args.connections, args.connections)
        if name == "no database":
            from service.ledger import ReportDecision
            from service.reports import IncomingReport
            from service.statuses import Status

            async def answer_at_once(reports: list[IncomingReport]) -> list[ReportDecision]:
                return [ReportDecision(r, Status.ACCEPTD, True, None) for r in reports]

            app.state.services.writer.apply = answer_at_once
        rate, micros = await drive(app, "run", args.messages, args.connections)
    return [name, rate, micros]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=12800)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    labels = {
        "bare": "bare Starlette endpoint",
        "floor": "durable floor (bare + group commit)",
        "no database": "dlr-tracker, writer answering at once",
        "shipped": "dlr-tracker as shipped",
    }
    rows = []
    with database_server() as server:
        from service import database

        for name in labels:
            dsn = fresh_database(server)
            if name in ("no database", "shipped"):
                database.migrate(dsn)
            row = uvloop.run(measure(name, dsn, args))
            row[0] = labels[name]
            rows.append(row)
            print(f"  {labels[name]}: {row[2]:.1f} us/request", file=sys.stderr)
    print()
    print(table(["in-process ASGI app", "req/s (wall)", "CPU us/request"], rows))
    print(f"\n{args.connections} concurrent callers, {2 * args.messages:,} requests each, one process (uvloop).")


if __name__ == "__main__":
    main()
