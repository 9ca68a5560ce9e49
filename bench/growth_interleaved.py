"""The growth benchmark's figures at two sizes side by side: two databases on one server, measured in turn.

    python -m bench.growth_interleaved [--sizes 1,10] [--rounds 3] [--seconds 10]

bench.growth measures each size after the last, minutes apart, on a machine whose load changes from minute
to minute; a figure that moved may have moved with the machine. This seeds one database per size the same way
(bench.growth's rows, indexes built after the load, VACUUM ANALYZE), starts a service on each, and measures
ingest (req/s, p99, WAL bytes per report), GET /messages/{id}, the list page, campaign statistics and the
expiry sweep (--overdue messages planted past their deadline, one pass at the shipped batch and duty) on one,
then the other, for --rounds rounds, so that both sizes meet the same machine. Prints each round and the
median of each figure with the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from datetime import UTC, datetime, timedelta

from bench.growth import PER_DAY, READS, grow, ingest_figures, read_figures, service_env, sweep_rate
from bench.harness import Service, database_server, fresh_database, table

FIGURES = (
    ["ingest req/s", "ingest p99 ms", "WAL bytes / report"]
    + [f"{name} {what}" for _, name in READS for what in ("p99 ms", "req/s")]
    + ["sweep rows/s"]
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10", help="two sizes, millions of messages (default 1,10)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--overdue", type=int, default=100_000, help="overdue messages planted for each sweep")
    args = parser.parse_args()
    sizes = [round(float(s) * 1_000_000) for s in args.sizes.split(",")]
    labels = [f"{s / 1e6:g}M" for s in sizes]
    first_sent = datetime.now(UTC) - timedelta(days=2) - timedelta(days=max(sizes) / PER_DAY)
    figures: dict[tuple[str, str], list[float]] = {}
    with database_server() as server:
        services = []
        try:
            for size, label in zip(sizes, labels, strict=True):
                dsn = fresh_database(server)
                took = asyncio.run(grow(dsn, 0, size, first_sent))
                print(f"{label}: seeded in {took:.0f} s", file=sys.stderr)
                services.append((label, size, dsn, Service(service_env(dsn))))
            for round_ in range(args.rounds):
                for label, size, dsn, service in services:
                    measured, _ = ingest_figures(service, dsn, args.seconds)
                    measured |= read_figures(service, size, args.seconds)[0]
                    measured["sweep rows/s"] = sweep_rate(dsn, f"o{label}r{round_}-", args.overdue)
                    for figure, value in measured.items():
                        figures.setdefault((figure, label), []).append(value)
                    shown = ", ".join(f"{figure} {value:,.1f}" for figure, value in measured.items())
                    print(f"round {round_ + 1} {label}: {shown}", file=sys.stderr, flush=True)
        finally:
            for _, _, _, service in services:
                service.stop()
    rows = []
    for figure in FIGURES:
        values = [statistics.median(figures[(figure, label)]) for label in labels]
        rows.append([figure, *values, f"{values[1] / values[0]:.2f}"])
    print()
    print(table(["figure (median of the rounds)", *labels, f"{labels[1]} / {labels[0]}"], rows))
    print(
        f"\n{args.rounds} rounds, sizes measured in turn, one worker each; ingest 64 connections, reads 16,"
        f" {args.seconds:g} s each after a 2 s warm-up; sweep: {args.overdue:,} overdue messages per round"
    )


if __name__ == "__main__":
    main()
