"""Expiry sweep benchmark: how fast a full sweep resolves N overdue messages, and what it costs ingest.

    python -m bench.sweep [--messages 1000000] [--batch 250] [--duty 0.65] [--seconds 10] [--connections 16]
                          [--rate 2000] [--no-ingest]

Seeds N overdue messages (1-3 segments; 10% PDLIVRD with a delivered first part, 10% message-level
PDLIVRD) into a fresh database, times one full sweep pass (rows/s); then measures ingest under wrk alone,
and again while a full sweep of N runs, printing p99 latency with and without it: once at a steady
offered load (about --rate requests/s, each connection pacing itself), once flat out (every connection
sending as fast as it is answered). Flat out, ingest already takes both cores, so whatever the sweep uses
comes out of ingest's latency; the steady load is what the goal (p99 at most 2x) is about.

The sweep's own limit, in the same run, each on a fresh database seeded with the same N overdue messages, in
batches of the same size, on the same server (the same WAL settings), taking its rows the same way (open and
overdue by the sweep's partial index, oldest deadline first, SKIP LOCKED), one statement and transaction per
batch and no rest between batches:

- the sweep at duty 1.0 (the shipped statement without the duty cycle's rests);
- floor, one row: a bare `UPDATE messages SET status = 'EXPIRED', final_at, updated_at` of the batch, which
  writes only the message rows (the least any sweep writes: the row leaves the work list);
- floor, three rows: that UPDATE plus the two rows the sweep also writes per message, by the simplest SQL (a
  history row, and the event feed's row copied from the updated message): the same rows as the sweep, without
  the engine's per-segment resolution or the counts by status.

Each prints rows/s and WAL bytes per message, and the sweep's ratio to each.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from bench.harness import (
    BackgroundLoad,
    Service,
    WrkResult,
    database_server,
    fresh_database,
    run_wrk,
    table,
)
from service import database
from service.config import DEFAULT_SWEEP_BATCH, DEFAULT_SWEEP_DUTY
from service.store.messages import COLUMNS, EVENT_COLUMNS
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


# The floors' statements: the same work list and selection as the sweep's (service/store/sweep.py RESOLVE).
_DUE = """
    SELECT id FROM messages
    WHERE final_at IS NULL AND expires_at <= $1
    ORDER BY expires_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED"""
FLOOR_ONE_ROW = f"""
WITH due AS ({_DUE}
), resolved AS (
    UPDATE messages AS m SET status = 'EXPIRED', final_at = $1, updated_at = $1 FROM due WHERE m.id = due.id
    RETURNING 1
)
SELECT count(*) FROM resolved
"""
FLOOR_THREE_ROWS = f"""
WITH due AS ({_DUE}
), resolved AS (
    UPDATE messages AS m SET status = 'EXPIRED', final_at = $1, updated_at = $1, version = m.version + 1
    FROM due WHERE m.id = due.id
    RETURNING m.*
), logged AS (
    INSERT INTO history (message_id, status, received_at, source, applied)
    SELECT id, status, $1, 'sweep', true FROM resolved
), fed AS (
    INSERT INTO events ({EVENT_COLUMNS})
    SELECT 'sweep', 'ACCEPTD', $1, {COLUMNS} FROM resolved
)
SELECT count(*) FROM resolved
"""


async def wal_lsn(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')"))
    finally:
        await conn.close()


async def floor(dsn: str, statement: str, batch: int) -> tuple[int, float]:
    """Run `statement` batch after batch, no rest, until a batch finds less than a full one."""
    pool = await database.create_pool(dsn, 2, 600)
    try:
        started = time.perf_counter()
        now = datetime.now(UTC)
        total = 0
        while True:
            async with pool.acquire() as conn:
                n = int(await conn.fetchval(statement, now, batch))
            total += n
            if n < batch:
                return total, time.perf_counter() - started
    finally:
        await pool.close()


def limit_rows(server: str, args: argparse.Namespace) -> list[list[object]]:
    """The sweep at its duty and at 1.0, and the two floors, each on a fresh database of the same N messages:
    (name, messages, seconds, rows/s, WAL bytes per message)."""
    runs: list[tuple[str, Callable[[str], Awaitable[tuple[int, float]]]]] = [
        (f"sweep as shipped (duty {args.duty:g})", lambda dsn: sweep(dsn, args.batch, args.duty)),
        ("sweep, duty 1.0 (no rests)", lambda dsn: sweep(dsn, args.batch, 1.0)),
        ("floor: bare UPDATE (message rows only)", lambda dsn: floor(dsn, FLOOR_ONE_ROW, args.batch)),
        ("floor: UPDATE + history + event rows", lambda dsn: floor(dsn, FLOOR_THREE_ROWS, args.batch)),
    ]
    rows: list[list[object]] = []
    for name, run in runs:
        dsn = fresh_database(server)
        asyncio.run(seed(dsn, "a", args.messages))
        asyncio.run(checkpoint(dsn))  # each run starts from the same WAL state: no checkpoint owed by the seed
        wal = asyncio.run(wal_lsn(dsn))
        done, took = asyncio.run(run(dsn))
        wal = asyncio.run(wal_lsn(dsn)) - wal
        print(f"  {name}: {done:,} in {took:.1f} s", file=sys.stderr)
        rows.append([name, done, took, done / took, wal / max(1, done)])
        asyncio.run(drop(server, dsn))
    return rows


async def checkpoint(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def drop(server: str, dsn: str) -> None:
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f'DROP DATABASE "{urlsplit(dsn).path.lstrip("/")}"')
    finally:
        await conn.close()


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
    parser.add_argument("--batch", type=int, default=DEFAULT_SWEEP_BATCH)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--duty", type=float, default=DEFAULT_SWEEP_DUTY, help="DLR_SWEEP_DUTY: share of time spent sweeping"
    )
    parser.add_argument("--rate", type=float, default=2000, help="the steady load, requests/s in all")
    parser.add_argument("--no-ingest", action="store_true", help="only the sweep against its floors, no wrk runs")
    args = parser.parse_args()
    # wrk's delay() pauses a connection between requests: C connections at D ms each offer about C*1000/D.
    paced = {"DELAY_MS": str(max(1, round(args.connections * 1000 / args.rate)))}

    with database_server() as server:
        limits = limit_rows(server, args)
        print()
        print(table(["run (same N, batch, server)", "messages", "s", "rows/s", "WAL bytes/message"], limits))
        shipped, no_rest, one_row, three_rows = (float(r[3]) for r in limits)  # type: ignore[arg-type]
        print(
            f"\nsweep as shipped / floor (bare UPDATE): {shipped / one_row:.2f}x;"
            f" sweep at duty 1.0 / floor (bare UPDATE): {no_rest / one_row:.2f}x;"
            f" sweep at duty 1.0 / floor (same three rows): {no_rest / three_rows:.2f}x. Batch {args.batch}."
        )
        if args.no_ingest:
            return
        dsn = fresh_database(server)
        seeded = asyncio.run(seed(dsn, "a", args.messages))
        print(f"seeded {args.messages:,} overdue messages in {seeded:.1f} s")
        resolved, took = asyncio.run(sweep(dsn, args.batch, args.duty))
        print(f"sweep alone: {resolved:,} resolved in {took:.1f} s")

        service = Service({"DATABASE_URL": dsn, "DLR_SWEEP_INTERVAL": "86400"})
        script = HERE / "ingest_unique.lua"

        def with_sweep(env: dict[str, str], part: str) -> tuple[WrkResult, int, float]:
            asyncio.run(seed(dsn, part, args.messages))
            load = BackgroundLoad(service.url, script, args.connections, env)
            swept, took = asyncio.run(sweep(dsn, args.batch, args.duty))
            return load.stop(), swept, took

        try:
            steady = run_wrk(service.url, script, args.connections, args.seconds, env=paced)
            steady_during, _, _ = with_sweep(paced, "b")
            alone = run_wrk(service.url, script, args.connections, args.seconds)
            during, resolved_during, took_during = with_sweep({}, "c")
        finally:
            service.stop()

    runs = [steady, steady_during, alone, during]
    print()
    print(
        table(
            ["measure", "value"],
            [
                ["messages swept (alone)", f"{resolved:,}"],
                ["sweep time (alone), s", took],
                ["sweep rows/s (alone)", resolved / took],
                ["sweep time (under flat-out ingest), s", took_during],
                ["sweep rows/s (under flat-out ingest)", resolved_during / took_during],
                ["steady load: ingest req/s without / during sweep", _pair(steady, steady_during, "rps")],
                ["steady load: ingest p99 ms without / during sweep", _pair(steady, steady_during, "p99")],
                ["**steady load: p99 ratio (during / without)**", steady_during.p99_ms / steady.p99_ms],
                ["flat out: ingest req/s without / during sweep", _pair(alone, during, "rps")],
                ["flat out: ingest p99 ms without / during sweep", _pair(alone, during, "p99")],
                ["flat out: p99 ratio (during / without)", during.p99_ms / alone.p99_ms],
                ["non-2xx / socket errors", f"{_sum(runs, 'non_2xx')} / {_sum(runs, 'errors')}"],
            ],
        )
    )
    print(
        f"\ngoals: 1M in < 60 s; p99 ratio <= 2 at a steady load. {args.connections} connections"
        f" ({paced['DELAY_MS']} ms between a connection's requests at the steady load), batch {args.batch},"
        f" duty {args.duty}, 2 cores"
    )


def _pair(before: WrkResult, after: WrkResult, what: str) -> str:
    if what == "rps":
        return f"{before.requests_per_second:,.0f} / {after.requests_per_second:,.0f}"
    return f"{before.p99_ms:.1f} / {after.p99_ms:.1f}"


def _sum(runs: list[WrkResult], field: str) -> int:
    return sum(getattr(r, field) for r in runs)


if __name__ == "__main__":
    main()
