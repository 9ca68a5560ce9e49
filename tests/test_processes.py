"""Real processes: the embedded database's life, two services on one database, concurrent senders."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
from pathlib import Path

import httpx2
import pytest

from tests.conftest import fetch
from tests.processes import ServiceProcess, command

pytestmark = pytest.mark.slow


def test_embedded_server_lives_and_dies_with_the_service(tmp_path: Path) -> None:
    """With no DATABASE_URL, serve starts PostgreSQL in DLR_DATA_DIR, keeps data across restarts, stops it
    on SIGTERM, and a second serve on the same directory fails with a clear message."""
    data_dir = tmp_path / "data"
    env = {"DLR_DATA_DIR": str(data_dir)}
    first = ServiceProcess(tmp_path, env=env, name="first")
    try:
        first.wait_ready()
        posted = httpx2.post(f"{first.url}/dlr/generic", data={"id": "kept", "status": "DELIVRD"})
        assert posted.json()["data"]["applied"] is True

        second = subprocess.run(
            [*command(), "serve"],
            env={**first_env(env), "PORT": "0"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1
        assert "is in use by another dlr-tracker process" in second.stderr
        # The refused second process did not disturb the first.
        assert httpx2.get(f"{first.url}/messages/kept").json()["data"]["status"] == "DELIVRD"
    finally:
        assert first.stop() == 0, first.output()
    assert not (data_dir / "pgdata" / "postmaster.pid").exists(), "embedded PostgreSQL still running"

    again = ServiceProcess(tmp_path, env=env, name="again")
    try:
        again.wait_ready()
        assert httpx2.get(f"{again.url}/messages/kept").json()["data"]["status"] == "DELIVRD"
    finally:
        assert again.stop() == 0, again.output()


async def embedded_buffers_mb(pgdata: Path) -> int:
    """shared_buffers of the embedded server running on `pgdata`, through its socket (postmaster.pid names it)."""
    import asyncpg

    lines = (pgdata / "postmaster.pid").read_text().splitlines()
    conn = await asyncpg.connect(host=lines[4], port=int(lines[3]), user="postgres", database="postgres")
    try:
        pages = await conn.fetchval("SELECT setting::bigint FROM pg_settings WHERE name = 'shared_buffers'")
        return int(pages * int(await conn.fetchval("SHOW block_size")) // (1024 * 1024))
    finally:
        await conn.close()


def test_the_embedded_servers_buffers_follow_the_setting_at_each_start(tmp_path: Path) -> None:
    """DLR_EMBEDDED_SHARED_BUFFERS sizes the embedded server's buffers from its first start (a new data
    directory), and a changed value applies at the next start of the same directory; `auto` is a quarter of
    the machine's memory, at least PostgreSQL's own 128 MB."""
    data_dir = tmp_path / "data"
    seen = []
    for value in ("200MB", "160MB", "auto"):
        service = ServiceProcess(tmp_path, env={"DLR_DATA_DIR": str(data_dir), "DLR_EMBEDDED_SHARED_BUFFERS": value})
        try:
            service.wait_ready()
            seen.append(asyncio.run(embedded_buffers_mb(data_dir / "pgdata")))
        finally:
            assert service.stop() == 0, service.output()
    quarter = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (4 * 1024 * 1024)
    assert seen[:2] == [200, 160]
    assert 128 <= seen[2] <= max(128, quarter), seen


def first_env(env: dict[str, str]) -> dict[str, str]:
    import os

    return {**{k: v for k, v in os.environ.items() if k != "DATABASE_URL"}, **env}


def reports_for(message_ids: list[str]) -> list[dict[str, str]]:
    """Two-part messages: every part accepted then delivered, a message-level ENQUEUD, all sent 3 times."""
    reports = []
    for mid in message_ids:
        for segment in ("1", "2"):
            reports += [{"id": mid, "status": s, "segment": segment, "segments": "2"} for s in ("ACCEPTD", "DELIVRD")]
        reports.append({"id": mid, "status": "ENQUEUD"})
    return reports * 3


async def send_all(urls: list[str], reports: list[dict[str, str]], concurrency: int = 32) -> list[int]:
    gate = asyncio.Semaphore(concurrency)
    async with httpx2.AsyncClient(timeout=30) as client:

        async def one(i: int, report: dict[str, str]) -> int:
            async with gate:
                response = await client.post(f"{urls[i % len(urls)]}/dlr/generic", data=report)
                return response.status_code

        return await asyncio.gather(*(one(i, r) for i, r in enumerate(reports)))


def check_final_states(dsn: str, message_ids: list[str]) -> None:
    rows = fetch(dsn, "SELECT id, status, segment_statuses FROM messages ORDER BY id")
    assert [r["id"] for r in rows] == sorted(message_ids)
    assert {(r["status"], tuple(r["segment_statuses"])) for r in rows} == {("DELIVRD", ("DELIVRD", "DELIVRD"))}
    twice = fetch(
        dsn,
        """
        SELECT message_id, segment, status, count(*) FROM history WHERE applied AND segment IS NOT NULL
        GROUP BY 1, 2, 3 HAVING count(*) > 1
    """,
    )
    # (A message-level report may rightly apply twice: once before and once after a later report
    # announced a second part for it to move.)
    assert twice == [], "a segment report was applied more than once"
    delivered = fetch(dsn, "SELECT count(*) AS n FROM history WHERE applied AND status = 'DELIVRD'")
    assert delivered[0]["n"] == 2 * len(message_ids)


def test_two_services_on_one_database_under_concurrent_senders(tmp_path: Path, fresh_database) -> None:  # type: ignore[no-untyped-def]
    """Two serve processes start at once on an empty database (one migrates, the other waits), then take
    shuffled, duplicated reports concurrently: every message ends right and nothing applies twice."""
    dsn = fresh_database()
    services = [ServiceProcess(tmp_path, env={"DATABASE_URL": dsn}, name=f"s{i}") for i in range(2)]
    try:
        for service in services:
            service.wait_ready()
        ids = [f"m{i}" for i in range(60)]
        reports = reports_for(ids)
        random.Random(7).shuffle(reports)
        statuses = asyncio.run(send_all([s.url for s in services], reports))
        assert set(statuses) == {200}
    finally:
        codes = [s.stop() for s in services]
    assert codes == [0, 0], [s.output() for s in services]
    check_final_states(dsn, ids)


# The HTTP server's own limit (httptools parses a URL with 16-bit offsets), as the README's API section says.
MAX_REQUEST_TARGET = 65_535


def raw_get(port: int, target: bytes) -> tuple[bytes, bytes]:
    """A GET sent as raw bytes (httpx refuses URLs this long itself): the answer's head and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def test_a_request_target_past_the_servers_limit_is_refused_by_the_server(tmp_path: Path, db: str) -> None:
    """A request target (path and query) of up to 65,535 bytes reaches the service and answers the
    envelope; one byte more is refused by uvicorn/httptools before the service sees it, with a plain-text
    400 `Invalid HTTP request received.` -- not the envelope, as the README says."""
    service = ServiceProcess(tmp_path, env={"DATABASE_URL": db})
    try:
        service.wait_ready()
        prefix = b"/messages?ids="
        head, body = raw_get(service.port, prefix + b"a" * (MAX_REQUEST_TARGET - len(prefix)))
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert b'"code":0' in body
        head, body = raw_get(service.port, prefix + b"a" * (MAX_REQUEST_TARGET + 1 - len(prefix)))
        assert head.startswith(b"HTTP/1.1 400 "), head
        assert b"content-type: text/plain; charset=utf-8" in head.lower()
        assert body == b"Invalid HTTP request received."
    finally:
        assert service.stop() == 0, service.output()
