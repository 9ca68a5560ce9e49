"""Ingest benchmark: dlr-tracker against the framework's own ceiling, with the same load generator.

    python -m bench.ingest [--seconds 10] [--runs 3] [--connections 64]

In one run, side by side, each on a fresh database and with wrk (installed with apt-get if missing)
sending realistic traffic (unique ids, ACCEPTD then a final report per message, 10% two-part messages
reporting per segment): a bare Starlette form endpoint that parses and answers (the ceiling), the
floor of durable ingest on this stack (the bare endpoint plus group commit of one row per report, answered
after the commit: bench/floor_app.py), dlr-tracker with batching off, dlr-tracker as shipped, each with one
uvicorn worker, then dlr-tracker with two workers. Prints requests/s (median of the runs), p50/p99 latency,
non-2xx answers, peak RSS, the ratios, and checks that every acknowledged report is stored.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench.harness import (
    ServerCost,
    Service,
    WrkResult,
    database_server,
    fresh_database,
    parse_wrk,
    table,
    wrk_command,
)

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "ingest_realistic.lua"


@dataclass
class Measured:
    name: str
    runs: list[WrkResult]
    rss_mb: float
    acked: int
    stored: int | None
    cost: tuple[float, float, float] | None = None  # PostgreSQL's WAL bytes, commits, CPU us per report

    @property
    def median(self) -> WrkResult:
        return sorted(self.runs, key=lambda r: r.requests_per_second)[len(self.runs) // 2]


def run_load(url: str, seconds: float, connections: int) -> tuple[WrkResult, int]:
    env = {**os.environ, "RUN_ID": uuid.uuid4().hex[:8]}
    out = subprocess.run(
        wrk_command(url, SCRIPT, connections, seconds), capture_output=True, text=True, check=True, env=env
    )
    acked = re.search(r"^ACKED (\d+)$", out.stdout, re.M)
    return parse_wrk(out.stdout), int(acked.group(1)) if acked else 0


async def stored_reports(dsn: str, table: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))  # our own table names
    finally:
        await conn.close()


def measure(name: str, service: Service, dsn: str | None, args: argparse.Namespace, table: str = "history") -> Measured:
    try:
        run_load(service.url, 2, args.connections)  # warm-up: connections, caches, plans
        before = asyncio.run(stored_reports(dsn, table)) if dsn is not None else 0
        server = ServerCost(dsn) if dsn is not None else None
        runs, acked = [], 0
        for _ in range(args.runs):
            result, ok = run_load(service.url, args.seconds, args.connections)
            runs.append(result)
            acked += ok
        cost = server.per(acked) if server is not None else None
        rss = service.peak_rss_mb()
    finally:
        service.stop()
    stored = asyncio.run(stored_reports(dsn, table)) - before if dsn is not None else None
    print(f"  {name}: {statistics.median(r.requests_per_second for r in runs):,.0f} req/s", file=sys.stderr)
    return Measured(name, runs, rss, acked, stored, cost)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--no-two-workers", action="store_true", help="leave out the two-worker run")
    args = parser.parse_args()
    uvicorn = [sys.executable, "-m", "uvicorn", "--port", "{port}", "--log-level", "warning", "--no-access-log"]

    results: list[Measured] = []
    with database_server() as server:
        bare = Service({}, [*uvicorn, "bench.bare_app:app"])
        results.append(measure("bare Starlette (ceiling)", bare, None, args))
        dsn = fresh_database(server)
        floor = Service({"DATABASE_URL": dsn}, [*uvicorn, "bench.floor_app:app"])
        results.append(measure("durable floor (bare + group commit)", floor, dsn, args, "floor_reports"))
        servers = [
            ("dlr-tracker, batching off", {"DLR_GROUP_COMMIT": "off"}),
            ("dlr-tracker as shipped", {}),
            ("dlr-tracker, 2 workers", {"WEB_CONCURRENCY": "2"}),
        ]
        for name, env in servers[:2] if args.no_two_workers else servers:
            dsn = fresh_database(server)
            service = Service({"DATABASE_URL": dsn, "LOG_LEVEL": "info", **env})
            results.append(measure(name, service, dsn, args))
            time.sleep(1)

    ceiling = results[0].median.requests_per_second
    off = results[2].median.requests_per_second
    rows = []
    for m in results:
        r = m.median
        rows.append(
            [
                m.name,
                r.requests_per_second,
                r.p50_ms,
                r.p99_ms,
                sum(x.non_2xx + x.errors for x in m.runs),
                m.rss_mb,
                f"{r.requests_per_second / ceiling:.2f}",
                f"{r.requests_per_second / off:.2f}",
            ]
        )
    print()
    print(table(["server", "req/s", "p50 ms", "p99 ms", "non-2xx", "peak RSS MB", "x ceiling", "x batching off"], rows))
    print(
        f"\n{args.runs} runs of {args.seconds:g} s each (median shown), {args.connections} connections, wrk 1 thread,"
        " one machine: 2 cores shared by wrk, the server and PostgreSQL."
    )
    print(
        "\nacknowledged reports stored (history rows written during the measured runs >= 2xx answers counted by wrk;"
        " every report is unique, so each stored report is one history row):"
    )
    print("\nPostgreSQL's own cost per acknowledged report (WAL position, pg_stat_database, server process CPU):")
    print(
        table(
            ["server", "WAL bytes", "commits", "server CPU us"],
            [[m.name, *m.cost] for m in results if m.cost is not None],
        )
    )
    for m in results[1:]:
        verdict = "ok, none lost" if m.stored is not None and m.stored >= m.acked else "MISSING REPORTS"
        print(f"  {m.name}: {m.acked:,} acknowledged in the measured runs, {m.stored:,} stored -> {verdict}")


if __name__ == "__main__":
    main()
