"""Expiry sweep benchmark: how fast a full sweep resolves N overdue messages, and what it costs ingest.

    python -m bench.sweep [--messages 1000000] [--batch 1000] [--duty 0.5] [--seconds 10] [--connections 16]

Seeds N overdue messages (1-3 segments; 10% PDLIVRD with a delivered first part, 10% message-level
PDLIVRD) into a fresh database, times one full sweep pass (rows/s); then measures ingest under wrk
alone, and again while a second full sweep of N runs, printing p99 latency with and without it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import time
from pathlib import Path

import asyncpg

from bench.harness import (
    Service,
    database_server,
    fresh_database,
    parse_wrk,
    run_wrk,
    table,
    wrk_command,
)
from service import database
from service.sweeper import ExpirySweeper

HERE = Path(__file__).resolve().parent

SEED = """
INSERT INTO messages (id, status, partial, segment_statuses, segment_updated_at, campaign,
                      sent_at, expires_at, created_at, updated_at)
SELECT $1 || g,
       CASE WHEN g % 10 = 0 OR g % 10 = 1 THEN 'PDLIVRD' ELSE 'ACCEPTD' END,
       g % 10 = 1,
       CASE WHEN g % 10 = 0 THEN ARRAY['DELIVRD'] || array_fill('ACCEPTD'::text, ARRAY[n - 1])
            ELSE array_fill('ACCEPTD'::text, ARRAY[n]) END,
       array_fill(t, ARRAY[n]), 'bench', t, t + interval '1 day', t, t
FROM (SELECT g, 1 + g % 3 AS n, now() - interval '2 days' AS t FROM generate_series($2::int, $3::int) g) s
"""


async def seed(dsn: str, prefix: str, count: int) -> float:
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        step = 200_000
        for start in range(0, count, step):
            await conn.execute(SEED, prefix, start + 1, min(count, start + step))
        await conn.execute("VACUUM ANALYZE messages")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def sweep(dsn: str, batch: int, duty: float) -> tuple[int, float]:
    pool = await database.create_pool(dsn, 2, 600)
    try:
        started = time.perf_counter()
        resolved = await ExpirySweeper(pool, interval=3600, batch_size=batch, timeout=600, duty=duty).run_pass()
        return sum(resolved.values()), time.perf_counter() - started
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duty", type=float, default=0.5, help="DLR_SWEEP_DUTY: share of time spent sweeping")
    args = parser.parse_args()

    with database_server() as server:
        dsn = fresh_database(server)
        seeded = asyncio.run(seed(dsn, "a", args.messages))
        print(f"seeded {args.messages:,} overdue messages in {seeded:.1f} s")
        resolved, took = asyncio.run(sweep(dsn, args.batch, args.duty))
        print(f"sweep alone: {resolved:,} resolved in {took:.1f} s")

        service = Service({"DATABASE_URL": dsn, "DLR_SWEEP_INTERVAL": "86400"})
        try:
            script = HERE / "ingest_unique.lua"
            alone = run_wrk(service.url, script, args.connections, args.seconds)
            asyncio.run(seed(dsn, "b", args.messages))
            load = subprocess.Popen(
                wrk_command(service.url, script, args.connections, 3600),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(1)  # let the load settle before the sweep starts
            resolved_during, took_during = asyncio.run(sweep(dsn, args.batch, args.duty))
            load.send_signal(signal.SIGINT)
            during = parse_wrk(load.communicate(timeout=60)[0])
        finally:
            service.stop()

    print()
    print(
        table(
            ["measure", "value"],
            [
                ["messages swept (alone)", f"{resolved:,}"],
                ["sweep time (alone), s", took],
                ["sweep rows/s (alone)", resolved / took],
                ["sweep time (under ingest load), s", took_during],
                ["sweep rows/s (under ingest load)", resolved_during / took_during],
                ["ingest req/s without sweep", alone.requests_per_second],
                ["ingest req/s during sweep", during.requests_per_second],
                ["ingest p99 ms without sweep", alone.p99_ms],
                ["ingest p99 ms during sweep", during.p99_ms],
                ["p99 ratio (during / without)", during.p99_ms / alone.p99_ms],
                ["non-2xx / socket errors", f"{alone.non_2xx + during.non_2xx} / {alone.errors + during.errors}"],
            ],
        )
    )
    print(
        f"\ngoals: 1M in < 60 s; p99 ratio <= 2. {args.connections} connections, batch {args.batch},"
        f" duty {args.duty}, 2 cores"
    )


if __name__ == "__main__":
    main()
