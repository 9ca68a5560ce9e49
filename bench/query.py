"""Query benchmark: the read API with a million messages stored.

    python -m bench.query [--messages 1000000] [--seconds 10] [--connections 16]

Seeds N messages (a 100,000-message campaign `big` among them, the rest in 1,000 campaigns; 70%
DELIVRD, 10% UNDELIV, 20% still ACCEPTD) into a fresh database, starts dlr-tracker on it and drives
each read endpoint with wrk in turn, printing requests/s and p50/p99 latency.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import asyncpg

from bench.harness import Service, database_server, fresh_database, run_wrk, table

HERE = Path(__file__).resolve().parent
CAMPAIGNS = 1000
BIG = 100_000

SEED = """
INSERT INTO messages (id, status, segment_statuses, segment_updated_at, recipient, campaign,
                      sent_at, expires_at, final_at, created_at, updated_at)
SELECT 'q' || g, st, ARRAY[st], ARRAY[t + d], '380' || (500000000 + g), camp,
       t, t + interval '1 day', CASE WHEN st = 'ACCEPTD' THEN NULL ELSE t + d END, t, t + d
FROM (
    SELECT g,
           CASE WHEN g % 10 < 7 THEN 'DELIVRD' WHEN g % 10 = 7 THEN 'UNDELIV' ELSE 'ACCEPTD' END AS st,
           CASE WHEN g <= $3 THEN 'big' ELSE 'c' || (1 + g % $4) END AS camp,
           now() - interval '2 hours' + (g % 3600) * interval '1 second' AS t,
           (1 + (g::bigint * 7919) % 600) * interval '1 second' AS d
    FROM generate_series($1::int, $2::int) AS g
) s
"""


async def seed(dsn: str, count: int) -> float:
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        for start in range(0, count, 200_000):
            await conn.execute(SEED, start + 1, min(count, start + 200_000), min(BIG, count // 10), CAMPAIGNS)
        await conn.execute("VACUUM ANALYZE messages")
    finally:
        await conn.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()

    rows = []
    with database_server() as server:
        dsn = fresh_database(server)
        took = asyncio.run(seed(dsn, args.messages))
        print(f"seeded {args.messages:,} messages in {took:.1f} s")
        service = Service({"DATABASE_URL": dsn, "DLR_SWEEP_INTERVAL": "86400"})
        try:
            env = {"MESSAGES": str(args.messages), "CAMPAIGNS": str(CAMPAIGNS)}
            for kind, label in [
                ("one", "GET /messages/{id}"),
                ("ids", "GET /messages?ids= (100 ids)"),
                ("page", "GET /messages?campaign=&status=&limit=50"),
                ("campaign", f"GET /campaigns/big ({min(BIG, args.messages // 10):,} messages)"),
            ]:
                run_wrk(service.url, HERE / "query_paths.lua", args.connections, 2, {**env, "QUERY": kind})
                r = run_wrk(
                    service.url, HERE / "query_paths.lua", args.connections, args.seconds, {**env, "QUERY": kind}
                )
                rows.append([label, r.requests_per_second, r.p50_ms, r.p99_ms, r.non_2xx + r.errors])
        finally:
            service.stop()
        # The same campaign counted afresh on every call: what the cache saves.
        service = Service({"DATABASE_URL": dsn, "DLR_SWEEP_INTERVAL": "86400", "DLR_CAMPAIGN_STATS_TTL": "0"})
        try:
            env = {"MESSAGES": str(args.messages), "CAMPAIGNS": str(CAMPAIGNS), "QUERY": "campaign"}
            r = run_wrk(service.url, HERE / "query_paths.lua", args.connections, args.seconds, env)
            rows.append(
                [
                    "GET /campaigns/big, no cache (TTL 0)",
                    r.requests_per_second,
                    r.p50_ms,
                    r.p99_ms,
                    r.non_2xx + r.errors,
                ]
            )
        finally:
            service.stop()
    print()
    print(table(["endpoint", "req/s", "p50 ms", "p99 ms", "non-2xx"], rows))
    print(
        f"\n{args.connections} connections, {args.seconds:g} s each, one worker, 2 cores shared with PostgreSQL"
        " and wrk. Goals: /messages/{id} p99 < 10 ms, campaign stats p99 < 200 ms."
    )


if __name__ == "__main__":
    main()
