"""Operating the service: metrics across workers, graceful shutdown under load, readiness, JSON logs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from pathlib import Path

import httpx2
import pytest

from service.app import create_app
from service.config import Settings
from tests.conftest import fetch
from tests.processes import ServiceProcess

pytestmark = pytest.mark.slow


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total = 0.0
    for line in text.splitlines():
        found = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if found and ",".join(sorted(found.group(1).split(","))) == wanted:
            total += float(found.group(2))
    return total


def test_counters_from_two_workers_add_up(tmp_path: Path, fresh_database) -> None:  # type: ignore[no-untyped-def]
    """With WEB_CONCURRENCY=2 each worker counts in its own file and /metrics, whichever worker answers,
    shows the sum of both."""
    shared = tmp_path / "metrics"
    shared.mkdir()
    env = {"DATABASE_URL": fresh_database(), "WEB_CONCURRENCY": "2", "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    service = ServiceProcess(tmp_path, env=env)
    try:
        service.wait_ready()

        async def send() -> None:
            # A new connection per report, so the kernel spreads them over both workers.
            async def one(i: int) -> None:
                async with httpx2.AsyncClient() as client:
                    response = await client.post(
                        f"{service.url}/dlr/generic", data={"id": f"w{i}", "status": "ACCEPTD"}
                    )
                    assert response.status_code == 200

            await asyncio.gather(*(one(i) for i in range(60)))

        asyncio.run(send())
        writers = {p.name.split("_")[-1] for p in shared.glob("counter_*.db")}
        assert len(writers) >= 2, "only one worker took requests"
        for _ in range(4):
            text = httpx2.get(f"{service.url}/metrics").text
            assert metric(text, "dlr_reports_received_total", dialect="generic", outcome="applied") == 60
    finally:
        assert service.stop() == 0, service.output()


def test_sigterm_under_load_loses_no_acknowledged_report(tmp_path: Path, fresh_database) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM while 32 senders post reports: the service drains and exits 0, and every report it answered
    2xx is in the database."""
    dsn = fresh_database()
    service = ServiceProcess(tmp_path, env={"DATABASE_URL": dsn})
    service.wait_ready()
    acked: list[str] = []
    refused = 0

    async def sender(n: int, client: httpx2.AsyncClient, stop_at: float) -> None:
        nonlocal refused
        i = 0
        while time.monotonic() < stop_at:
            i += 1
            mid = f"s{n}-{i}"
            try:
                response = await client.post(f"{service.url}/dlr/generic", data={"id": mid, "status": "DELIVRD"})
            except httpx2.TransportError:
                refused += 1
                await asyncio.sleep(0.01)
                continue
            if response.status_code == 200:
                acked.append(mid)

    async def load() -> None:
        async with httpx2.AsyncClient(timeout=30) as client:
            stop_at = time.monotonic() + 4
            tasks = [asyncio.create_task(sender(n, client, stop_at)) for n in range(32)]
            await asyncio.sleep(1.5)
            service.proc.send_signal(signal.SIGTERM)
            await asyncio.gather(*tasks)

    try:
        asyncio.run(load())
    finally:
        code = service.stop()
    assert code == 0, service.output()
    assert len(acked) > 100
    stored = {r["message_id"] for r in fetch(dsn, "SELECT message_id FROM history")}
    lost = [m for m in acked if m not in stored]
    assert lost == [], f"{len(lost)} acknowledged reports lost"


def test_readyz_fails_from_the_first_moment_of_shutdown(settings: Settings) -> None:
    """When the stop signal arrives, /readyz answers 503 at once while reports are still accepted and
    stored until the in-flight work is done."""
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        app = create_app(settings)

        async def run() -> tuple[int, int, int]:
            async with app.router.lifespan_context(app):
                transport = httpx2.ASGITransport(app=app)
                async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
                    before = (await client.get("/readyz")).status_code
                    os.kill(os.getpid(), signal.SIGTERM)
                    await asyncio.sleep(0)
                    after = await client.get("/readyz")
                    assert after.json()["code"] == 999
                    stored = await client.post("/dlr/generic", data={"id": "late", "status": "ACCEPTD"})
                    return before, after.status_code, stored.status_code

        assert asyncio.run(run()) == (200, 503, 200)
        assert received == [signal.SIGTERM], "uvicorn's (here: the previous) handler still runs"
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_logs_are_json_with_request_ids_and_no_secrets(tmp_path: Path, fresh_database) -> None:  # type: ignore[no-untyped-def]
    """Every log line is one JSON object; request lines carry the request id (taken from X-Request-ID) and
    the dialect and message id where known; tokens and API keys never appear, not even when sent wrong."""
    token, key = "tok-SECRET-4711", "key-SECRET-0815"
    env = {"DATABASE_URL": fresh_database(), "DLR_WEBHOOK_TOKEN": token, "DLR_API_KEYS": key, "LOG_LEVEL": "debug"}
    service = ServiceProcess(tmp_path, env=env)
    try:
        service.wait_ready()
        with httpx2.Client(base_url=service.url) as client:
            client.post(
                f"/dlr/generic?token={token}",
                data={"id": "L1", "status": "NOPE"},
                headers={"x-request-id": "req-bad-report"},
            )
            client.post("/dlr/generic?token=wrong-guess", data={"id": "L2", "status": "DELIVRD"})
            client.get(f"/messages/L1?apiKey={key}", headers={"authorization": f"Bearer {key}"})
            client.get("/messages/L1", headers={"authorization": "Bearer nope"})
    finally:
        assert service.stop() == 0
    # The whole log: output() keeps only its tail, which may start mid-line.
    log = service.log.read_text(errors="replace")
    lines = [line for line in log.splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line parses
    assert token not in log
    assert key not in log
    quarantined = [e for e in entries if e["message"].startswith("quarantined payload")]
    assert quarantined, "the bad report was not logged"
    assert quarantined[0]["request_id"] == "req-bad-report"
    assert quarantined[0]["dialect"] == "generic"
    assert quarantined[0]["message_id"] == "L1"
    access = [e for e in entries if e["logger"] == "dlr_tracker.access"]
    assert len(access) >= 4
    assert all(e.get("request_id") for e in access)
