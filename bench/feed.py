"""Event feed benchmark: pages read from a large feed, and a follower keeping up with flat-out ingest.

    python -m bench.feed [--events 1000000] [--seconds 10] [--connections 16]

1. Seeds N events into a fresh database and reads `GET /events?limit=1000` from random places in it with wrk:
   requests/s and p50/p99 per page (goal: p99 < 50 ms at 1M events).
2. On another fresh database, sends flat-out realistic ingest with wrk (bench/ingest_realistic.lua, 64
   connections) while one follower long-polls the feed (`wait=1`, `limit=1000`): ingest req/s, how many
   events the follower read against how many were committed (none may be missed), and its lag, from an
   event's timestamp (the change's arrival) to the moment the follower had it: p50/p99 (goal: p99 < 1 s).

Ingest with the feed against ingest without it is a before/after of two checkouts:
`python -m bench.compare --before <a checkout without the feed>`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx2

from bench.harness import Service, database_server, fresh_database, run_wrk, table
from bench.ingest import run_load

HERE = Path(__file__).resolve().parent

SEED = """
INSERT INTO events (source, previous_status, at, id, status, partial, segment_statuses, segment_updated_at,
                    sent_at, expires_at, created_at, updated_at, recipient, campaign, final_at, version)
SELECT 'generic', 'ACCEPTD', t, 'e' || g, 'DELIVRD', false, ARRAY['DELIVRD'], ARRAY[t], t - interval '5 seconds',
       t + interval '1 day', t, t, '380' || (500000000 + g), 'c' || (g % 1000), t, 2
FROM (SELECT g, now() - interval '1 hour' + g * interval '1 millisecond' AS t
      FROM generate_series($1::int, $2::int) AS g) s
"""


async def seed(dsn: str, count: int) -> tuple[int, int, int]:
    """Seed `count` events; (their transaction id, first position, last position)."""
    conn = await asyncpg.connect(dsn)
    try:
        for start in range(0, count, 200_000):
            await conn.execute(SEED, start + 1, min(count, start + 200_000))
        await conn.execute("VACUUM ANALYZE events")
        row = await conn.fetchrow("SELECT min(tx)::text AS tx, min(position) AS lo, max(position) AS hi FROM events")
        return int(row["tx"]), row["lo"], row["hi"]
    finally:
        await conn.close()


class Follower(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.lags: list[float] = []
        self.ids: set[str] = set()
        self.target: int | None = None  # once set: read until this many events were seen (or 30 s passed)

    def run(self) -> None:
        cursor = "latest"
        deadline: float | None = None
        with httpx2.Client(timeout=30) as client:
            while True:
                if self.target is not None:
                    deadline = deadline or time.monotonic() + 30
                    if len(self.ids) >= self.target or time.monotonic() > deadline:
                        return
                params = {"after": cursor, "limit": 1000, "wait": 1}
                data = client.get(f"{self.url}/events", params=params).json()["data"]
                now = datetime.now(UTC)
                for e in data["items"]:
                    self.ids.add(e["id"])
                    self.lags.append((now - datetime.fromisoformat(e["timestamp"])).total_seconds())
                cursor = data["next_cursor"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10)
    # A consumer reads its pages one after another; more readers share this process's CPU (a page of 1000
    # costs ~20 ms of it here), so their p99 grows with their number.
    parser.add_argument("--connections", type=int, default=1, help="concurrent page readers")
    args = parser.parse_args()
    rows: list[list[object]] = []
    with database_server() as server:
        dsn = fresh_database(server)
        started = time.perf_counter()
        tx, lo, hi = asyncio.run(seed(dsn, args.events))
        print(f"seeded {args.events:,} events in {time.perf_counter() - started:.1f} s")
        service = Service({"DATABASE_URL": dsn, "DLR_SWEEP_INTERVAL": "86400"})
        try:
            env = {"TX": str(tx), "LO": str(lo), "HI": str(hi)}
            pages = run_wrk(service.url, HERE / "feed_pages.lua", args.connections, args.seconds, env=env)
        finally:
            service.stop()
        rows.append([f"GET /events, page of 1000, {args.events:,} stored", pages.requests_per_second, pages.p50_ms,
                     pages.p99_ms, pages.non_2xx + pages.errors])  # fmt: skip

        dsn = fresh_database(server)
        service = Service({"DATABASE_URL": dsn, "DLR_SWEEP_INTERVAL": "86400"})
        try:
            follower = Follower(service.url)
            follower.start()
            time.sleep(0.5)
            ingest, acked = run_load(service.url, args.seconds, 64)
            time.sleep(1)  # the last requests' commits
            committed = asyncio.run(count_events(dsn))
            follower.target = committed
            follower.join(60)
        finally:
            service.stop()
        rows.append(["ingest, flat out, with a follower", ingest.requests_per_second, ingest.p50_ms, ingest.p99_ms,
                     ingest.non_2xx + ingest.errors])  # fmt: skip
    print()
    print(table(["measure", "req/s", "p50 ms", "p99 ms", "non-2xx"], rows))
    lags = follower.lags
    print()
    print(
        table(
            ["follower (wait=1, limit=1000)", "value"],
            [
                ["events committed", f"{committed:,}"],
                ["events the follower read", f"{len(follower.ids):,}"],
                ["missed", f"{committed - len(follower.ids):,}"],
                ["lag p50 s", statistics.median(lags) if lags else float("nan")],
                ["lag p99 s", percentile(lags, 0.99)],
                ["lag max s", max(lags) if lags else float("nan")],
                ["reports acknowledged during the run", f"{acked:,}"],
            ],
        )
    )
    print(f"\n{args.connections} connection(s) for the page reads; 64 for ingest; 2 cores shared by all")


async def count_events(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events"))
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
