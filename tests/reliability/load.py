"""Concurrent senders that remember every acknowledgement, and a checker that looks for each one in the database.

`SenderLoad` runs N senders against a service, each posting `generic` reports with ids used once in the
whole run: a mix of single form reports, single JSON objects and JSON batches. Every request is recorded
(start, duration, HTTP status, envelope code, Retry-After); every report the service acknowledged (a 2xx
answer, and for a batch the items with code 0) is kept as `(id, status)`. A report that was not
acknowledged is not retried: the tests prove that nothing acknowledged is lost, and an unacknowledged
report is the sender's to send again.

`lost_reports` compares the acknowledgements with the history rows: an acknowledged `(id, status)`
without a history row with that message id and status (or without its message row) is lost.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx2

from service.statuses import Status
from tests.conftest import fetch

# Not NEW: a NEW report for an unknown id creates the message at NEW and is answered as a duplicate of
# that initial state, without a history row, so the checker could not tell it from a lost one.
STATUSES = [s.value for s in Status if s is not Status.NEW]
# After a refusal or a dropped connection a sender pauses this long: a sender that retried in a tight
# loop would only measure how fast a dead port refuses.
PAUSE_AFTER_FAILURE = 0.05


@dataclass(frozen=True, slots=True)
class Request:
    """One request a sender made and what came back (`status` None: no HTTP answer at all)."""

    started: float  # time.monotonic()
    seconds: float
    kind: str  # "form", "json" or "batch"
    reports: int
    status: int | None
    code: int | None = None
    retry_after: str | None = None
    error: str | None = None  # the transport error's class name
    hot: bool = False  # a report on the hot message

    @property
    def finished(self) -> float:
        return self.started + self.seconds


@dataclass
class SenderLoad:
    """`async with SenderLoad(url): ...` keeps `senders` senders posting until the block ends.

    `hot_id`/`hot_share`: that share of the single reports go to one existing message (the same id again
    and again, a non-final status drawn at random), for faults that lock one row.
    """

    url: str
    senders: int = 32
    tag: str = "r"
    batch_share: float = 0.35
    json_share: float = 0.15
    max_batch: int = 8
    seed: int = 8
    timeout: float = 30.0
    hot_id: str | None = None
    hot_share: float = 0.0
    requests: list[Request] = field(default_factory=list)
    acknowledged: list[tuple[str, str]] = field(default_factory=list)
    surprises: list[str] = field(default_factory=list)  # a 2xx we could not read, a 5xx other than 503, ...
    _stopping: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False, repr=False)
    _client: httpx2.AsyncClient | None = field(default=None, init=False, repr=False)

    async def __aenter__(self) -> SenderLoad:
        limits = httpx2.Limits(max_connections=self.senders, max_keepalive_connections=self.senders)
        self._client = httpx2.AsyncClient(timeout=self.timeout, limits=limits)
        self._tasks = [asyncio.create_task(self._sender(n), name=f"sender-{n}") for n in range(self.senders)]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stopping.set()
        try:
            # Senders finish the request they are in; none may take longer than the client timeout.
            await asyncio.wait_for(asyncio.gather(*self._tasks), self.timeout + 10)
        finally:
            assert self._client is not None
            await self._client.aclose()

    async def _sender(self, n: int) -> None:
        rng = random.Random(self.seed * 1000 + n)
        i = 0
        while not self._stopping.is_set():
            reports = []
            kind = self._kind(rng)
            for _ in range(rng.randint(2, self.max_batch) if kind == "batch" else 1):
                i += 1
                reports.append({"id": f"{self.tag}-{n:02d}-{i:06d}", "status": rng.choice(STATUSES)})
            hot = kind != "batch" and self.hot_id is not None and rng.random() < self.hot_share
            if hot:
                reports = [{"id": str(self.hot_id), "status": rng.choice(["ENQUEUD", "ACCEPTD", "PDLIVRD"])}]
            if not await self._send(kind, reports, hot):
                await asyncio.sleep(PAUSE_AFTER_FAILURE)

    def _kind(self, rng: random.Random) -> str:
        draw = rng.random()
        if draw < self.batch_share:
            return "batch"
        return "json" if draw < self.batch_share + self.json_share else "form"

    async def _send(self, kind: str, reports: list[dict[str, str]], hot: bool = False) -> bool:
        """Post one request and record it; True when every report in it was acknowledged."""
        assert self._client is not None
        url = f"{self.url}/dlr/generic"
        started = time.monotonic()
        try:
            if kind == "form":
                response = await self._client.post(url, data=reports[0])
            else:
                response = await self._client.post(url, json=reports if kind == "batch" else reports[0])
        except httpx2.TransportError as exc:
            elapsed = time.monotonic() - started
            self.requests.append(Request(started, elapsed, kind, len(reports), None, error=type(exc).__name__, hot=hot))
            return False
        seconds = time.monotonic() - started
        code = _code(response)
        retry_after = response.headers.get("retry-after")
        self.requests.append(
            Request(started, seconds, kind, len(reports), response.status_code, code, retry_after, hot=hot)
        )
        if not 200 <= response.status_code < 300:
            if response.status_code != 503 or code != 10:
                self.surprises.append(f"{response.status_code} code {code}: {response.text[:200]}")
            return False
        return self._acknowledge(kind, reports, response)

    def _acknowledge(self, kind: str, reports: list[dict[str, str]], response: httpx2.Response) -> bool:
        body = response.json()
        if kind != "batch":
            data = body.get("data") or {}
            if body.get("code") != 0 or data.get("id") != reports[0]["id"]:
                self.surprises.append(f"single answer {response.status_code}: {response.text[:200]}")
            # A 2xx is an acknowledgement whatever its body says: the checker holds the service to it.
            self.acknowledged.append((reports[0]["id"], reports[0]["status"]))
            return True
        items = (body.get("data") or {}).get("items") or []
        good = {item.get("index") for item in items if item.get("code") == 0}
        if body.get("code") != 0 or good != set(range(len(reports))):
            self.surprises.append(f"batch answer {response.status_code}: {response.text[:200]}")
        if body.get("code") not in (0, 98):
            # An unreadable 2xx: count every report in it as acknowledged, the strictest reading.
            good = set(range(len(reports)))
        self.acknowledged.extend((r["id"], r["status"]) for i, r in enumerate(reports) if i in good)
        return len(good) == len(reports)

    # Figures ----------------------------------------------------------------------------------------

    def between(self, start: float, end: float) -> list[Request]:
        """The requests that started in [start, end]."""
        return [r for r in self.requests if start <= r.started <= end]

    def answered_after(self, moment: float) -> list[Request]:
        return [r for r in self.requests if r.started >= moment and r.status is not None and 200 <= r.status < 300]


def _code(response: httpx2.Response) -> int | None:
    try:
        body: Any = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def lost_reports(dsn: str, acknowledged: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The acknowledged `(id, status)` pairs with no history row of that status, or no message row."""
    ids = sorted({mid for mid, _ in acknowledged})
    history = fetch(dsn, "SELECT message_id, status FROM history WHERE message_id = ANY($1::text[])", ids)
    messages = fetch(dsn, "SELECT id FROM messages WHERE id = ANY($1::text[])", ids)
    stored = {(r["message_id"], r["status"]) for r in history}
    present = {r["id"] for r in messages}
    return [(mid, status) for mid, status in acknowledged if (mid, status) not in stored or mid not in present]


def missing_over_http(url: str, ids: Sequence[str]) -> list[str]:
    """The ids that `GET /messages?ids=` (100 at a time) does not know: what a client of the service sees."""
    missing: list[str] = []
    unique = sorted(set(ids))
    with httpx2.Client(base_url=url, timeout=30) as client:
        for start in range(0, len(unique), 100):
            chunk = unique[start : start + 100]
            response = client.get("/messages", params={"ids": ",".join(chunk)})
            assert response.status_code == 200, response.text
            missing += response.json()["data"]["not_found"]
    return missing


async def count_connections(dsn: str, database: str, application: str = "dlr-tracker") -> int:
    """How many server backends `application` holds on `database` now (pg_stat_activity)."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
                database,
                application,
            )
        )
    finally:
        await conn.close()


def summary(name: str, **figures: object) -> str:
    """The one line a test prints for docs/RELIABILITY.md."""
    line = f"RELIABILITY {name}: " + " ".join(f"{k}={_show(v)}" for k, v in figures.items())
    print(line)
    return line


def _show(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else json.dumps(value) if isinstance(value, dict) else str(value)
