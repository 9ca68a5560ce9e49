"""Before and after, side by side: the same ingest load against two checkouts, interleaved.

    python -m bench.compare --before ../dlr-tracker-old [--after .] [--rounds 4] [--seconds 10]

Each checkout runs its own `dlr-tracker serve` (from its own `.venv`, which must exist: `python3 -m venv
.venv && .venv/bin/pip install -e .` there) on a fresh database of one PostgreSQL server, and wrk sends both
the same realistic traffic (bench/ingest_realistic.lua), alternating before, after, before, after ... so that
whatever else the machine does falls on both alike. Prints req/s and p99 per round, the medians and the
after/before ratio of the medians, and the median of each round's after/before (a pair run back to back).
Machines here differ by 2x from one day to the next: only such same-run ratios count.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from bench.harness import Service, WrkResult, database_server, fresh_database, table
from bench.ingest import run_load


def serve_command(checkout: Path) -> list[str]:
    script = checkout / ".venv" / "bin" / "dlr-tracker"
    if not script.exists():
        raise SystemExit(f"{script} is missing: make the checkout's .venv first (see --help)")
    return [str(script), "serve"]


def one_round(checkout: Path, server: str, seconds: float, connections: int) -> WrkResult:
    dsn = fresh_database(server, migrated=False)  # each checkout's `serve` brings it to its own schema
    service = Service({"DATABASE_URL": dsn}, serve_command(checkout))
    try:
        run_load(service.url, 2, connections)  # warm-up: connections, caches, plans
        result, _acked = run_load(service.url, seconds, connections)
        return result
    finally:
        service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the checkout to compare against")
    parser.add_argument("--after", type=Path, default=Path.cwd(), help="the checkout measured (default: here)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    sides = {"before": args.before.resolve(), "after": args.after.resolve()}
    results: dict[str, list[WrkResult]] = {"before": [], "after": []}
    rows = []
    with database_server() as server:
        for n in range(args.rounds):
            for side, checkout in sides.items():
                result = one_round(checkout, server, args.seconds, args.connections)
                results[side].append(result)
                rows.append([n + 1, side, result.requests_per_second, result.p99_ms, result.non_2xx + result.errors])
                print(f"  round {n + 1} {side}: {result.requests_per_second:,.0f} req/s", file=sys.stderr)
    print(table(["round", "checkout", "req/s", "p99 ms", "non-2xx"], rows))
    medians = {side: statistics.median(r.requests_per_second for r in runs) for side, runs in results.items()}
    p99 = {side: statistics.median(r.p99_ms for r in runs) for side, runs in results.items()}
    paired = [
        a.requests_per_second / b.requests_per_second for b, a in zip(results["before"], results["after"], strict=True)
    ]
    print()
    print(
        table(
            ["", "before", "after", "after / before"],
            [
                ["median req/s", medians["before"], medians["after"], f"{medians['after'] / medians['before']:.2f}"],
                ["median p99 ms", p99["before"], p99["after"], f"{p99['after'] / p99['before']:.2f}"],
                # Each round's pair ran back to back: its ratio is free of the machine's drift across the run.
                ["median of the rounds' ratios", "", "", f"{statistics.median(paired):.2f}"],
            ],
        )
    )
    print(f"\nbefore: {sides['before']}\nafter: {sides['after']}\n{args.connections} connections, wrk 1 thread")


if __name__ == "__main__":
    main()
