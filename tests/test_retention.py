"""DLR_RETENTION: a sweep pass deletes messages final for longer than it, with their history and the senders'
event ids they kept, quarantined payloads and finished tasks older than it; open messages never; `0` keeps
everything."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

import asyncpg
import pytest
from starlette.testclient import TestClient

from service.config import Settings, SettingsError
from tests.conftest import fetch
from tests.processes import command

AGED = [
    # final 95 days ago, sent 100 days ago: past a 90-day retention
    "UPDATE messages SET sent_at = now() - interval '100 days', final_at = now() - interval '95 days',"
    " expires_at = now() - interval '99 days' WHERE id = 'old'",
    # final 95 days ago but sent 95.5 days ago: past it too (the lifetime is one day)
    "UPDATE messages SET sent_at = now() - interval '95.5 days', final_at = now() - interval '95 days',"
    " expires_at = now() - interval '94.5 days' WHERE id = 'old-late'",
    # final 80 days ago: kept
    "UPDATE messages SET sent_at = now() - interval '81 days', final_at = now() - interval '80 days',"
    " expires_at = now() - interval '80 days' WHERE id = 'recent'",
    # sent 100 days ago and still open (its deadline moved by a registration): never deleted
    "UPDATE messages SET sent_at = now() - interval '100 days', expires_at = now() + interval '1 day'"
    " WHERE id = 'open'",
    "UPDATE quarantine SET received_at = now() - interval '91 days' WHERE id = 1",
    "UPDATE tasks SET finished_at = now() - interval '91 days'",
]


def _seed(client: TestClient, db: str) -> int:
    """The messages, payloads and a finished export; returns the export's task id."""
    for message_id in ("old", "old-late", "recent"):
        event = {
            "eventId": f"ev-{message_id}",
            "eventType": "sms-delivery-report",
            "data": {"messageId": message_id, "status": "DELIVRD"},
        }
        assert client.post("/dlr/mobizon", json=event).json()["code"] == 0
    client.post("/messages", json={"id": "open", "campaign": "c"})
    task = client.post("/campaigns/c/export", json={"format": "csv"}).json()["data"]["task_id"]
    deadline = time.monotonic() + 30
    while client.get(f"/tasks/{task}").json()["data"]["state"] != "done":
        assert time.monotonic() < deadline, "the export did not finish"
        time.sleep(0.1)
    for _ in range(2):
        client.post("/dlr/generic", data={"id": "q", "status": "NOT-A-STATUS"})  # quarantined
    _age(db)
    return int(task)


def _age(db: str) -> None:
    """The clock cannot be moved back 100 days: the rows are aged instead."""

    async def run() -> None:
        conn = await asyncpg.connect(db)
        try:
            for statement in AGED:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def _sweep(db: str, retention: str, batch: int = 250) -> None:
    env = {**os.environ, "DATABASE_URL": db, "DLR_RETENTION": retention, "DLR_SWEEP_BATCH": str(batch)}
    swept = subprocess.run([*command(), "sweep"], env=env, capture_output=True, text=True, timeout=120)
    assert swept.returncode == 0, swept.stderr


def test_a_sweep_pass_deletes_what_is_past_retention_and_nothing_else(client: TestClient, db: str) -> None:
    task = _seed(client, db)
    _sweep(db, "90d")
    ids = {r["id"] for r in fetch(db, "SELECT id FROM messages")}
    assert ids == {"recent", "open"}
    assert {r["message_id"] for r in fetch(db, "SELECT DISTINCT message_id FROM history")} == {"recent"}
    assert {r["event_id"] for r in fetch(db, "SELECT event_id FROM sender_events")} == {"ev-recent"}
    assert [r["id"] for r in fetch(db, "SELECT id FROM quarantine ORDER BY id")] == [2]
    assert client.get("/messages/old").json()["code"] == 2
    assert client.get(f"/tasks/{task}").json()["code"] == 2
    assert fetch(db, "SELECT count(*) AS n FROM task_output")[0]["n"] == 0


