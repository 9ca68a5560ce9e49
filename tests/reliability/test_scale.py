"""Order and duplication at scale: shuffled, repeated reports over two processes end where a naive model says.

Short form: 1,000 messages; `DLR_RELIABILITY=full`: 10,000.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.conftest import fetch
from tests.processes import ServiceProcess
from tests.reliability import traffic_model as model
from tests.reliability.scale import pick

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

MESSAGES = int(pick(1_000, 10_000))
CONCURRENCY = 32
SWEEP_INTERVAL = "0.5"
LONG_AGO = timedelta(days=2)  # past the default 1-day lifetime: overdue at once


def _request_for(report: model.Report, attempt: int, rng: random.Random) -> tuple[str, Any]:
    """One sending of a report, in one of the ways senders send it (a batch is assembled by the caller)."""
    if report.dialect == "mobizon":
        event = {**report.fields, "attempt": attempt}
        if rng.random() < 0.5:
            return "mobizon_json", event
        form = {k: str(v) for k, v in event.items() if k != "data"}
        form.update({f"data[{k}]": str(v) for k, v in event["data"].items()})
        return "mobizon_form", form
    mode = rng.choices(("generic_batch", "generic_form", "generic_get"), weights=(50, 35, 15))[0]
    return mode, report.fields


def build_requests(
    plans: list[model.Plan], reports: list[model.Report], rng: random.Random, now: datetime
) -> tuple[list[tuple[str, Any, list[int]]], int]:
    """Every report sent 1-3 times, all shuffled, the overdue-at-once registrations mixed in, generic
    reports grouped into JSON batches of 2-50 or sent alone as forms and GETs.

    Returns (kind, payload, the indexes of the reports it carries) per request, and the number of sendings.
    """
    sendings: list[tuple[int, int]] = []  # (report index, attempt)
    for index in range(len(reports)):
        sendings += [(index, attempt) for attempt in range(1, rng.randint(1, 3) + 1)]
    rng.shuffle(sendings)
    requests: list[tuple[str, Any, list[int]]] = []
    batch: list[int] = []
    batch_size = rng.randint(2, 50)
    for index, attempt in sendings:
        kind, payload = _request_for(reports[index], attempt, rng)
        if kind == "generic_batch":
            batch.append(index)
            if len(batch) >= batch_size:
                requests.append(("generic_batch", [reports[i].fields for i in batch], batch))
                batch, batch_size = [], rng.randint(2, 50)
        else:
            requests.append((kind, payload, [index]))
    if batch:
        requests.append(("generic_batch", [reports[i].fields for i in batch], batch))
    # Registered while their reports are already arriving: before or after them, EXPIRED is the end.
    for plan in plans:
        if plan.overdue == model.OVERDUE_AT_ONCE:
            register = model.registration(plan, now - LONG_AGO)
            requests.insert(rng.randrange(len(requests) + 1), ("register", register, []))
    return requests, len(sendings)


class Tally:
    """What the senders saw: HTTP statuses, and each report sending's answer."""

    def __init__(self) -> None:
        self.http: Counter[int] = Counter()
        self.failures: list[str] = []
        self.acknowledged = 0
        self.applied = 0
        self.reasons: Counter[str] = Counter()

    def take(self, response: httpx2.Response, carried: int) -> None:
        self.http[response.status_code] += 1
        if response.status_code != 200:
            self.failures.append(f"{response.status_code} {response.text[:300]}")
            return
        if not carried:
            return
        data = response.json()["data"]
        items = data["items"] if isinstance(data, dict) and "items" in data else [data]
        assert len(items) == carried, response.text[:300]
        for item in items:
            if item.get("code", 0) != 0:
                self.failures.append(f"item refused: {item}")
                continue
            self.acknowledged += 1
            self.applied += bool(item["applied"])
            self.reasons[item["reason"] or "applied"] += 1


async def send(urls: list[str], requests: list[tuple[str, Any, list[int]]], tally: Tally) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)
    limits = httpx2.Limits(max_connections=CONCURRENCY * 2, max_keepalive_connections=CONCURRENCY * 2)
    async with httpx2.AsyncClient(timeout=60, limits=limits) as client:

        async def one(n: int, kind: str, payload: Any, carried: list[int]) -> None:
            base = urls[n % len(urls)]
            async with gate:
                if kind == "register":
                    response = await client.post(f"{base}/messages", json=payload)
                elif kind == "generic_batch":
                    response = await client.post(f"{base}/dlr/generic", json=payload)
                elif kind == "generic_form":
                    response = await client.post(f"{base}/dlr/generic", data=payload)
                elif kind == "generic_get":
                    response = await client.get(f"{base}/dlr/generic", params=payload)
                elif kind == "mobizon_json":
                    response = await client.post(f"{base}/dlr/mobizon", json=payload)
                else:
                    response = await client.post(f"{base}/dlr/mobizon", data=payload)
            tally.take(response, len(carried))

        await asyncio.gather(*(one(n, *request) for n, request in enumerate(requests)))


def register_all(url: str, registrations: list[dict[str, Any]]) -> None:
    with httpx2.Client(timeout=60) as client:
        for start in range(0, len(registrations), 1000):
            response = client.post(f"{url}/messages", json=registrations[start : start + 1000])
            assert response.status_code == 200, response.text[:500]


