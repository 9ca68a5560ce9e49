"""Growth benchmark: the same figures with 1M, 5M and 10M messages stored, in one run, on one database.

    python -m bench.growth [--sizes 1,5,10] [--seconds 10] [--overdue 100000] [--explain]

Grows one database to each size in turn (millions of messages; `--sizes 0.1,0.2` for a quick look) by bulk
SQL straight into the schema the migrations make, as a year of traffic would have left it: per message its
row (final: 75% DELIVRD, 15% UNDELIV, 10% EXPIRED; 10% in two parts), three history rows (ENQUEUD, ACCEPTD,
the final report) and one event-feed row (its last change: the feed is pruned by age, so it holds a window of
changes rather than all of them). A million messages make a day: each day has 100 campaigns of 10,000
messages, recipients spread over 100M numbers. After each step: VACUUM ANALYZE (what autovacuum would have
done by then) and a CHECKPOINT, then, at that size:

- ingest: wrk with bench.ingest's realistic traffic (new ids; ACCEPTD then a final report), 64 connections:
  req/s, and PostgreSQL's WAL bytes per acknowledged report (from the WAL position);
- reads, 16 connections each, over every day stored: GET /messages/{id} (random ids), a list page
  (GET /messages?campaign=&status=DELIVRD&limit=50, random campaign) and campaign statistics
  (GET /campaigns/{c}, random campaign, with DLR_CAMPAIGN_STATS_TTL=0: the database's work, not the cache's):
  p99 latency;
- the expiry sweep: --overdue open messages planted past their deadline, one pass at the shipped batch and
  duty: rows/s;
- disk: tables and their indexes (messages, history, events, sender_events) per message stored.

Prints one table: each figure at each size and its ratio to the first size's. The goal (issue #17): every
figure within 25% of its 1M value at 10M. --explain prints EXPLAIN (ANALYZE, BUFFERS) of each read's query
at each size. The machine is shared and noisy: compare the ratios of one run, not numbers across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from bench import sweep as sweep_bench
from bench.harness import (
    ServerCost,
    Service,
    WrkResult,
    database_server,
    fresh_database,
    parse_wrk,
    run_wrk,
    table,
    wrk_command,
)
from service.config import DEFAULT_SWEEP_BATCH, DEFAULT_SWEEP_DUTY
from service.store.messages import COLUMNS, EVENT_COLUMNS

HERE = Path(__file__).resolve().parent
PER_DAY = 1_000_000
CAMPAIGNS_PER_DAY = 100
CHUNK = 250_000
TABLES = ("messages", "history", "events", "sender_events")
READS = [("one", "by id"), ("page", "list page"), ("campaign", "campaign stats")]

# Message g (from 1) was sent at $3 + (g - 1) days / PER_DAY: the oldest first, as traffic accumulates.
SEED = f"""
WITH made AS (
    INSERT INTO messages (id, status, partial, segment_statuses, segment_updated_at, recipient, campaign,
                          registered_at, sent_at, expires_at, final_at, created_at, updated_at, version,
                          delivery_seconds)
    SELECT 'g' || lpad(g::text, 9, '0'), st, false, array_fill(st, ARRAY[n]), array_fill(t + d, ARRAY[n]),
           '380' || (500000000 + (g * 7919) % 100000000),
           'd' || ((g - 1) / {PER_DAY}) || '-' || (g % {CAMPAIGNS_PER_DAY}),
           t, t, t + interval '1 day', t + d, t, t + d, 3,
           CASE WHEN st = 'DELIVRD' THEN extract(epoch FROM d) END
    FROM (
        SELECT g, $3::timestamptz + (g - 1) * interval '86400 seconds' / {PER_DAY} AS t,
               CASE WHEN g % 20 < 15 THEN 'DELIVRD' WHEN g % 20 < 18 THEN 'UNDELIV' ELSE 'EXPIRED' END AS st,
               CASE WHEN g % 10 = 0 THEN 2 ELSE 1 END AS n,
               (1 + (g * 7919) % 600) * interval '1 second' AS d
        FROM generate_series($1::bigint, $2::bigint) AS g
    ) AS s
    RETURNING {COLUMNS}
), logged AS (
    INSERT INTO history (message_id, status, raw_status, event_time, received_at, source, applied)
    SELECT made.id, h.s, h.s, h.at, h.at, 'generic', true
    FROM made, unnest(ARRAY['ENQUEUD', 'ACCEPTD', made.status],
                      ARRAY[made.sent_at, made.sent_at + interval '1 second', made.final_at]) AS h(s, at)
)
INSERT INTO events ({EVENT_COLUMNS})
SELECT 'generic', 'ACCEPTD', final_at, {COLUMNS} FROM made
"""

SIZES_SQL = """
SELECT c.relname, pg_relation_size(c.oid) AS heap, pg_indexes_size(c.oid) AS indexes,
       pg_total_relation_size(c.oid) AS total
