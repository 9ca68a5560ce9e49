"""Retention benchmark: how fast a sweep pass deletes N messages past DLR_RETENTION, and what it costs ingest.

    python -m bench.retention [--messages 1000000] [--batch 250] [--duty 0.65] [--seconds 10]
                              [--connections 16] [--rate 1000]

Seeds N messages final for 95 days (one history row each) into a fresh database; measures ingest p99 under
a steady offered load (about --rate requests/s, each connection pacing itself) without pruning, then again
while one sweep pass deletes all N past a 90-day retention, in the same run, and prints both and their
ratio (the goal: at most 1.5x), and the pass's rows/s.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import asyncpg

from bench.harness import BackgroundLoad, Service, database_server, fresh_database, run_wrk, table
from service import database
from service.config import DEFAULT_SWEEP_BATCH, DEFAULT_SWEEP_DUTY
from service.sweeper import ExpirySweeper

HERE = Path(__file__).resolve().parent
RETENTION = 90 * 86400

SEED = """
WITH made AS (
    INSERT INTO messages (id, status, segment_statuses, segment_updated_at, campaign, sent_at, expires_at,
                          final_at, created_at, updated_at, version)
    SELECT 'old-' || g, 'DELIVRD', ARRAY['DELIVRD'], ARRAY[t], 'bench', t, t + interval '1 day',
           t + interval '1 hour', t, t + interval '1 hour', 2
    FROM (SELECT g, now() - interval '95 days' AS t FROM generate_series($1::int, $2::int) g) s
    RETURNING id, final_at
)
INSERT INTO history (message_id, status, raw_status, received_at, source, applied)
SELECT id, 'DELIVRD', 'DELIVRD', final_at, 'generic', true FROM made
"""


async def seed(dsn: str, count: int) -> float:
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        step = 100_000
        for start in range(0, count, step):
            await conn.execute(SEED, start + 1, min(count, start + step))
        await conn.execute("VACUUM ANALYZE messages")
        await conn.execute("VACUUM ANALYZE history")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def prune(dsn: str, batch: int, duty: float) -> tuple[int, float]:
    pool = await database.create_pool(dsn, 2, 600)
    try:
        before = await pool.fetchval("SELECT count(*) FROM messages WHERE id LIKE 'old-%'")
        started = time.perf_counter()
        sweeper = ExpirySweeper(
            pool, interval=3600, batch_size=batch, timeout=600, duty=duty, retention=RETENTION, lifetime=86400
        )
        await sweeper.run_pass()
        took = time.perf_counter() - started
        after = await pool.fetchval("SELECT count(*) FROM messages WHERE id LIKE 'old-%'")
        return int(before - after), took
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=DEFAULT_SWEEP_BATCH)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duty", type=float, default=DEFAULT_SWEEP_DUTY)
    parser.add_argument("--rate", type=float, default=1000, help="the steady load, requests/s in all")
    args = parser.parse_args()
    # wrk's delay() pauses a connection between requests: C connections at D ms each offer about C*1000/D.
    paced = {"DELAY_MS": str(max(1, round(args.connections * 1000 / args.rate)))}

    with database_server() as server:
        dsn = fresh_database(server)
        seeded = asyncio.run(seed(dsn, args.messages))
        print(f"seeded {args.messages:,} messages final for 95 days in {seeded:.1f} s")
        service = Service({"DATABASE_URL": dsn, "DLR_SWEEP_INTERVAL": "86400"})
        script = HERE / "ingest_unique.lua"
        try:
            without = run_wrk(service.url, script, args.connections, args.seconds, env=paced)
            load = BackgroundLoad(service.url, script, args.connections, paced)
            deleted, took = asyncio.run(prune(dsn, args.batch, args.duty))
            during = load.stop()
        finally:
            service.stop()

    print()
    print(
        table(
            ["measure", "value"],
            [
                ["messages deleted past retention (with their history)", f"{deleted:,}"],
                ["pass time, s", took],
                ["messages deleted per second", deleted / took],
                [
                    "steady load: ingest req/s without / during",
                    f"{without.requests_per_second:,.0f} / {during.requests_per_second:,.0f}",
                ],
                ["steady load: ingest p99 ms without / during", f"{without.p99_ms:.1f} / {during.p99_ms:.1f}"],
                ["**p99 ratio (during / without)**", during.p99_ms / without.p99_ms],
                ["non-2xx / socket errors", f"{without.non_2xx + during.non_2xx} / {without.errors + during.errors}"],
            ],
        )
    )
    print(
        f"\ngoal: p99 during at most 1.5x without. {args.connections} connections ({paced['DELAY_MS']} ms between"
        f" a connection's requests), batch {args.batch}, duty {args.duty}, 2 cores"
    )


if __name__ == "__main__":
    main()
