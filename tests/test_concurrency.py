"""Many concurrent reports for the same messages through one app and its connection pool."""

from __future__ import annotations

import asyncio
import random
import threading
from dataclasses import replace

import asyncpg
import httpx2
import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.config import Settings
from tests.test_processes import check_final_states, reports_for


@pytest.mark.parametrize("writers", [1, 4])
def test_concurrent_reports_for_the_same_messages(settings: Settings, db: str, writers: int) -> None:
    """Hundreds of shuffled, duplicated reports for a few messages, 48 at a time: each message ends
    DELIVRD on both parts, each status is applied once, and no request fails (row locks, no deadlock).
    With the default single writer and with four (`DLR_WRITERS`), whose batches race on the same messages."""
    ids = [f"c{i}" for i in range(12)]
    reports = reports_for(ids)
    random.Random(3).shuffle(reports)
    app = create_app(replace(settings, writers=writers))

    async def run() -> list[int]:
        async with app.router.lifespan_context(app):
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
                gate = asyncio.Semaphore(48)

                async def one(report: dict[str, str]) -> int:
                    async with gate:
                        return (await client.post("/dlr/generic", data=report)).status_code

                return await asyncio.gather(*(one(r) for r in reports))

    statuses = asyncio.run(run())
    assert set(statuses) == {200}
    check_final_states(db, ids)


def _created_meanwhile(db: str, sql: list[str], ready: threading.Event, hold: float) -> threading.Thread:
    """Another writer (a replica, say) that has created rows in a transaction it commits `hold` s later."""

    async def other_writer() -> None:
        conn = await asyncpg.connect(db)
        try:
            transaction = conn.transaction()
            await transaction.start()
            for statement in sql:
                await conn.execute(statement)
            ready.set()
            await asyncio.sleep(hold)
            await transaction.commit()
        finally:
            await conn.close()

    thread = threading.Thread(target=lambda: asyncio.run(other_writer()))
    thread.start()
    return thread


NEW_MESSAGE = (
    "INSERT INTO messages (id, status, segment_statuses, segment_updated_at, sent_at, expires_at, created_at, "
    "updated_at) VALUES ('{id}', 'ACCEPTD', ARRAY['ACCEPTD'], ARRAY[now()], now(), now() + interval '1 day', "
    "now(), now())"
)


def test_a_message_created_by_another_writer_meanwhile_is_applied_to_not_overwritten(
    client: TestClient, db: str
) -> None:
    """A batch takes a message for new while another writer's transaction is creating it: the batch's insert
    meets that row once it commits, and the batch is applied again on top of it -- nothing is lost or doubled."""
    ready = threading.Event()
    other = _created_meanwhile(db, [NEW_MESSAGE.format(id="race-1")], ready, hold=0.5)
    ready.wait(10)
    answer = client.post("/dlr/generic", data={"id": "race-1", "status": "DELIVRD"})
    other.join()
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == {"id": "race-1", "status": "DELIVRD", "applied": True, "reason": None}
    history = client.get("/messages/race-1/history").json()["data"]["items"]
    assert [(h["status"], h["applied"]) for h in history] == [("DELIVRD", True)]


def test_an_event_another_writer_stored_meanwhile_is_a_duplicate(client: TestClient, db: str) -> None:
    """The same signed event reaches two writers at once (a retry racing the original): the one that took
    the message for new meets the other's history row, applies the batch again and finds a duplicate."""
    ready = threading.Event()
    stored = (
        "INSERT INTO history (message_id, status, raw_status, received_at, source, applied, event_id) "
        "VALUES ('race-2', 'ACCEPTD', 'ACCEPTD', now(), 'mobizon', true, 'ev-1')"
    )
    other = _created_meanwhile(db, [NEW_MESSAGE.format(id="race-2"), stored], ready, hold=0.5)
    ready.wait(10)
    event = {
        "eventId": "ev-1",
        "eventType": "sms-delivery-report",
        "data": {"messageId": "race-2", "status": "ACCEPTD"},
    }
    answer = client.post("/dlr/mobizon", json=event)
    other.join()
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["reason"] == "duplicate"
    history = client.get("/messages/race-2/history").json()["data"]["items"]
    assert len(history) == 1


def test_a_registration_racing_another_writer_fills_in_the_message_it_created(client: TestClient, db: str) -> None:
    """A registration for a message another writer is creating meanwhile lands on that message once it
    commits: metadata filled in, its status left alone, and it does not claim to have created it."""
    ready = threading.Event()
    other = _created_meanwhile(db, [NEW_MESSAGE.format(id="race-3")], ready, hold=0.5)
    ready.wait(10)
    answer = client.post("/messages", json={"id": "race-3", "campaign": "c-race", "segments": 2})
    other.join()
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == {"id": "race-3", "status": "ACCEPTD", "created": False}
    message = client.get("/messages/race-3").json()["data"]
    assert (message["campaign"], message["segments_total"]) == ("c-race", 2)


def test_a_message_another_writer_changes_meanwhile_is_decided_again_not_overwritten(
    client: TestClient, db: str
) -> None:
    """A batch reads a message (ACCEPTD) while another writer's transaction is changing it (to UNDELIV, and
    to a new campaign): the batch's write finds the row changed once that commits, nothing of it stays, and
    the report is decided again on the message as it is now -- after its final status -- instead of writing
    DELIVRD over UNDELIV or the old campaign back."""
    client.post("/messages", json={"id": "race-4", "campaign": "before"})
    client.post("/dlr/generic", data={"id": "race-4", "status": "ACCEPTD"})
    ready = threading.Event()
    change = (
        "UPDATE messages SET status = 'UNDELIV', segment_statuses = ARRAY['UNDELIV'], final_at = now(), "
        "campaign = 'after', version = version + 1 WHERE id = 'race-4'"
    )
    other = _created_meanwhile(db, [change], ready, hold=0.5)
    ready.wait(10)
    answer = client.post("/dlr/generic", data={"id": "race-4", "status": "DELIVRD"})
    other.join()
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == {"id": "race-4", "status": "UNDELIV", "applied": False, "reason": "after_final"}
    message = client.get("/messages/race-4").json()["data"]
    assert (message["status"], message["campaign"]) == ("UNDELIV", "after")
    history = client.get("/messages/race-4/history").json()["data"]["items"]
    assert [(h["status"], h["applied"], h["reason"]) for h in history][-1] == ("DELIVRD", False, "after_final")