def test_a_pass_in_many_small_steps_deletes_every_old_message_and_passes_over_the_kept(
    client: TestClient, db: str
) -> None:
    """Steps of 2 walk on from where the last ended: past messages still open or final too recently, of the same
    age and in between, which stay."""
    for i in range(12):
        assert client.post("/dlr/generic", data={"id": f"old-{i:02}", "status": "DELIVRD"}).json()["code"] == 0
    for i in range(3):
        client.post("/messages", json={"id": f"open-{i}"})
        assert client.post("/dlr/generic", data={"id": f"late-{i}", "status": "DELIVRD"}).json()["code"] == 0

    async def age() -> None:
        conn = await asyncpg.connect(db)
        try:
            # old-00 .. old-11 sent a minute apart 100 days ago; open-i and late-i sent between old-0(4i) and the next
            await conn.execute(
                "UPDATE messages SET sent_at = now() - interval '100 days' + substr(id, 5)::int * interval '1 min',"
                " final_at = now() - interval '95 days' WHERE id LIKE 'old-%'"
            )
            between = "now() - interval '100 days' + (4 * substr(id, 6)::int) * interval '1 min' + interval '30 s'"
            await conn.execute(
                f"UPDATE messages SET sent_at = {between}, expires_at = now() + interval '1 day' WHERE id LIKE 'open-%'"
            )
            await conn.execute(
                f"UPDATE messages SET sent_at = {between}, final_at = now() - interval '10 days' WHERE id LIKE 'late-%'"
            )
        finally:
            await conn.close()

    asyncio.run(age())
    _sweep(db, "90d", batch=2)
    assert {r["id"] for r in fetch(db, "SELECT id FROM messages")} == {
        *(f"open-{i}" for i in range(3)),
        *(f"late-{i}" for i in range(3)),
    }
    assert {r["message_id"] for r in fetch(db, "SELECT DISTINCT message_id FROM history")} == {
        f"late-{i}" for i in range(3)
    }


def test_quarantined_payloads_go_in_small_steps_up_to_the_first_one_to_keep(client: TestClient, db: str) -> None:
    for _ in range(6):
        client.post("/dlr/generic", data={"id": "q", "status": "NOT-A-STATUS"})  # quarantined
    ids = [r["id"] for r in fetch(db, "SELECT id FROM quarantine ORDER BY id")]

    async def age() -> None:
        conn = await asyncpg.connect(db)
        try:
            await conn.execute("UPDATE quarantine SET received_at = now() - interval '91 days' WHERE id <> $1", ids[4])
        finally:
            await conn.close()

    asyncio.run(age())
    _sweep(db, "90d", batch=2)
    # Steps of 2 walk on from the last id deleted, and stop at the fifth: the walk never reads past what it keeps.
    assert [r["id"] for r in fetch(db, "SELECT id FROM quarantine ORDER BY id")] == ids[4:]


def test_retention_zero_keeps_everything(client: TestClient, db: str) -> None:
    task = _seed(client, db)
    _sweep(db, "0")
    assert {r["id"] for r in fetch(db, "SELECT id FROM messages")} == {"old", "old-late", "recent", "open"}
    assert len(fetch(db, "SELECT id FROM quarantine")) == 2
    assert client.get(f"/tasks/{task}").json()["data"]["state"] == "done"


def test_retention_is_read_and_a_malformed_one_stops_the_start() -> None:
    assert Settings.from_env({}, env_file=None).retention == 90 * 86400
    assert Settings.from_env({"DLR_RETENTION": "0"}, env_file=None).retention == 0
    assert Settings.from_env({"DLR_RETENTION": "30d"}, env_file=None).retention == 30 * 86400
    for bad in ("90 days", "-1d", "forever"):
        with pytest.raises(SettingsError, match="DLR_RETENTION"):
            Settings.from_env({"DLR_RETENTION": bad}, env_file=None)