FROM pg_class AS c WHERE c.relname = ANY($1::text[]) AND c.relkind = 'r'
"""

# Representative queries of each read, for --explain (the store's own SQL, parameters filled in).
EXPLAINED = {
    "by id": "SELECT {columns} FROM messages WHERE id = 'g000000777'",
    "list page": "SELECT {columns} FROM messages WHERE campaign = 'd0-7' AND status = 'DELIVRD' "
    "ORDER BY sent_at DESC, id DESC LIMIT 50",
    "campaign stats": "SELECT status, count(*) AS n, percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP ("
    "ORDER BY delivery_seconds) FILTER (WHERE delivery_seconds IS NOT NULL) AS p "
    "FROM messages WHERE campaign = 'd0-7' GROUP BY status",
}


async def grow(dsn: str, start: int, stop: int, first_sent: datetime) -> float:
    """Messages start+1 .. stop, with their history and event rows; then VACUUM ANALYZE and a CHECKPOINT.

    The secondary indexes are dropped for the load and built again after it (each step rebuilds them whole):
    ten million messages inserted through them took 23 minutes on the development machine, most of it random
    insertions into the recipient index. A built index is denser than one grown row by row, at every size
    alike; the disk figures are those of freshly built indexes."""
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        secondary = await conn.fetch(
            """
            SELECT i.indexname, i.indexdef FROM pg_indexes AS i
            JOIN pg_class AS c ON c.relname = i.indexname JOIN pg_index AS x ON x.indexrelid = c.oid
            WHERE i.tablename = ANY($1::text[]) AND NOT x.indisprimary
            """,
            list(TABLES),
        )
        for row in secondary:
            await conn.execute(f'DROP INDEX "{row["indexname"]}"')
        for lo in range(start + 1, stop + 1, CHUNK):
            await conn.execute(SEED, lo, min(stop, lo + CHUNK - 1), first_sent)
            print(f"    seeded up to {min(stop, lo + CHUNK - 1):,}", file=sys.stderr)
        await conn.execute("SET maintenance_work_mem = '512MB'")
        for row in secondary:
            await conn.execute(row["indexdef"])
        for name in TABLES:
            await conn.execute(f"VACUUM ANALYZE {name}")  # our own table names
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def disk(dsn: str) -> tuple[int, dict[str, tuple[int, int]]]:
    """Messages stored, and each table's (heap, indexes) bytes."""
    conn = await asyncpg.connect(dsn)
    try:
        messages = int(await conn.fetchval("SELECT count(*) FROM messages"))
        rows = await conn.fetch(SIZES_SQL, list(TABLES))
        return messages, {r["relname"]: (r["heap"], r["indexes"]) for r in rows}
    finally:
        await conn.close()


async def explain(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for name, sql in EXPLAINED.items():
            plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql.format(columns=COLUMNS))
            print(f"  EXPLAIN {name}:", file=sys.stderr)
            for row in plan:
                print("    " + row[0], file=sys.stderr)
    finally:
        await conn.close()


def ingest(service: Service, dsn: str, seconds: float) -> tuple[WrkResult, float]:
    """Realistic ingest (bench/ingest_realistic.lua), 64 connections: the result and WAL bytes per report."""

    def load(duration: float) -> tuple[WrkResult, int]:
        env = {"RUN_ID": uuid.uuid4().hex[:8]}
        out = subprocess.run(
            wrk_command(service.url, HERE / "ingest_realistic.lua", 64, duration),
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **env},
        )
        acked = re.search(r"^ACKED (\d+)$", out.stdout, re.M)
        return parse_wrk(out.stdout), int(acked.group(1)) if acked else 0

    for attempt in range(2):  # once more if wrk failed (or was killed by someone else's cleanup)
        try:
            load(2)  # warm-up: connections, plans
            cost = ServerCost(dsn)
            result, acked = load(seconds)
            break
        except (subprocess.CalledProcessError, KeyError, AttributeError) as exc:
            print(f"  ingest: wrk failed: {exc!r}", file=sys.stderr)
            if attempt:
                raise
    wal, _, _ = cost.per(acked)
    return result, wal


def service_env(dsn: str) -> dict[str, str]:
    """The service measured: no sweep of its own (the sweep is measured on its own), statistics uncached."""
    return {"DATABASE_URL": dsn, "DLR_SWEEP_INTERVAL": "86400", "DLR_CAMPAIGN_STATS_TTL": "0"}


def ingest_figures(service: Service, dsn: str, seconds: float) -> tuple[dict[str, float], int]:
    """Ingest's figures, and its non-2xx answers and socket errors."""
    result, wal = ingest(service, dsn, seconds)
    figures = {"ingest req/s": result.requests_per_second, "ingest p99 ms": result.p99_ms, "WAL bytes / report": wal}
    return figures, result.non_2xx + result.errors


