"""The event feed is gap-free under concurrent writers and replicas, and the naive cursor is not.

Two service processes on one database, eight concurrent senders, and a writer that holds its transaction
open for a second while the others commit (as a slow replica or a long batch does): a reader following
`GET /events` with small pages sees every change exactly once; a reader asking for `position > last` on the
same feed, at the same time, misses the slow writer's events.

Short form: 2,000 changes; `DLR_RELIABILITY=full`: 20,000.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx2
import pytest

from service import database
from service.engine import Report
from service.reports import IncomingReport
from service.statuses import Status
from service.store import apply_reports
from tests.processes import ServiceProcess
from tests.reliability.load import summary
from tests.reliability.scale import pick

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

MESSAGES = int(pick(1_000, 10_000))  # two changes each: ACCEPTD, then DELIVRD
SENDERS = 8
PAGE = 7


class FeedReader(threading.Thread):
    """Follows GET /events with small pages and long polls until told to stop and the feed is drained."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.seen: list[tuple[str, int]] = []  # (message id, version) per event, in the order served
        self.ids: list[str] = []
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            cursor: str | None = None
            with httpx2.Client(timeout=30) as client:
                while True:
                    params: dict[str, Any] = {"limit": PAGE, "wait": 0 if self.done.is_set() else 1}
                    if cursor:
                        params["after"] = cursor
                    data = client.get(f"{self.url}/events", params=params).json()["data"]
                    self.seen += [(e["data"]["id"], e["data"]["version"]) for e in data["items"]]
                    self.ids += [e["id"] for e in data["items"]]
                    cursor = data["next_cursor"]
                    if self.done.is_set() and not data["items"]:
                        return
        except BaseException as exc:  # reported by the test
            self.error = exc


class NaiveReader(threading.Thread):
    """What the feed must not be: `position > last`, in position order, straight from the table."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.seen: list[tuple[str, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        asyncio.run(self._follow())

    async def _follow(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        last = 0
        try:
            while True:
                rows = await conn.fetch(
                    "SELECT position, id, version FROM events WHERE position > $1 ORDER BY position LIMIT $2",
                    last,
                    PAGE,
                )
                self.seen += [(r["id"], r["version"]) for r in rows]
                if rows:
                    last = rows[-1]["position"]
                elif self.done.is_set():
                    return
                else:
                    await asyncio.sleep(0.01)
        finally:
            await conn.close()


async def slow_writer(dsn: str, started: asyncio.Event, hold: float) -> None:
    """A real batch through the store, committed `hold` seconds after its events took their positions."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            now = datetime.now(UTC)
            reports = [IncomingReport(f"slow-{i}", Report(Status.ACCEPTD), "generic", now) for i in range(5)]
            await apply_reports(conn, reports, lifetime=86400)
            started.set()
            await asyncio.sleep(hold)
    finally:
        await conn.close()


async def send_all(urls: list[str]) -> int:
    sent = 0

    async def sender(n: int) -> None:
        nonlocal sent
        async with httpx2.AsyncClient(timeout=30) as client:
            for i in range(n, MESSAGES, SENDERS):
                url = urls[i % len(urls)]
                for status in ("ACCEPTD", "DELIVRD"):
                    answer = await client.post(f"{url}/dlr/generic", data={"id": f"m{i}", "status": status})
                    assert answer.status_code == 200, answer.text
                    sent += 1

    await asyncio.gather(*(sender(n) for n in range(SENDERS)))
    return sent


def test_every_change_is_read_exactly_once_under_concurrent_writers(tmp_path: Path, fresh_database: Any) -> None:
    dsn = fresh_database()
    database.migrate(dsn)
    services = [ServiceProcess(tmp_path, env={"DATABASE_URL": dsn}, name=f"feed{i}") for i in range(2)]
    try:
        for service in services:
            service.wait_ready()
        reader, naive = FeedReader(services[0].url), NaiveReader(dsn)
        reader.start()
        naive.start()
        began = time.monotonic()

        async def traffic() -> int:
            held = asyncio.Event()
            slow = asyncio.create_task(slow_writer(dsn, held, 1.0))
            await held.wait()
            sent = await send_all([s.url for s in services])
            await slow
            return sent

        sent = asyncio.run(traffic())
        reader.done.set()
        naive.done.set()
        reader.join(120)
        naive.join(120)
        assert reader.error is None, reader.error
        took = time.monotonic() - began
    finally:
        for service in services:
            service.stop()

    expected = {(f"m{i}", v) for i in range(MESSAGES) for v in (1, 2)} | {(f"slow-{i}", 1) for i in range(5)}
    assert len(reader.seen) == len(set(reader.seen)), "an event was served twice"
    assert set(reader.seen) == expected, f"missed {len(expected - set(reader.seen))}"
    assert len(reader.ids) == len(set(reader.ids))
    # Per message, versions come in order: a consumer keeping the highest version never goes back.
    order: dict[str, int] = {}
    for message_id, version in reader.seen:
        assert version == order.get(message_id, 0) + 1
        order[message_id] = version
    missed = expected - set(naive.seen)
    summary(
        "event feed, gap-free",
        changes=len(expected),
        sent=sent,
        seconds=round(took, 1),
        feed_reader_missed=0,
        naive_reader_missed=len(missed),
    )
    assert {m for m, _ in missed} >= {f"slow-{i}" for i in range(5)}, "the naive reader should have skipped them"
