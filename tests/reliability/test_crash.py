"""Crash under load: `kill -9` and SIGTERM while 32 senders post reports; after a restart every report the
service acknowledged is stored.

The database survives the service (DATABASE_URL on the test server), or, in the zero-config case, the
embedded PostgreSQL the killed service started is left running and the next `serve` on the same data
directory must pick it up. A `SenderLoad` records every acknowledgement; `lost_reports` looks for each
one in the history rows.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import fetch
from tests.processes import ServiceProcess
from tests.reliability.load import SenderLoad, lost_reports, missing_over_http, summary
from tests.reliability.postgres_server import postmaster, stop_server
from tests.reliability.scale import pick

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

LOAD_SECONDS = pick(1.5, 6.0)  # load before the signal
AFTER_SIGNAL_SECONDS = 0.5  # the senders keep posting into the dying service
CYCLES = int(pick(1, 3))  # signal, restart, again


async def load_then_signal(service: ServiceProcess, sig: int, tag: str) -> SenderLoad:
    async with SenderLoad(service.url, tag=tag) as load:
        await asyncio.sleep(LOAD_SECONDS)
        service.proc.send_signal(sig)
        await asyncio.sleep(AFTER_SIGNAL_SECONDS)
    return load


def wait_exit(service: ServiceProcess, timeout: float = 45) -> int:
    """The exit code of a service already signalled (stop() would signal it a second time: uvicorn takes
    a second SIGTERM as "force exit")."""
    try:
        return service.proc.wait(timeout)
    except Exception:
        service.stop(signal.SIGKILL)
        raise AssertionError(f"service did not exit in {timeout}s:\n{service.output()}") from None


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_acknowledged_reports_survive_a_crash_under_load(tmp_path: Path, fresh_database, sig: int) -> None:  # type: ignore[no-untyped-def]
    """32 senders post single form reports, JSON objects and JSON batches with unique ids; the service gets
    SIGKILL (or SIGTERM) mid-load, is started again on the same database (CYCLES times); then every
    acknowledged (id, status) has its history and message row and the restarted service finds every id.
    With SIGTERM the service also exits 0 (a graceful drain)."""
    dsn = fresh_database()
    acknowledged: list[tuple[str, str]] = []
    requests = failed = 0
    for cycle in range(CYCLES):
        service = ServiceProcess(tmp_path, env={"DATABASE_URL": dsn}, name=f"cycle{cycle}")
        try:
            service.wait_ready()
            load = asyncio.run(load_then_signal(service, sig, f"c{cycle}"))
            code = wait_exit(service)
        finally:
            if service.proc.poll() is None:
                service.stop(signal.SIGKILL)
        assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 0), service.output()
        assert load.surprises == [], load.surprises[:5]
        assert len(load.acknowledged) > 50, "the load did not get going before the signal"
        acknowledged += load.acknowledged
        requests += len(load.requests)
        failed += sum(1 for r in load.requests if r.status is None or r.status >= 300)

    again = ServiceProcess(tmp_path, env={"DATABASE_URL": dsn}, name="after")
    try:
        again.wait_ready()
        lost = lost_reports(dsn, acknowledged)
        unseen = missing_over_http(again.url, [mid for mid, _ in acknowledged])
    finally:
        assert again.stop() == 0, again.output()
    stored = fetch(dsn, "SELECT count(*) AS n FROM history")[0]["n"]
    name = "kill-9" if sig == signal.SIGKILL else "sigterm"
    summary(
        f"crash[{name}]",
        cycles=CYCLES,
        requests=requests,
        acknowledged=len(acknowledged),
        lost=len(lost),
        failed_requests=failed,
        stored_unacknowledged=stored - len(acknowledged),
    )
    assert lost == [], f"{len(lost)} acknowledged reports lost, e.g. {lost[:5]}"
    assert unseen == []


@pytest.mark.parametrize("postgres_too", [False, True], ids=["postgres-left-running", "postgres-killed-too"])
def test_kill_9_with_the_embedded_server_then_serve_again(tmp_path: Path, postgres_too: bool) -> None:
    """Zero-config (no DATABASE_URL): `kill -9` the service under load. The embedded PostgreSQL it started
    is orphaned and keeps running (or, the whole machine gone, is killed -9 too and leaves a stale
    postmaster.pid); the next `serve` on the same DLR_DATA_DIR starts (it attaches to the orphan, or
    starts the server again), finds every acknowledged report, and on SIGTERM stops the server."""
    data_dir = tmp_path / "data"
    pgdata = data_dir / "pgdata"
    env = {"DLR_DATA_DIR": str(data_dir)}
    first = ServiceProcess(tmp_path, env=env, name="embedded-first")
    second: ServiceProcess | None = None
    try:
        first.wait_ready(timeout=120)
        before = postmaster(pgdata)
        assert before is not None
        load = asyncio.run(load_then_signal(first, signal.SIGKILL, "e"))
        assert wait_exit(first) == -signal.SIGKILL
        assert load.surprises == [], load.surprises[:5]
        orphan = postmaster(pgdata)
        assert orphan is not None, "the embedded server died with the service"
        assert orphan.pid == before.pid
        if postgres_too:
            kill_server(orphan.pid)
            assert (pgdata / "postmaster.pid").exists(), "a stale postmaster.pid is the point of this case"

        started = time.monotonic()
        second = ServiceProcess(tmp_path, env=env, name="embedded-second")
        second.wait_ready(timeout=120)
        ready_after = time.monotonic() - started
        now = postmaster(pgdata)
        assert now is not None
        attached = now.pid == orphan.pid
        lost = lost_reports(now.dsn, load.acknowledged)
        unseen = missing_over_http(second.url, [mid for mid, _ in load.acknowledged])
        assert second.stop() == 0, second.output()
        left_running = postmaster(pgdata) is not None
    finally:
        for service in (first, second):
            if service is not None and service.proc.poll() is None:
                service.stop(signal.SIGKILL)
        stop_server(pgdata)
    summary(
        f"crash[kill-9 embedded, {'postgres killed too' if postgres_too else 'postgres left running'}]",
        requests=len(load.requests),
        acknowledged=len(load.acknowledged),
        lost=len(lost),
        next_serve="attached to the running server" if attached else "started the server again",
        ready_after_s=ready_after,
    )
    assert attached is not postgres_too
    assert lost == [], f"{len(lost)} acknowledged reports lost, e.g. {lost[:5]}"
    assert unseen == []
    assert not left_running, "SIGTERM on the second serve left the embedded server running"


def kill_server(pid: int, timeout: float = 10) -> None:
    """SIGKILL the postmaster and wait until its backends, which notice its death, are gone too."""
    server = psutil.Process(pid)
    backends = server.children(recursive=True)
    server.kill()
    _, alive = psutil.wait_procs([server, *backends], timeout=timeout)
    assert alive == [], f"PostgreSQL processes outlived their postmaster: {alive}"