def read_figures(service: Service, messages: int, seconds: float) -> tuple[dict[str, float], int]:
    """p99 and req/s of each read over every day stored (16 connections), and their non-2xx and socket errors."""
    days = max(1, -(-messages // PER_DAY))
    env = {"MESSAGES": str(messages), "DAYS": str(days), "CAMPAIGNS": str(CAMPAIGNS_PER_DAY)}
    figures: dict[str, float] = {}
    errors = 0
    for kind, name in READS:
        script = HERE / "growth_reads.lua"
        r = None
        for _attempt in range(2):  # once more if wrk failed (or was killed by someone else's cleanup)
            try:
                run_wrk(service.url, script, 16, 2, {**env, "QUERY": kind})  # warm-up
                r = run_wrk(service.url, script, 16, seconds, {**env, "QUERY": kind})
                break
            except (subprocess.CalledProcessError, KeyError, AttributeError) as exc:
                print(f"  {name}: wrk failed: {exc!r}", file=sys.stderr)
        if r is None:  # a failed figure, not a failed run: the other sizes still count
            figures[f"{name} p99 ms"] = figures[f"{name} req/s"] = float("nan")
            continue
        figures[f"{name} p99 ms"] = r.p99_ms
        figures[f"{name} req/s"] = r.requests_per_second
        errors += r.non_2xx + r.errors
    return figures, errors


def sweep_rate(dsn: str, prefix: str, overdue: int) -> float:
    """Rows/s of one sweep pass (shipped batch and duty) over `overdue` messages planted past their deadline."""
    asyncio.run(sweep_bench.seed(dsn, prefix, overdue))
    resolved, took = asyncio.run(sweep_bench.sweep(dsn, DEFAULT_SWEEP_BATCH, DEFAULT_SWEEP_DUTY))
    return resolved / took


def measure(dsn: str, messages: int, args: argparse.Namespace, label: str) -> dict[str, float]:
    service = Service(service_env(dsn))
    try:
        figures, errors = ingest_figures(service, dsn, args.seconds)
        reads, read_errors = read_figures(service, messages, args.seconds)
        figures |= reads
        figures["non-2xx + socket errors"] = errors + read_errors
    finally:
        service.stop()
    figures["sweep rows/s"] = sweep_rate(dsn, f"o{label}-", args.overdue)
    stored, sizes = asyncio.run(disk(dsn))
    figures["disk bytes / message"] = sum(h + i for h, i in sizes.values()) / stored
    for name, (heap, indexes) in sizes.items():
        figures[f"  {name}: table bytes / message"] = heap / stored
        figures[f"  {name}: index bytes / message"] = indexes / stored
    if args.explain:
        asyncio.run(explain(dsn))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,5,10", help="millions of messages stored, ascending (default 1,5,10)")
    parser.add_argument("--seconds", type=float, default=10, help="each wrk run")
    parser.add_argument("--overdue", type=int, default=100_000, help="overdue messages planted for each sweep")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN (ANALYZE, BUFFERS) the reads at each size")
    args = parser.parse_args()
    sizes = [round(float(s) * 1_000_000) for s in args.sizes.split(",")]
    if sizes != sorted(sizes) or sizes[0] < 1:
        raise SystemExit("--sizes: ascending, positive (millions)")
    # The newest seeded message was sent two days ago: every seeded message is past its lifetime and final.
    first_sent = datetime.now(UTC) - timedelta(days=2) - timedelta(days=sizes[-1] / PER_DAY)

    results: list[dict[str, float]] = []
    labels = [f"{s / 1e6:g}M" for s in sizes]
    with database_server() as server:
        dsn = fresh_database(server)
        seeded = 0
        for size, label in zip(sizes, labels, strict=True):
            print(f"growing to {size:,} messages ...", file=sys.stderr)
            took = asyncio.run(grow(dsn, seeded, size, first_sent))
            seeded = size
            print(f"  {label}: seeded (and vacuumed) in {took:.0f} s; measuring", file=sys.stderr)
            results.append(measure(dsn, size, args, label))
            print(f"  {label}: {results[-1]}", file=sys.stderr)

    names = list(results[0])
    headers = ["figure", *labels, *[f"{label} / {labels[0]}" for label in labels[1:]]]
    rows = []
    for name in names:
        values = [r.get(name, float("nan")) for r in results]
        ratios = [f"{v / values[0]:.2f}" if values[0] else "-" for v in values[1:]]
        rows.append([name, *values, *ratios])
    print()
    print(table(headers, rows))
    print(
        "\none database grown in place; one service worker (DLR_CAMPAIGN_STATS_TTL=0); ingest 64 connections,"
        f" reads 16, {args.seconds:g} s each after a 2 s warm-up; sweep: {args.overdue:,} overdue messages,"
        f" batch {DEFAULT_SWEEP_BATCH}, duty {DEFAULT_SWEEP_DUTY}; disk: messages, history, events and"
        " sender_events with their indexes, per message stored. Goal: each figure within 25% of the first"
        " size's at the last."
    )


if __name__ == "__main__":
    main()
