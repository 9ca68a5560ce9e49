"""The expiry sweep through the public surface: `dlr-tracker sweep`, the in-service sweeper, replicas."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import httpx2
import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.config import Settings
from tests.conftest import fetch
from tests.processes import ServiceProcess, command

OVERDUE = "2020-01-01T00:00:00Z"


def run_sweep(dsn: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": dsn}
    return subprocess.run([*command(), "sweep"], env=env, capture_output=True, text=True, timeout=120, check=False)


def seed(client: TestClient) -> None:
    """Open messages of every kind the sweep resolves, all past their lifetime, and one not yet due."""
    client.post(
        "/messages",
        json=[
            {"id": "accepted", "sent_at": OVERDUE},
            {"id": "partial-seg", "sent_at": OVERDUE, "segments": 3},
            {"id": "partial-msg", "sent_at": OVERDUE, "segments": 2},
            {"id": "first-undeliv", "sent_at": OVERDUE, "segments": 2},
            {"id": "done", "sent_at": OVERDUE},
            {"id": "fresh"},
        ],
    )
    for report in [
        {"id": "accepted", "status": "ACCEPTD"},
        {"id": "partial-seg", "status": "DELIVRD", "segment": 2},
        {"id": "partial-msg", "status": "PDLIVRD"},
        {"id": "first-undeliv", "status": "UNDELIV", "segment": 1},
        {"id": "first-undeliv", "status": "DELIVRD", "segment": 2},
        {"id": "done", "status": "DELIVRD"},
    ]:
        assert client.post("/dlr/generic", json=report).status_code == 200


def test_sweep_command_resolves_overdue_messages_by_the_rules(client: TestClient, db: str) -> None:
    """`dlr-tracker sweep` resolves each overdue open message once, prints the outcome counts, and
    leaves final and not-yet-due messages alone; a later report is after_final."""
    seed(client)
    client.post("/messages", json={"id": "first-undeliv", "sent_at": OVERDUE})  # already final: stays
    result = run_sweep(db)
    assert result.returncode == 0, result.stderr
    assert "resolved 3 messages" in result.stdout
    assert "EXPIRED\t1" in result.stdout
    assert "DELIVRD\t2" in result.stdout

    def status(message_id: str) -> tuple[str, list[str]]:
        data = client.get(f"/messages/{message_id}").json()["data"]
        return data["status"], [s["status"] for s in data["segments"]]

    assert status("accepted") == ("EXPIRED", ["EXPIRED"])
    assert status("partial-seg") == ("DELIVRD", ["EXPIRED", "DELIVRD", "EXPIRED"])
    assert status("partial-msg") == ("DELIVRD", ["EXPIRED", "EXPIRED"])
    assert status("first-undeliv") == ("UNDELIV", ["UNDELIV", "DELIVRD"])
    assert status("done") == ("DELIVRD", ["DELIVRD"])
    assert status("fresh") == ("NEW", ["NEW"])
    history = client.get("/messages/accepted/history").json()["data"]["items"]
    assert [(h["source"], h["status"], h["applied"]) for h in history][-1] == ("sweep", "EXPIRED", True)
    assert client.get("/messages/accepted").json()["data"]["final_at"] is not None

    late = client.post("/dlr/generic", json={"id": "accepted", "status": "DELIVRD"}).json()["data"]
    assert (late["applied"], late["reason"], late["status"]) == (False, "after_final", "EXPIRED")
    assert "resolved 0 messages" in run_sweep(db).stdout


def test_the_service_sweeps_by_itself(settings: Settings) -> None:
    """Every serving process runs the sweeper every DLR_SWEEP_INTERVAL seconds and exports its metrics."""
    with TestClient(create_app(replace(settings, sweep_interval=0.2))) as client:
        client.post("/messages", json={"id": "auto", "sent_at": OVERDUE})
        deadline = time.monotonic() + 15
        while client.get("/messages/auto").json()["data"]["status"] != "EXPIRED":
            assert time.monotonic() < deadline, "the sweeper did not resolve the message"
            time.sleep(0.1)
        # The pass is counted once it ends, a moment after its last batch committed.
        while 'dlr_sweep_runs_total{outcome="success"}' not in (text := client.get("/metrics").text):
            assert time.monotonic() < deadline, "the sweep pass was not counted"
            time.sleep(0.1)
        assert 'dlr_sweep_resolved_total{status="EXPIRED"}' in text
        assert "dlr_sweep_last_success_timestamp_seconds" in text
        assert "dlr_open_messages" in text


def test_moving_sent_at_moves_the_deadline_out_of_the_sweep(client: TestClient, db: str) -> None:
    """Re-registering an open message with a later sent_at moves expires_at, so it is not swept."""
    client.post("/messages", json={"id": "moved", "sent_at": OVERDUE})
    client.post("/messages", json={"id": "moved", "sent_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    assert "resolved 0 messages" in run_sweep(db).stdout
    assert client.get("/messages/moved").json()["data"]["status"] == "NEW"


@pytest.mark.slow
def test_two_services_and_a_sweep_command_resolve_each_message_once(tmp_path: Path, fresh_database) -> None:  # type: ignore[no-untyped-def]
    """Two serving processes sweeping every 0.2 s plus a `dlr-tracker sweep` on one database with
    thousands of overdue messages: each is resolved exactly once, with no error and no deadlock."""
    dsn = fresh_database()
    env = {"DATABASE_URL": dsn, "DLR_SWEEP_INTERVAL": "0.2", "DLR_SWEEP_BATCH": "200"}
    services = [ServiceProcess(tmp_path, env=env, name=f"sweeper{i}") for i in range(2)]
    total = 4000
    try:
        for service in services:
            service.wait_ready()
        with httpx2.Client(timeout=60) as http:
            for start in range(0, total, 1000):
                batch = [{"id": f"o{i}", "sent_at": OVERDUE, "segments": 1 + i % 3} for i in range(start, start + 1000)]
                assert http.post(f"{services[start // 1000 % 2].url}/messages", json=batch).json()["code"] == 0
        manual = run_sweep(dsn)
        assert manual.returncode == 0, manual.stderr
        deadline = time.monotonic() + 60
        while fetch(dsn, "SELECT count(*) AS n FROM messages WHERE final_at IS NULL")[0]["n"]:
            assert time.monotonic() < deadline, "overdue messages left unswept"
            time.sleep(0.2)
    finally:
        codes = [s.stop() for s in services]
    assert codes == [0, 0]
    per_message = fetch(
        dsn,
        """
        SELECT m.id, count(h.*) FILTER (WHERE h.source = 'sweep' AND h.applied) AS sweeps
        FROM messages m LEFT JOIN history h ON h.message_id = m.id GROUP BY m.id
    """,
    )
    assert len(per_message) == total
    assert {r["sweeps"] for r in per_message} == {1}
    for service in services:
        assert "Traceback" not in service.output()
        assert "deadlock" not in service.output().lower()


def test_the_sweeper_survives_a_database_outage(settings: Settings, database_outage) -> None:  # type: ignore[no-untyped-def]
    """While the database refuses connections the sweeper counts failed runs and keeps going; once it is
    back, the next pass resolves what is overdue."""
    import re

    def errors(client: TestClient) -> float:
        found = re.search(r'^dlr_sweep_runs_total\{outcome="error"\} (\S+)$', client.get("/metrics").text, re.M)
        return float(found.group(1)) if found else 0.0

    with TestClient(create_app(replace(settings, sweep_interval=0.1))) as client:
        client.post("/messages", json={"id": "after-outage"})
        before = errors(client)
        with database_outage():
            deadline = time.monotonic() + 15
            while errors(client) <= before:
                assert time.monotonic() < deadline, "no failed sweep run was counted"
                time.sleep(0.1)
        client.post("/messages", json={"id": "after-outage", "sent_at": OVERDUE})
        deadline = time.monotonic() + 15
        while client.get("/messages/after-outage").json()["data"]["status"] != "EXPIRED":
            assert time.monotonic() < deadline, "the sweeper did not recover"
            time.sleep(0.1)


def seed_every_open_state(client: TestClient) -> dict[str, list[dict[str, object]]]:
    """Register an overdue message for every state of 1-3 segments reachable through reports (each segment
    in each segment status, with and without a message-level PDLIVRD) and send its reports; by id, the
    reports each was sent."""
    from itertools import product

    from service.statuses import SEGMENT_STATUSES

    sent: dict[str, list[dict[str, object]]] = {}
    for n in (1, 2, 3):
        for segments in product(sorted(SEGMENT_STATUSES), repeat=n):
            for partial in (False, True):
                mid = f"x{n}-{'-'.join(segments)}-{int(partial)}"
                sent[mid] = [{"id": mid, "status": s, "segment": i} for i, s in enumerate(segments, 1) if s != "NEW"]
                if partial:
                    sent[mid].append({"id": mid, "status": "PDLIVRD"})
    registrations = [{"id": mid, "sent_at": OVERDUE, "segments": int(mid[1])} for mid in sent]
    reports = [r for rs in sent.values() for r in rs]
    for start in range(0, len(registrations), 1000):
        assert client.post("/messages", json=registrations[start : start + 1000]).json()["code"] == 0
    for start in range(0, len(reports), 1000):
        assert client.post("/dlr/generic", json=reports[start : start + 1000]).json()["code"] == 0
    return sent


def test_sweep_command_agrees_with_the_engine_on_every_open_state(client: TestClient, db: str) -> None:
    """For every open state of 1-3 segments, `dlr-tracker sweep` resolves exactly as `engine.expire` does."""
    from service.engine import Report, apply_report, expire, new_message
    from service.statuses import Status

    expected: dict[str, tuple[str, list[str]]] = {}
    for mid, reports in seed_every_open_state(client).items():
        state = new_message(int(mid[1]))
        for r in reports:
            state = apply_report(state, Report(Status(r["status"]), r.get("segment"))).state  # type: ignore[arg-type]
        swept = expire(state).state
        expected[mid] = (swept.status.value, [s.value for s in swept.segments])
    assert run_sweep(db).returncode == 0
    rows = fetch(db, "SELECT id, status, segment_statuses FROM messages")
    assert {r["id"]: (r["status"], list(r["segment_statuses"])) for r in rows} == expected


def test_the_generated_sweep_statement_makes_the_ledgers_changes(client: TestClient, db: str) -> None:
    """The sweep's SQL is generated from the engine's expiry tables; for every open state of 1-3 segments
    (with and without a message-level PDLIVRD) it leaves each message exactly as the change `Ledger.expire`
    makes from the stored message -- statuses, segment times, final time, version -- writes the same history
    row, and counts the same transitions."""
    import asyncio
    from collections import Counter
    from datetime import UTC, datetime

    import asyncpg

    from service.ledger import Ledger
    from service.store import sweep_batch
    from service.store.messages import COLUMNS, EVENT_COLUMNS, record_from_row

    seed_every_open_state(client)
    now = datetime.now(UTC)

    async def run() -> tuple[Ledger, list[object], list[asyncpg.Record], list[asyncpg.Record], list[asyncpg.Record]]:
        conn = await asyncpg.connect(db)
        try:
            rows = await conn.fetch(f"SELECT {COLUMNS} FROM messages WHERE final_at IS NULL")
            ledger = Ledger({r["id"]: record_from_row(r) for r in rows}, lifetime=0)
            counts = await sweep_batch(conn, now, len(rows) + 1)
            after = await conn.fetch(f"SELECT {COLUMNS} FROM messages WHERE id = ANY($1::text[])", list(ledger.records))
            history = await conn.fetch(
                "SELECT message_id, status, received_at, source, applied FROM history WHERE source = 'sweep'"
            )
            fed = await conn.fetch(f"SELECT {EVENT_COLUMNS} FROM events WHERE source = 'sweep'")
            return ledger, counts, after, history, fed
        finally:
            await conn.close()

    ledger, counts, after, history, fed = asyncio.run(run())
    changes = {i: ledger.expire(i, now) for i in sorted(ledger.records)}
    assert len(changes) > 100
    assert {r["id"]: record_from_row(r) for r in after} == {i: c.message for i, c in changes.items() if c}
    assert sorted(tuple(h) for h in history) == sorted(
        (h.message_id, h.status.value, h.received_at, h.source, h.applied)  # type: ignore[union-attr]
        for h in ledger.history
    )
    # The feed's rows are those change events: the message after, the status before, the source, the time.
    assert {r["id"]: (record_from_row(r[3:]), r["previous_status"], r["source"], r["at"]) for r in fed} == {
        i: (c.message, c.previous_status, c.source, c.at) for i, c in changes.items() if c
    }
    expected = Counter((c.previous_status, c.status) for c in changes.values() if c)
    assert {(r.previous, r.status): r.n for r in counts} == expected  # type: ignore[attr-defined]


@pytest.mark.parametrize("target", ["EXPIRED", "DELETED"])
def test_the_generated_close_statement_makes_the_ledgers_changes(client: TestClient, db: str, target: str) -> None:
    """A campaign's close is the sweep's statement with its own target and source: for every open state of 1-3
    segments it leaves each message exactly as `Ledger.expire(target, source=close)` does, with the same
    history and feed rows, and leaves final messages alone."""
    import asyncio
    from datetime import UTC, datetime

    import asyncpg

    from service.ledger import CLOSE, Ledger
    from service.statuses import Status
    from service.store import close_batch
    from service.store.messages import COLUMNS, EVENT_COLUMNS, record_from_row

    seed_every_open_state(client)
    now = datetime.now(UTC)
    status = Status(target)

    async def run() -> tuple[Ledger, list[asyncpg.Record], list[asyncpg.Record], list[asyncpg.Record]]:
        conn = await asyncpg.connect(db)
        try:
            rows = await conn.fetch(f"SELECT {COLUMNS} FROM messages")
            ledger = Ledger({r["id"]: record_from_row(r) for r in rows}, lifetime=0)
            async with conn.transaction():
                await close_batch(conn, now, status, sorted(ledger.records))
            after = await conn.fetch(f"SELECT {COLUMNS} FROM messages")
            history = await conn.fetch(
                "SELECT message_id, status, received_at, source, applied FROM history WHERE source = 'close'"
            )
            fed = await conn.fetch(f"SELECT {EVENT_COLUMNS} FROM events WHERE source = 'close'")
            return ledger, after, history, fed
        finally:
            await conn.close()

    ledger, after, history, fed = asyncio.run(run())
    before = dict(ledger.records)
    changes = {i: ledger.expire(i, now, status, CLOSE) for i in sorted(ledger.records)}
    assert any(c is None for c in changes.values()), "some messages were final already"
    assert {r["id"]: record_from_row(r) for r in after} == {
        i: c.message if c else before[i] for i, c in changes.items()
    }
    assert sorted(tuple(h) for h in history) == sorted(
        (h.message_id, h.status.value, h.received_at, h.source, h.applied) for h in ledger.history
    )
    assert {r["id"]: (record_from_row(r[3:]), r["previous_status"], r["source"]) for r in fed} == {
        i: (c.message, c.previous_status, c.source) for i, c in changes.items() if c
    }
