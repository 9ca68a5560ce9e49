"""Tasks across real `dlr-tracker` processes: the CLI's commands, two serving processes sharing the queue
(each task run once), and a `kill -9` mid-task (the task finishes after a restart, nothing applied twice)."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.conftest import fetch
from tests.processes import ServiceProcess, command

pytestmark = pytest.mark.slow

# Short leases, so that a killed runner's task is taken over within seconds.
ENV = {"DLR_TASK_LEASE": "2", "DLR_TASK_POLL": "0.2", "DLR_SWEEP_INTERVAL": "3600"}


def seed(url: str, campaign: str, n: int) -> None:
    with httpx2.Client(timeout=60) as http:
        for start in range(0, n, 1000):
            batch = [{"id": f"{campaign}-{i:05}", "campaign": campaign} for i in range(start, min(n, start + 1000))]
            assert http.post(f"{url}/messages", json=batch).json()["code"] == 0


def queue(url: str, path: str, body: dict[str, Any]) -> int:
    answer = httpx2.post(f"{url}{path}", json=body, timeout=30).json()
    assert answer["code"] == 100, answer
    return int(answer["data"]["task_id"])


def task(url: str, task_id: int) -> dict[str, Any]:
    data: dict[str, Any] = httpx2.get(f"{url}/tasks/{task_id}", timeout=30).json()["data"]
    return data


def wait_until(check: Any, timeout: float = 90, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def cli(dsn: str, url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "DATABASE_URL": dsn, "DLR_URL": url}
    return subprocess.run([*command(), *args], env=env, capture_output=True, timeout=120, check=False)


def test_cli_commands_run_tasks_through_the_api(tmp_path: Path, fresh_database) -> None:  # type: ignore[no-untyped-def]
    """`dlr-tracker export` writes the campaign's CSV (to a file or standard output), `close` prints what it
    resolved, `replay` what it replayed; a refused operation exits 1 with the service's message."""
    dsn = fresh_database()
    service = ServiceProcess(tmp_path, env={"DATABASE_URL": dsn, **ENV})
    try:
        service.wait_ready()
        seed(service.url, "cli", 5)
        httpx2.post(f"{service.url}/dlr/generic", json={"id": "q", "status": "BOGUS"})
        out = tmp_path / "cli.csv"
        done = cli(dsn, service.url, "export", "cli", "--format", "csv", "--output", str(out))
        assert done.returncode == 0, done.stderr
        rows = list(csv.reader(io.StringIO(out.read_text(), newline="")))
        assert [r[0] for r in rows] == ["id", *(f"cli-{i:05}" for i in range(5))]
        to_stdout = cli(dsn, service.url, "export", "cli", "--format", "ndjson")
        assert to_stdout.returncode == 0
        assert len(to_stdout.stdout.splitlines()) == 5
        closed = cli(dsn, service.url, "close", "cli", "--status", "EXPIRED")
        assert closed.returncode == 0, closed.stderr
        assert b"resolved 5 messages" in closed.stdout
        assert b"EXPIRED\t5" in closed.stdout
        replayed = cli(dsn, service.url, "replay", "--dialect", "generic")
        assert replayed.returncode == 0, replayed.stderr
        assert b"replayed 0 payloads; 1 still fail" in replayed.stdout
        missing = cli(dsn, service.url, "close", "nope", "--status", "DELETED")
        assert missing.returncode == 1
        assert b"404 campaign 'nope' not found" in missing.stderr
        unreachable = cli(dsn, "http://127.0.0.1:9", "replay")
        assert unreachable.returncode == 1
        assert b"cannot reach" in unreachable.stderr
    finally:
        service.stop()


