"""dlr-tracker through PgBouncer in transaction mode, against the same service connected directly.

    python -m bench.pooler [--seconds 8] [--runs 2]

Needs Debian's `postgresql-15` and `pgbouncer` packages (it runs them itself, as the `postgres` user when run
as root). Starts a stock PostgreSQL 15 and a PgBouncer in front of it (`pool_mode = transaction`,
`default_pool_size = 20`), then, each on a fresh database and interleaved for --runs rounds:

- direct: the service connected to PostgreSQL as shipped (prepared statements on);
- direct, DLR_DB_PREPARED_STATEMENTS=off: the cost of the setting alone;
- PgBouncer: the service through PgBouncer with DLR_DB_PREPARED_STATEMENTS=off (what docs/SCALING.md says
  to run); as shipped it does not start there (the first statement fails: PgBouncer refuses the pool's
  `plan_cache_mode` startup parameter).

Each drives bench.ingest's realistic traffic (64 connections) and GET /messages/{id} (16 connections), and
checks on the way that a long poll (GET /events?wait=5) answers with a report posted while it waits.
Prints req/s and p99 per setup (median of the rounds).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2

from bench.harness import Service, WrkResult, free_port, fresh_database, parse_wrk, stock_postgres, table, wrk_command

HERE = Path(__file__).resolve().parent

INI = """
[databases]
* = host=127.0.0.1 port={pg_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir = {tmp}
auth_type = trust
auth_file = {tmp}/users.txt
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
logfile = {tmp}/pgbouncer.log
pidfile = {tmp}/pgbouncer.pid
"""


@contextlib.contextmanager
def pgbouncer(server: str) -> Iterator[str]:
    """PgBouncer in transaction mode in front of `server`; yields its URL with the server's path."""
    binary = shutil.which("pgbouncer")
    if binary is None:
        raise SystemExit("pgbouncer is missing: apt-get install pgbouncer")
    pg_port = int(re.search(r":(\d+)/", server).group(1))  # type: ignore[union-attr]
    port = free_port()
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # it refuses to run as root
    with tempfile.TemporaryDirectory(prefix="dlr-bench-pgbouncer-") as tmp:
        Path(tmp, "pgbouncer.ini").write_text(INI.format(pg_port=pg_port, port=port, tmp=tmp))
        Path(tmp, "users.txt").write_text('"postgres" ""\n')
        if as_postgres:
            for path in [Path(tmp), *Path(tmp).iterdir()]:
                shutil.chown(path, "postgres")
        proc = subprocess.Popen(
            [*as_postgres, binary, f"{tmp}/pgbouncer.ini"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            time.sleep(1)
            yield f"postgresql://postgres@127.0.0.1:{port}/"
        finally:
            proc.terminate()
            proc.wait(10)


def long_poll_sees_a_new_report(service: Service) -> bool:
    """GET /events?after=latest, then ?wait=5 after its cursor while a report is posted: the event comes back."""
    with httpx2.Client(base_url=service.url, timeout=30) as client:
        cursor = client.get("/events", params={"after": "latest", "limit": 1}).json()["data"]["next_cursor"]
        message_id = f"poll-{uuid.uuid4().hex[:8]}"

        def post() -> None:
            time.sleep(1)
            client.post("/dlr/generic", data={"id": message_id, "status": "ACCEPTD"})

        thread = threading.Thread(target=post)
        thread.start()
        items: list[dict[str, object]] = []
        deadline = time.monotonic() + 10
        while not items and time.monotonic() < deadline:
            page = client.get("/events", params={"after": cursor, "wait": 5, "limit": 1000}).json()["data"]
            items = [i for i in page["items"] if i["data"]["id"] == message_id]  # type: ignore[index]
            cursor = page["next_cursor"]
        thread.join()
        return bool(items)


def wrk(url: str, script: str, connections: int, seconds: float, env: dict[str, str]) -> WrkResult:
    out = subprocess.run(
        wrk_command(url, HERE / script, connections, seconds),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    try:
        return parse_wrk(out.stdout)
    except (KeyError, AttributeError):
        raise SystemExit(f"wrk gave no figures:\n{out.stdout}\n{out.stderr}") from None


def measure(dsn: str, env: dict[str, str], seconds: float) -> tuple[WrkResult, WrkResult, bool]:
    service = Service({"DATABASE_URL": dsn, "DLR_SWEEP_INTERVAL": "86400", **env})
    try:
        ingest_env = {"RUN_ID": uuid.uuid4().hex[:8]}
        wrk(service.url, "ingest_realistic.lua", 64, 2, ingest_env)  # warm-up
        ingest = wrk(service.url, "ingest_realistic.lua", 64, seconds, {"RUN_ID": uuid.uuid4().hex[:8]})
        # The ids the ingest runs stored are `<RUN_ID>-t0-<n>`; by id reads them back.
        reads = wrk(service.url, "pooler_reads.lua", 16, seconds, {"RUN_ID": ingest_env["RUN_ID"]})
        polled = long_poll_sees_a_new_report(service)
    finally:
        service.stop()
    return ingest, reads, polled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    setups = [
        ("direct, as shipped", False, {}),
        ("direct, DLR_DB_PREPARED_STATEMENTS=off", False, {"DLR_DB_PREPARED_STATEMENTS": "off"}),
        ("PgBouncer (transaction), DLR_DB_PREPARED_STATEMENTS=off", True, {"DLR_DB_PREPARED_STATEMENTS": "off"}),
    ]
    results: dict[str, list[tuple[WrkResult, WrkResult, bool]]] = {name: [] for name, _, _ in setups}
    with stock_postgres("15") as server, pgbouncer(server) as bouncer:
        for _ in range(args.runs):
            for name, pooled, env in setups:
                dsn = fresh_database(server)
                if pooled:
                    dsn = bouncer + dsn.rsplit("/", 1)[1]
                results[name].append(measure(dsn, env, args.seconds))
                print(f"  {name}: {results[name][-1][0].requests_per_second:,.0f} req/s", flush=True)
    rows = []
    base = statistics.median(r[0].requests_per_second for r in results[setups[0][0]])
    for name, runs in results.items():
        ingest = statistics.median(r[0].requests_per_second for r in runs)
        rows.append(
            [
                name,
                ingest,
                f"{ingest / base:.2f}",
                statistics.median(r[0].p99_ms for r in runs),
                statistics.median(r[1].requests_per_second for r in runs),
                statistics.median(r[1].p99_ms for r in runs),
                sum(r[0].non_2xx + r[0].errors + r[1].non_2xx + r[1].errors for r in runs),
                "yes" if all(r[2] for r in runs) else "NO",
            ]
        )
    print()
    print(
        table(
            [
                "setup",
                "ingest req/s",
                "x direct",
                "ingest p99 ms",
                "by id req/s",
                "by id p99 ms",
                "non-2xx",
                "long poll woke",
            ],
            rows,
        )
    )
    print(f"\nmedian of {args.runs} interleaved rounds of {args.seconds:g} s; stock PostgreSQL 15; one service worker")


if __name__ == "__main__":
    main()