def wait_until_swept(dsn: str, ids: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = fetch(dsn, "SELECT count(*) AS n FROM messages WHERE id = ANY($1::text[]) AND final_at IS NULL", ids)
        if rows[0]["n"] == 0:
            return
        time.sleep(0.25)
    raise AssertionError(f"{rows[0]['n']} overdue messages still open after {timeout}s")


def test_shuffled_duplicated_reports_over_two_processes_end_as_the_model_says(
    tmp_path: Path,
    fresh_database: Callable[[], str],
) -> None:
    """Messages of 1-3 segments get realistic reports -- per segment ACCEPTD then a final status, some
    message-level ENQUEUD and PDLIVRD, Mobizon events with event ids, some messages overdue -- each sent 1-3
    times, all shuffled and spread over two `serve` processes on one database (generic JSON batches, forms
    and GETs, Mobizon JSON and forms) while both run the expiry sweep every 0.5 s. Every sending is answered
    200, every message ends where an independent naive model says, no (message, segment, status) and no event
    id applies twice, every final report applies exactly once, and every overdue message has exactly one
    sweep event."""
    rng = random.Random(20261125)
    now = datetime.now(UTC)
    plans = model.make_plans(MESSAGES, rng)
    next_event = [1_000_000]
    reports = [r for plan in plans for r in model.reports_for(plan, now, next_event)]
    requests, sendings = build_requests(plans, reports, rng, now)

    dsn = fresh_database()
    env = {"DATABASE_URL": dsn, "DLR_SWEEP_INTERVAL": SWEEP_INTERVAL, "LOG_LEVEL": "warning"}
    services = [ServiceProcess(tmp_path, env=env, name=f"scale{i}") for i in range(2)]
    tally = Tally()
    started = time.monotonic()
    try:
        for service in services:
            service.wait_ready()
        urls = [s.url for s in services]
        register_all(urls[0], [model.registration(p, now) for p in plans if p.overdue != model.OVERDUE_AT_ONCE])
        asyncio.run(send(urls, requests, tally))

        # Overdue only now that every report is in: re-registered with an old sending time (which moves the
        # deadline of an open message) while a last round of duplicates races the sweep.
        later = [p for p in plans if p.overdue == model.OVERDUE_LATER]
        late_requests: list[tuple[str, Any, list[int]]] = [
            ("register", [model.registration(p, now - LONG_AGO) for p in later], [])
        ]
        by_id = {p.id: p for p in later}
        for index, report in enumerate(reports):
            if report.message_id in by_id:
                kind, payload = _request_for(report, 4, rng)
                if kind == "generic_batch":
                    kind, payload = "generic_form", report.fields
                late_requests.append((kind, payload, [index]))
        sendings += len(late_requests) - 1
        asyncio.run(send(urls, late_requests, tally))
        wait_until_swept(dsn, [p.id for p in plans if model.swept(p)])
    finally:
        codes = [s.stop() for s in services]
    elapsed = time.monotonic() - started
    assert codes == [0, 0], [s.output() for s in services]

    assert tally.failures == [], tally.failures[:10]
    assert set(tally.http) == {200}, tally.http
    assert tally.acknowledged == sendings

    rows = fetch(dsn, "SELECT id, status, segment_statuses FROM messages")
    stored = {r["id"]: (r["status"], tuple(r["segment_statuses"])) for r in rows}
    assert len(stored) == len(plans), "messages were created that nobody registered or reported"
    mismatches = {p.id: (stored.get(p.id), model.expected(p)) for p in plans if stored.get(p.id) != model.expected(p)}
    assert mismatches == {}, f"{len(mismatches)} messages differ (stored, expected): {list(mismatches.items())[:10]}"

    twice = fetch(
        dsn,
        """
        SELECT message_id, segment, status, count(*) AS n FROM history
        WHERE applied AND source <> 'sweep' GROUP BY message_id, segment, status HAVING count(*) > 1
        """,
    )
    assert twice == [], f"applied more than once: {[dict(r) for r in twice[:10]]}"
    applied = Counter(
        (r["message_id"], r["segment"], r["status"])
        for r in fetch(dsn, "SELECT message_id, segment, status FROM history WHERE applied AND source <> 'sweep'")
    )
    assert sum(applied.values()) == tally.applied, "answers said applied for reports the history does not hold"
    unsettled = [r for r in reports if r.settles and applied[(r.message_id, *r.settles)] != 1]
    assert unsettled == [], f"final reports not applied exactly once: {unsettled[:5]}"

    events = Counter(
        r["event_id"]
        for r in fetch(dsn, "SELECT event_id FROM history WHERE source = 'mobizon' AND event_id IS NOT NULL")
    )
    sent_events = {r.event_id for r in reports if r.event_id}
    assert set(events) == sent_events
    assert set(events.values()) == {1}, "a Mobizon event id is in the history more than once"
    unkeyed = fetch(dsn, "SELECT count(*) AS n FROM history WHERE source = 'mobizon' AND event_id IS NULL")
    assert unkeyed[0]["n"] == 0

    sweeps = Counter(
        r["message_id"] for r in fetch(dsn, "SELECT message_id FROM history WHERE source = 'sweep' AND applied")
    )
    must_sweep = {p.id for p in plans if model.swept(p)}
    assert set(sweeps) == must_sweep, "the sweep resolved the wrong messages"
    assert set(sweeps.values()) == {1}, "a message has more than one sweep event"
    assert fetch(dsn, "SELECT count(*) AS n FROM quarantine")[0]["n"] == 0

    segments = sum(p.segments for p in plans)
    print(
        f"\nRELIABILITY scale: messages={len(plans)} segments={segments} distinct_reports={len(reports)} "
        f"reports_sent={sendings} requests={sum(tally.http.values())} acknowledged={tally.acknowledged} "
        f"applied={tally.applied} duplicates={tally.reasons['duplicate']} stale={tally.reasons['stale']} "
        f"after_final={tally.reasons['after_final']} swept={len(sweeps)} mismatches={len(mismatches)} "
        f"5xx={sum(n for code, n in tally.http.items() if code >= 500)} seconds={elapsed:.1f}"
    )