def test_two_processes_run_each_task_once(tmp_path: Path, fresh_database) -> None:  # type: ignore[no-untyped-def]
    """Two serving processes on one database take tasks from one queue: every task is claimed once, run by one
    of them, and its effect is there once (one close event per open message, one export row per message)."""
    dsn = fresh_database()
    env = {"DATABASE_URL": dsn, "DLR_TASK_BATCH": "100", **ENV}
    services = [ServiceProcess(tmp_path, env=env, name=f"runner{i}") for i in range(2)]
    try:
        for service in services:
            service.wait_ready()
        campaigns = [f"two{i}" for i in range(6)]
        for campaign in campaigns:
            seed(services[0].url, campaign, 300)
        ids = []
        for i, campaign in enumerate(campaigns):
            url = services[i % 2].url
            ids.append(queue(url, f"/campaigns/{campaign}/export", {"format": "ndjson"}))
            ids.append(queue(url, f"/campaigns/{campaign}/close", {"status": "EXPIRED"}))
        wait_until(lambda: all(task(services[0].url, t)["state"] == "done" for t in ids), what="every task done")
        rows = fetch(dsn, "SELECT id, attempts FROM tasks")
        assert {r["id"]: r["attempts"] for r in rows} == dict.fromkeys(ids, 1)
        for i, campaign in enumerate(campaigns):
            exported = httpx2.get(f"{services[1].url}/tasks/{ids[2 * i]}/result", timeout=60).text.splitlines()
            assert len(exported) == len(set(exported)) == 300
            assert {json.loads(line)["campaign"] for line in exported} == {campaign}
        events = Counter(r["id"] for r in fetch(dsn, "SELECT id FROM events WHERE source = 'close'"))
        assert len(events) == 1800
        assert set(events.values()) == {1}
        ran = Counter(
            line.split("running task ", 1)[1].split(" ", 1)[0]
            for service in services
            for line in service.output(None).splitlines()
            if "running task " in line
        )
        assert ran == Counter({str(t): 1 for t in ids})
    finally:
        for service in services:
            service.stop()


def test_a_task_killed_mid_way_finishes_after_a_restart_without_doing_anything_twice(
    tmp_path: Path,
    fresh_database,  # type: ignore[no-untyped-def]
) -> None:
    """`kill -9` of the serving process while a close runs, and again while an export runs: a process started
    afterwards takes each over once its lease lapses and finishes it from where it was committed. Each open
    message is resolved once (one history row, one event), each message exported once."""
    dsn = fresh_database()
    # Small batches and long rests: each task takes several seconds, so the kill lands mid-way.
    env = {"DATABASE_URL": dsn, "DLR_TASK_BATCH": "50", "DLR_TASK_DUTY": "0.2", **ENV}
    first = ServiceProcess(tmp_path, env=env, name="first")
    second = third = None
    try:
        first.wait_ready()
        seed(first.url, "killed", 2000)
        closing = queue(first.url, "/campaigns/killed/close", {"status": "DELETED"})
        wait_until(lambda: task(first.url, closing)["progress"]["done"] >= 200, what="close under way")
        first.stop(signal.SIGKILL)
        interrupted = fetch(dsn, "SELECT state, done, total FROM tasks WHERE id = $1", closing)[0]
        assert interrupted["state"] == "running"
        assert 0 < interrupted["done"] < interrupted["total"]

        second = ServiceProcess(tmp_path, env=env, name="second")
        second.wait_ready()
        wait_until(lambda: task(second.url, closing)["state"] == "done", what="close finished after restart")
        exporting = queue(second.url, "/campaigns/killed/export", {"format": "csv"})
        wait_until(lambda: task(second.url, exporting)["progress"]["done"] >= 200, what="export under way")
        second.stop(signal.SIGKILL)

        third = ServiceProcess(tmp_path, env=env, name="third")
        third.wait_ready()
        wait_until(lambda: task(third.url, exporting)["state"] == "done", what="export finished after restart")
        closed = task(third.url, closing)
        assert closed["result"] == {"status": "DELETED", "resolved": 2000, "by_status": {"DELETED": 2000}}
        assert closed["progress"] == {"done": 2000, "total": 2000}
        history = Counter(r["message_id"] for r in fetch(dsn, "SELECT message_id FROM history WHERE source = 'close'"))
        events = Counter(r["id"] for r in fetch(dsn, "SELECT id FROM events WHERE source = 'close'"))
        assert len(history) == len(events) == 2000
        assert set(history.values()) == set(events.values()) == {1}
        assert fetch(dsn, "SELECT count(*) AS n FROM messages WHERE status <> 'DELETED'")[0]["n"] == 0
        body = httpx2.get(f"{third.url}/tasks/{exporting}/result", timeout=60).text
        rows = list(csv.reader(io.StringIO(body, newline="")))
        assert rows[0][0] == "id"
        assert len(rows) == 2001
        assert len({r[0] for r in rows[1:]}) == 2000
        assert {r[1] for r in rows[1:]} == {"DELETED"}
        attempts = {r["id"]: r["attempts"] for r in fetch(dsn, "SELECT id, attempts FROM tasks")}
        assert attempts == {closing: 2, exporting: 2}
    finally:
        for service in (first, second, third):
            if service is not None and service.proc.poll() is None:
                service.stop()
