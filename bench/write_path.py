"""The write path alone: what a report costs between the handler and the commit, in Python and in PostgreSQL.

    python -m bench.write_path [--messages 6400] [--connections 64] [--wal-records]
    BENCH_POSTGRES=15 python -m bench.write_path --wal-records     # a stock PostgreSQL 15, pg_waldump's mix

Drives `ReportWriter.apply` in this process from 64 concurrent callers, each sending ACCEPTD then DELIVRD for
new messages (what bench/ingest.py's unique-id traffic does), with no HTTP in the way. Prints, per report:
this process's CPU, PostgreSQL's CPU (its processes, from /proc), WAL bytes and transactions (as
pg_stat_database counts them: read-only ones too).
`--wal-records` adds pg_waldump's record mix for the run (needs the server's pg_waldump and
read access to its data directory): which records, and how many per report, the WAL is made of.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import uvloop

from bench.harness import ServerCost, database_server, fresh_database, table
from service import database
from service.engine import Report
from service.reports import IncomingReport
from service.statuses import Status
from service.writer import ReportWriter


async def drive(writer: ReportWriter, prefix: str, messages: int, connections: int) -> int:
    async def caller(n: int) -> None:
        for i in range(messages // connections):
            message_id = f"{prefix}-{n}-{i}"
            for status in (Status.ACCEPTD, Status.DELIVRD):
                now = datetime.now(UTC)
                report = IncomingReport(message_id, Report(status), "generic", now, raw_status=status.value)
                await writer.apply([report])

    await asyncio.gather(*(caller(n) for n in range(connections)))
    return 2 * (messages // connections) * connections


async def wal_position(dsn: str) -> tuple[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        position = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
        return str(position), str(await conn.fetchval("SHOW data_directory"))
    finally:
        await conn.close()


async def run(dsn: str, args: argparse.Namespace) -> tuple[float, tuple[float, float, float], int, str, str, str]:
    # The group-commit writers' own pool, as `serve` makes it (statements planned once per connection).
    pool = await database.create_pool(dsn, 4, 10.0, writers=True)
    writer = ReportWriter(pool, lifetime=86400, timeout=10.0)
    writer.start()
    try:
        await drive(writer, "warm", 2 * args.connections, args.connections)
        start, data_dir = await wal_position(dsn)
        server = await asyncio.to_thread(ServerCost, dsn)
        cpu = time.process_time()
        reports = await drive(writer, "run", args.messages, args.connections)
        cpu = time.process_time() - cpu
        cost = await asyncio.to_thread(server.per, reports)
        end, _ = await wal_position(dsn)
    finally:
        await writer.stop()
        await pool.close()
    return 1e6 * cpu / reports, cost, reports, start, end, data_dir


# `Heap/INSERT   31357 ( 21.23)   5704098 ( 36.42)   18584 ( 19.68)   5722682 ( 36.32)`: N, record, FPI, combined.
_STATS_LINE = re.compile(r"^(\S+/\S+)\s+(\d+)\s+\(\s*[\d.]+\)\s+\d+\s+\(\s*[\d.]+\)\s+\d+\s+\(\s*[\d.]+\)\s+(\d+)")


def wal_records(data_dir: str, start: str, end: str, reports: int) -> list[list[object]]:
    """pg_waldump's statistics for the range, as (record type, records per report, bytes per report)."""
    # The pg_waldump beside the running server's own binary (the embedded one's, or Debian's).
    postmaster = int(Path(data_dir, "postmaster.pid").read_text().split()[0])
    waldump = str(Path(os.readlink(f"/proc/{postmaster}/exe")).with_name("pg_waldump"))
    out = subprocess.run(
        [waldump, "--stats=record", "-p", f"{data_dir}/pg_wal", "-s", start, "-e", end],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        match = re.match(
            r"^(\S+/\S+)\s+(\d+)\s+\(\s*[\d.]+\)\s+\d+\s+\(\s*[\d.]+\)\s+\d+\s+\(\s*[\d.]+\)\s+(\d+)", line
        )
        if match:
            rows.append([match.group(1), int(match.group(2)) / reports, int(match.group(3)) / reports])
    rows.sort(key=lambda row: -float(row[2]))  # type: ignore[arg-type]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=6400)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--wal-records", action="store_true")
    args = parser.parse_args()
    with database_server() as server:
        dsn = fresh_database(server)
        python_us, (wal, commits, server_us), reports, start, end, data_dir = uvloop.run(run(dsn, args))
        print()
        print(
            table(
                ["reports", "Python CPU us/report", "PostgreSQL CPU us/report", "WAL bytes/report", "reports/xact"],
                [[reports, python_us, server_us, wal, 1 / commits if commits else 0.0]],
            )
        )
        if args.wal_records:
            print()
            print(table(["WAL record", "records/report", "bytes/report"], wal_records(data_dir, start, end, reports)))


if __name__ == "__main__":
    main()
