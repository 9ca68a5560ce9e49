"""Soak: a steady moderate load against one `serve`; memory, connections, descriptors and latency stay flat.

Short form: 20 s in 2-second windows; `DLR_RELIABILITY=full`: 10 minutes in 30-second windows. wrk drives
the load (tests/reliability/soak.lua, paced by its delay()); one wrk run per window gives that window's
latency percentiles, and the test samples the service between times.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import psutil
import pytest

from tests.conftest import fetch
from tests.processes import ServiceProcess
from tests.reliability.scale import pick

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("wrk") is None, reason="the soak load generator is wrk"),
]

SECONDS = int(pick(20, 600))
WINDOW = int(pick(2, 30))
SAMPLE_EVERY = float(pick(0.5, 3))
REPORTS_PER_SECOND = 300
READ_EVERY = 11  # one request in 11 is a read: 300 reports/s plus 30 reads/s
RATE = REPORTS_PER_SECOND * READ_EVERY // (READ_EVERY - 1)
CONNECTIONS = 8
POOL_SIZE = 10
SEEDS = 1000
CAMPAIGNS = 10
SCRIPT = Path(__file__).with_name("soak.lua")

# Bounds, and why:
# - RSS: after the first window the service's heap has seen every code path, its pools and caches are full
#   (asyncpg statement caches, one campaign-stats entry per campaign, bounded metric labels). What is left
#   is allocator noise: a few MB. 25 MB over 10 minutes is a leak of ~40 KB/s or ~140 bytes per report;
#   anything kept per report (a message, a history row) would cost more than that and show.
RSS_GROWTH_MB = 25
# - Descriptors: wrk reconnects every window; a leak of one per request would be thousands.
FD_GROWTH = 20
# - Latency: p99 at the end within 2x p99 after warm-up, each taken as the median of three windows' p99 (the
#   last three; the first three after the warm-up window). On a 2-core machine shared with other test runs
#   one window's millisecond-scale p99 can double from scheduling noise alone (the `load` column shows the
#   machine's load), so one noisy window does not decide, and growth below an absolute slack of 10 ms is not
#   counted. The `cpu/req` column (the service's CPU time per request) shows whether the service itself
#   came to do more work per request, whatever the machine's noise. In the short run (2 s windows of ~660
#   requests, p99 = the 7th slowest) a pause of the machine's lasting a few seconds moves three windows at once:
#   CI saw p50 go from 3 to 11 ms and p99 from 13 to 39 ms in the last 6 s at an unchanged cpu/req, and a quiet
#   run here saw the same in its middle windows. There the slack is 40 ms: only a gross growth fails it.
P99_SLACK_MS = pick(40.0, 10.0)
P99_WINDOWS = 3
MIN_RATE_SHARE = 0.9  # below this the generator (or the service) did not sustain the rate: no valid soak


@dataclass
class Window:
    index: int
    requests: int
    seconds: float
    reports_acked: int
    non2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    rss_mb: float
    max_connections: int
    fds: int
    cpu_ms_per_request: float
    load: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def rss_mb(pid: int) -> float:
    return float(sum(p.memory_info().rss for p in tree(pid))) / 2**20


def cpu_seconds(pid: int) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in tree(pid))


def open_fds(pid: int) -> int:
    return sum(p.num_fds() for p in tree(pid))


def connections(dsn: str) -> int:
    name = urlsplit(dsn).path.lstrip("/")
    rows = fetch(
        dsn,
        "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'dlr-tracker' AND datname = $1",
        name,
    )
    return int(rows[0]["n"])


def seed(url: str) -> None:
    """Registered messages for the reads to find."""
    batch = [{"id": f"soak-seed-{n}", "campaign": f"soak-{n % CAMPAIGNS}", "segments": 1} for n in range(SEEDS)]
    response = httpx2.post(f"{url}/messages", json=batch, timeout=60)
    assert response.status_code == 200, response.text[:300]


def run_window(index: int, url: str, pid: int, dsn: str) -> Window:
    env = {
        **os.environ,
        "RATE": str(RATE),
        "READ_EVERY": str(READ_EVERY),
        "RUN_ID": str(index),
        "SEEDS": str(SEEDS),
        "CAMPAIGNS": str(CAMPAIGNS),
    }
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{WINDOW}s", "--timeout", "10s", "-s", str(SCRIPT), url]
    most_connections, fds = 0, 0
    cpu_before = cpu_seconds(pid)
    deadline = time.monotonic() + WINDOW + 30
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as wrk:
        while wrk.poll() is None:
            if time.monotonic() > deadline:
                wrk.kill()
                raise AssertionError("wrk did not finish its window")
            most_connections = max(most_connections, connections(dsn))
            fds = max(fds, open_fds(pid))
            time.sleep(SAMPLE_EVERY)
        output, _ = wrk.communicate()
    assert wrk.returncode == 0, output
    line = next((ln for ln in output.splitlines() if ln.startswith("SOAK ")), None)
    assert line is not None, output
    figures = json.loads(line.removeprefix("SOAK "))
    return Window(
        index=index,
        requests=figures["requests"],
        seconds=figures["duration_us"] / 1e6,
        reports_acked=figures["reports_acked"],
        non2xx=figures["non2xx"],
        socket_errors=figures["socket_errors"] + figures["timeouts"],
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        rss_mb=rss_mb(pid),
        max_connections=most_connections,
        fds=fds,
        cpu_ms_per_request=(cpu_seconds(pid) - cpu_before) * 1000 / max(1, figures["requests"]),
        load=os.getloadavg()[0],
    )


def test_steady_load_keeps_memory_connections_and_latency_flat(
    tmp_path: Path, fresh_database: Callable[[], str]
) -> None:
    """300 generic reports a second (forms and JSON, one- and two-part messages) plus 30 reads a second
    (a message by id, campaign statistics, a campaign's page) against one `serve`, in back-to-back windows:
    no answer other than 2xx and no socket error; the rate is sustained; the process tree's RSS at the end is
    within 25 MB of its size after the warm-up window; database connections never exceed the pool; open
    descriptors do not grow; p99 at the end (median of the last three windows) is within 2x p99 after the
    warm-up (median of the next three); every acknowledged report is in the history."""
    dsn = fresh_database()
    env = {"DATABASE_URL": dsn, "DLR_DB_POOL_SIZE": str(POOL_SIZE), "LOG_LEVEL": "warning"}
    service = ServiceProcess(tmp_path, env=env, name="soak")
    windows: list[Window] = []
    try:
        service.wait_ready()
        pid = service.proc.pid
        seed(service.url)
        rss_start = rss_mb(pid)
        for index in range(SECONDS // WINDOW):
            windows.append(run_window(index, service.url, pid, dsn))
            assert service.proc.poll() is None, service.output()
    finally:
        assert service.stop() == 0, service.output()

    print()
    for w in windows:
        print(
            f"RELIABILITY soak window {w.index:2d}: t={(w.index + 1) * WINDOW:4d}s rate={w.rate:6.1f}/s "
            f"p50={w.p50_ms:6.2f}ms p99={w.p99_ms:7.2f}ms rss={w.rss_mb:6.1f}MB "
            f"db_connections={w.max_connections} fds={w.fds} cpu/req={w.cpu_ms_per_request:.2f}ms "
            f"load={w.load:.2f} non2xx={w.non2xx} socket_errors={w.socket_errors}"
        )
    warm, last = windows[0], windows[-1]
    p99_early = statistics.median(w.p99_ms for w in windows[1 : 1 + P99_WINDOWS])
    p99_late = statistics.median(w.p99_ms for w in windows[-P99_WINDOWS:])
    requests = sum(w.requests for w in windows)
    acked = sum(w.reports_acked for w in windows)
    stored = fetch(dsn, "SELECT count(*) AS n FROM history")[0]["n"]
    most_connections = max(w.max_connections for w in windows)
    rate = requests / sum(w.seconds for w in windows)
    print(
        f"RELIABILITY soak: seconds={SECONDS} target={RATE}/s achieved={rate:.1f}/s requests={requests} "
        f"reports_acked={acked} stored={stored} errors={sum(w.non2xx + w.socket_errors for w in windows)} "
        f"rss_start={rss_start:.1f}MB rss_after_warmup={warm.rss_mb:.1f}MB rss_end={last.rss_mb:.1f}MB "
        f"max_db_connections={most_connections} pool={POOL_SIZE} fds_after_warmup={warm.fds} fds_end={last.fds} "
        f"p99_after_warmup={p99_early:.2f}ms p99_end={p99_late:.2f}ms"
    )

    assert [w.index for w in windows if w.non2xx or w.socket_errors] == [], "errors under a moderate load"
    assert rate >= MIN_RATE_SHARE * RATE, f"the rate was not sustained: {rate:.1f}/s of {RATE}/s"
    assert last.rss_mb - warm.rss_mb <= RSS_GROWTH_MB, f"RSS grew {last.rss_mb - warm.rss_mb:.1f} MB"
    assert most_connections <= POOL_SIZE
    assert last.fds - warm.fds <= FD_GROWTH
    assert p99_late <= max(2 * p99_early, p99_early + P99_SLACK_MS), "p99 latency grew"
    # Each report is unique, so each acknowledged one is exactly one history row (a report in flight when a
    # window ended may be stored without wrk having counted its answer).
    assert stored >= acked
