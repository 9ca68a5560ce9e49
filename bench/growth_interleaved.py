"""The growth benchmark's reads at two sizes side by side: two databases on one server, measured in turn.

    python -m bench.growth_interleaved [--sizes 1,10] [--rounds 3] [--seconds 10]

bench.growth measures each size after the last, minutes apart, on a machine whose load changes from minute
to minute; a figure that moved may have moved with the machine. This seeds one database per size the same way
(bench.growth's rows, indexes built after the load, VACUUM ANALYZE), starts a service on each, and measures
GET /messages/{id}, the list page and campaign statistics on one, then the other, for --rounds rounds, so that
both sizes meet the same machine. Prints each round and the median of each figure with the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.growth import CAMPAIGNS_PER_DAY, PER_DAY, grow
from bench.harness import Service, database_server, fresh_database, run_wrk, table

HERE = Path(__file__).resolve().parent
READS = [("one", "by id"), ("page", "list page"), ("campaign", "campaign stats")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10", help="two sizes, millions of messages (default 1,10)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    sizes = [round(float(s) * 1_000_000) for s in args.sizes.split(",")]
    labels = [f"{s / 1e6:g}M" for s in sizes]
    first_sent = datetime.now(UTC) - timedelta(days=2) - timedelta(days=max(sizes) / PER_DAY)
    figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with database_server() as server:
        services = []
        try:
            for size, label in zip(sizes, labels, strict=True):
                dsn = fresh_database(server)
                took = asyncio.run(grow(dsn, 0, size, first_sent))
                print(f"{label}: seeded in {took:.0f} s", file=sys.stderr)
                env = {"DATABASE_URL": dsn, "DLR_SWEEP_INTERVAL": "86400", "DLR_CAMPAIGN_STATS_TTL": "0"}
                services.append((label, size, Service(env)))
            for round_ in range(args.rounds):
                for label, size, service in services:
                    days = max(1, -(-size // PER_DAY))
                    env = {"MESSAGES": str(size), "DAYS": str(days), "CAMPAIGNS": str(CAMPAIGNS_PER_DAY)}
                    for kind, name in READS:
                        script = HERE / "growth_reads.lua"
                        run_wrk(service.url, script, 16, 2, {**env, "QUERY": kind})  # warm-up
                        r = run_wrk(service.url, script, 16, args.seconds, {**env, "QUERY": kind})
                        figures.setdefault((name, label), []).append((r.p99_ms, r.requests_per_second))
                        print(
                            f"round {round_ + 1} {label} {name}: p99 {r.p99_ms:.1f} ms, {r.requests_per_second:.1f}/s",
                            file=sys.stderr,
                        )
        finally:
            for _, _, service in services:
                service.stop()
    rows = []
    for _, name in READS:
        for i, what in enumerate(("p99 ms", "req/s")):
            values = [statistics.median(v[i] for v in figures[(name, label)]) for label in labels]
            rows.append([f"{name} {what}", *values, f"{values[1] / values[0]:.2f}"])
    print()
    print(table(["figure (median of the rounds)", *labels, f"{labels[1]} / {labels[0]}"], rows))
    print(f"\n{args.rounds} rounds, sizes measured in turn; 16 connections, {args.seconds:g} s each, one worker each")


if __name__ == "__main__":
    main()
