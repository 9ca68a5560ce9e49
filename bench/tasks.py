"""Background tasks benchmark: a campaign's export (time, the service's peak memory) and a campaign's close
(time, and what it costs ingest).

    python -m bench.tasks [--export 1000000] [--close 100000] [--seconds 10] [--connections 16] [--rate 1000]

Seeds a campaign of --export messages (a third final, with error codes; text with commas and quotes) and one
of --close open messages into a fresh database, starts `dlr-tracker serve` with the default task settings,
then:
- export: queues a CSV export, waits for it, downloads the result (streamed, counted, thrown away); prints
  the task's time, the download's, the rows and bytes, and the service process's peak RSS (VmHWM) before and
  after -- an export held in memory would show as hundreds of megabytes;
- close: measures ingest p99 under a steady offered load (wrk, about --rate requests/s) for --seconds, then
  again while the close runs (one run), and the close's time.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import asyncpg
import httpx2

from bench.harness import BackgroundLoad, Service, WrkResult, database_server, fresh_database, run_wrk, table

HERE = Path(__file__).resolve().parent

SEED = """
INSERT INTO messages (id, status, segment_statuses, segment_updated_at, campaign, recipient, error,
                      sent_at, expires_at, created_at, updated_at, final_at, version)
SELECT $1 || lpad(g::text, 8, '0'),
       CASE WHEN $4 AND g % 3 = 0 THEN 'UNDELIV' ELSE 'ACCEPTD' END,
       ARRAY[CASE WHEN $4 AND g % 3 = 0 THEN 'UNDELIV' ELSE 'ACCEPTD' END],
       ARRAY[t], $1, '+38050' || lpad(g::text, 7, '0'),
       CASE WHEN $4 AND g % 3 = 0 THEN 'code "' || g % 100 || '", retry' END,
       t, t + interval '1 day', t, t, CASE WHEN $4 AND g % 3 = 0 THEN t END, 1
FROM (SELECT g, now() - interval '1 hour' + g * interval '1 millisecond' AS t
      FROM generate_series($2::int, $3::int) g) s
"""


async def seed(dsn: str, campaign: str, count: int, with_finals: bool) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for start in range(0, count, 200_000):
            await conn.execute(SEED, campaign, start + 1, min(count, start + 200_000), with_finals)
        await conn.execute("VACUUM ANALYZE messages")
    finally:
        await conn.close()


def run_task(url: str, path: str, body: dict[str, str]) -> tuple[dict[str, object], float]:
    started = time.perf_counter()
    task_id = httpx2.post(f"{url}{path}", json=body, timeout=60).json()["data"]["task_id"]
    while True:
        task = httpx2.get(f"{url}/tasks/{task_id}", timeout=60).json()["data"]
        if task["state"] in ("done", "failed", "cancelled"):
            if task["state"] != "done":
                raise SystemExit(f"task {task_id} {task['state']}: {task['error']}")
            return task, time.perf_counter() - started
        time.sleep(0.2)


def download(url: str, path: str) -> tuple[int, float]:
    started, size = time.perf_counter(), 0
    with httpx2.stream("GET", f"{url}{path}", timeout=600) as response:
        for chunk in response.iter_bytes():
            size += len(chunk)
    return size, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", type=int, default=1_000_000, help="messages in the exported campaign")
    parser.add_argument("--close", type=int, default=100_000, help="open messages in the closed campaign")
    parser.add_argument("--seconds", type=float, default=10, help="ingest measured this long before the close")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate", type=float, default=1000, help="the steady ingest load, requests/s in all")
    args = parser.parse_args()
    paced = {"DELAY_MS": str(max(1, round(args.connections * 1000 / args.rate)))}
    script = HERE / "ingest_unique.lua"

    with database_server() as server:
        dsn = fresh_database(server)
        started = time.perf_counter()
        asyncio.run(seed(dsn, "exported", args.export, True))
        asyncio.run(seed(dsn, "closed", args.close, False))
        print(f"seeded {args.export:,} + {args.close:,} messages in {time.perf_counter() - started:.1f} s")
        service = Service({"DATABASE_URL": dsn, "DLR_SWEEP_INTERVAL": "86400"})
        try:
            rss_before = service.peak_rss_mb()
            exported, export_seconds = run_task(service.url, "/campaigns/exported/export", {"format": "csv"})
            size, download_seconds = download(service.url, exported["result"]["download"])  # type: ignore[index]
            rss_after = service.peak_rss_mb()

            before = run_wrk(service.url, script, args.connections, args.seconds, env=paced)
            load = BackgroundLoad(service.url, script, args.connections, paced)
            closed, close_seconds = run_task(service.url, "/campaigns/closed/close", {"status": "EXPIRED"})
            during = load.stop()
        finally:
            service.stop()

    result = exported["result"]
    print()
    print(
        table(
            ["measure", "value"],
            [
                ["export: messages", f"{result['rows']:,}"],  # type: ignore[index]
                ["export: task time, s", export_seconds],
                ["export: rows/s", result["rows"] / export_seconds],  # type: ignore[index]
                ["export: download time, s", download_seconds],
                ["export: CSV bytes", f"{size:,}"],
                ["service peak RSS before / after the export, MB", f"{rss_before:.0f} / {rss_after:.0f}"],
                ["close: messages resolved", f"{closed['result']['resolved']:,}"],  # type: ignore[index]
                ["close: task time (under the steady load), s", close_seconds],
                ["ingest req/s before / during the close", _pair(before, during, "rps")],
                ["ingest p99 ms before / during the close", _pair(before, during, "p99")],
                [
                    "ingest non-2xx / socket errors",
                    f"{before.non_2xx + during.non_2xx} / {before.errors + during.errors}",
                ],
            ],
        )
    )
    print(
        f"\n{args.connections} connections at about {args.rate:.0f} requests/s ({paced['DELAY_MS']} ms between a"
        " connection's requests), default DLR_TASK_BATCH and DLR_TASK_DUTY, one run"
    )


def _pair(before: WrkResult, after: WrkResult, what: str) -> str:
    if what == "rps":
        return f"{before.requests_per_second:,.0f} / {after.requests_per_second:,.0f}"
    return f"{before.p99_ms:.1f} / {after.p99_ms:.1f}"


if __name__ == "__main__":
    main()
