"""Background tasks through HTTP (DESIGN §2, "Mass operations"): export, close and replay end to end, their
progress and states, cancel, and the refusals."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from starlette.testclient import TestClient

from service.access import parse_api_keys
from service.app import create_app
from service.config import Settings
from tests.conftest import fetch

EXPORTED = ("id", "status", "final", "to", "campaign", "segments_total", "sent_at", "updated_at", "final_at", "error")
FINISHED = ("done", "failed", "cancelled")


@pytest.fixture
def tasks_client(settings: Settings) -> Iterator[TestClient]:
    """A service whose runner takes tiny batches (so every task spans many) and never rests."""
    with TestClient(create_app(replace(settings, task_batch=3, task_poll=0.05, task_duty=1.0))) as client:
        yield client


def queue(client: TestClient, path: str, body: Any = None) -> int:
    answer = client.post(path, json=body)
    assert (answer.status_code, answer.json()["code"]) == (202, 100), answer.text
    task_id: int = answer.json()["data"]["task_id"]
    assert answer.headers["location"] == f"/tasks/{task_id}"
    return task_id


def wait(client: TestClient, task_id: int, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        data: dict[str, Any] = client.get(f"/tasks/{task_id}").json()["data"]
        if data["state"] in FINISHED:
            return data
        assert time.monotonic() < deadline, f"task {task_id} did not finish: {data}"
        time.sleep(0.05)


def seed_campaign(client: TestClient, campaign: str, n: int) -> None:
    batch = [{"id": f"{campaign}-{i:03}", "campaign": campaign, "to": f"+3805{i:07}"} for i in range(n)]
    assert client.post("/messages", json=batch).json()["code"] == 0


def as_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def test_csv_export_has_every_message_of_the_campaign_row_by_row(tasks_client: TestClient) -> None:
    """Every message of the campaign (and none of another) is one CSV row under a header row of the
    fields of GET /messages/{id}, with the same values; commas, quotes and line breaks survive quoting;
    progress counts the rows, and the result names the download."""
    client = tasks_client
    seed_campaign(client, "c1", 10)
    seed_campaign(client, "other", 2)
    tricky = 'a,"b"\r\nc'
    client.post("/messages", json={"id": "c1-tricky", "campaign": "c1", "to": tricky, "segments": 2})
    client.post("/dlr/generic", json={"id": "c1-tricky", "status": "DELIVRD", "segment": 1, "error": 'e,"1"\nx'})
    client.post("/dlr/generic", json={"id": "c1-003", "status": "UNDELIV", "error": "34"})
    task = wait(client, queue(client, "/campaigns/c1/export", {"format": "csv"}))
    assert task["state"] == "done", task
    assert task["progress"] == {"done": 11, "total": 11}
    assert task["result"]["rows"] == 11
    assert task["result"]["download"] == f"/tasks/{task['id']}/result"
    answer = client.get(task["result"]["download"])
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert len(answer.content) == task["result"]["bytes"]
    rows = list(csv.reader(io.StringIO(answer.content.decode(), newline="")))
    assert rows[0] == list(EXPORTED)
    assert len(rows) == 12
    for row in rows[1:]:
        shown = client.get(f"/messages/{row[0]}").json()["data"]
        assert row == [as_cell(shown[name]) for name in EXPORTED]
    assert {row[0] for row in rows[1:]} == {f"c1-{i:03}" for i in range(10)} | {"c1-tricky"}
    tricky_row = next(row for row in rows if row[0] == "c1-tricky")
    assert (tricky_row[3], tricky_row[9]) == (tricky, 'e,"1"\nx')


def test_ndjson_export_lines_are_the_messages_as_shown(tasks_client: TestClient) -> None:
    """NDJSON: one JSON object per line, each the message as GET /messages/{id} shows it, those fields only."""
    client = tasks_client
    seed_campaign(client, "c2", 7)
    client.post("/dlr/generic", json={"id": "c2-001", "status": "DELIVRD"})
    task = wait(client, queue(client, "/campaigns/c2/export", {"format": "ndjson"}))
    answer = client.get(f"/tasks/{task['id']}/result")
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    lines = answer.content.decode().splitlines()
    assert len(lines) == 7
    for line in lines:
        item = json.loads(line)
        shown = client.get(f"/messages/{item['id']}").json()["data"]
        assert item == {name: shown[name] for name in EXPORTED}


def test_close_resolves_open_messages_with_history_and_events_and_leaves_final_ones(
    tasks_client: TestClient, db: str
) -> None:
    """Closing with DELETED resolves each open message of the campaign as the sweep would (a partly delivered
    one takes its first final segment's status), each change one history row and one feed event (source
    `close`); final messages and other campaigns are left as they were."""
    client = tasks_client
    seed_campaign(client, "c3", 6)
    seed_campaign(client, "keep", 1)
    client.post("/messages", json={"id": "c3-multi", "campaign": "c3", "segments": 2})
    client.post("/dlr/generic", json={"id": "c3-multi", "status": "DELIVRD", "segment": 2})
    client.post("/dlr/generic", json={"id": "c3-000", "status": "DELIVRD"})
    client.post("/dlr/generic", json={"id": "c3-001", "status": "ACCEPTD"})
    before_final = client.get("/messages/c3-000").json()["data"]
    history_final = client.get("/messages/c3-000/history").json()["data"]["items"]
    task = wait(client, queue(client, "/campaigns/c3/close", {"status": "DELETED"}))
    assert task["state"] == "done", task
    assert task["result"] == {"status": "DELETED", "resolved": 6, "by_status": {"DELETED": 5, "DELIVRD": 1}}
    assert task["progress"] == {"done": 7, "total": 7}
    for i in range(1, 6):
        shown = client.get(f"/messages/c3-{i:03}").json()["data"]
        assert (shown["status"], shown["final"]) == ("DELETED", True)
        last = client.get(f"/messages/c3-{i:03}/history").json()["data"]["items"][-1]
        assert (last["source"], last["status"], last["applied"]) == ("close", "DELETED", True)
    multi = client.get("/messages/c3-multi").json()["data"]
    assert (multi["status"], [s["status"] for s in multi["segments"]]) == ("DELIVRD", ["DELETED", "DELIVRD"])
    assert client.get("/messages/c3-000").json()["data"] == before_final
    assert client.get("/messages/c3-000/history").json()["data"]["items"] == history_final
    assert client.get("/messages/keep-000").json()["data"]["status"] == "NEW"
    events = fetch(db, "SELECT id, previous_status, status, version FROM events WHERE source = 'close' ORDER BY id")
    assert len(events) == 6
    assert {e["id"]: e["status"] for e in events}["c3-001"] == "DELETED"
    assert {e["id"]: e["previous_status"] for e in events}["c3-001"] == "ACCEPTD"
    # A second close finds nothing open.
    again = wait(client, queue(client, "/campaigns/c3/close", {"status": "EXPIRED"}))
    assert again["result"]["resolved"] == 0
    assert 'dlr_tasks_total{kind="close",outcome="done"}' in client.get("/metrics").text


def test_replay_applies_what_parses_now_and_keeps_what_still_fails(settings: Settings, db: str) -> None:
    """A mass replay goes through every matching quarantined payload: those that parse now (a batch refused
    under a lower DLR_MAX_BATCH) are applied and leave the quarantine; those that still fail stay; other
    dialects are left alone."""
    big = [{"id": f"r{i}", "status": "DELIVRD"} for i in range(4)]
    with TestClient(create_app(replace(settings, max_batch=3))) as client:
        for start in range(3):
            client.post("/dlr/generic", json=[{**b, "id": f"{b['id']}-{start}"} for b in big])
        client.post("/dlr/generic", json={"id": "bad", "status": "BOGUS"})
        client.post("/dlr/kannel", content=b"", headers={"content-type": "application/x-www-form-urlencoded"})
    assert len(fetch(db, "SELECT id FROM quarantine")) == 5
    with TestClient(create_app(replace(settings, task_batch=10, task_poll=0.05, task_duty=1.0))) as client:
        task = wait(client, queue(client, "/quarantine/replay", {"dialect": "generic"}))
        assert task["state"] == "done", task
        assert task["result"] == {"replayed": 3, "failed": 1, "gone": 0}
        assert task["progress"] == {"done": 4, "total": 4}
        for start in range(3):
            for i in range(4):
                assert client.get(f"/messages/r{i}-{start}").json()["data"]["status"] == "DELIVRD"
        left = client.get("/quarantine").json()["data"]["items"]
        assert sorted(i["dialect"] for i in left) == ["generic", "kannel"]


def test_replay_time_range_and_bad_requests(tasks_client: TestClient) -> None:
    """since/until select by receipt time; bad fields are code 1, a reversed range code 12, an unknown
    field code 1, a non-JSON body code 6; the API key is required when keys are configured."""
    client = tasks_client
    client.post("/dlr/generic", json={"id": "x", "status": "BOGUS"})
    task = wait(client, queue(client, "/quarantine/replay", {"until": "2001-01-01T00:00:00Z"}))
    assert task["progress"] == {"done": 0, "total": 0}
    for body, code, field in [
        ({"since": "yesterday"}, 1, "since"),
        ({"dialect": 5}, 1, "dialect"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, 12, "until"),
        ({"dialekt": "generic"}, 1, "dialekt"),
        ([1], 1, "body"),
    ]:
        answer = client.post("/quarantine/replay", json=body)
        assert (answer.status_code, answer.json()["code"]) == (400, code), answer.text
        assert field in answer.json()["data"]
    answer = client.post("/quarantine/replay", content=b"dialect=x", headers={"content-type": "text/plain"})
    assert answer.json()["code"] == 6


def test_export_and_close_refusals(tasks_client: TestClient) -> None:
    """Missing format/status: code 11; a bad one: code 1; an unknown campaign: code 2; an unknown query
    parameter: code 1; unknown or malformed task ids: code 2; a close task has no result (code 2)."""
    client = tasks_client
    seed_campaign(client, "c4", 1)
    cases = [
        ("/campaigns/c4/export", {}, 400, 11),
        ("/campaigns/c4/export", None, 400, 11),
        ("/campaigns/c4/export", {"format": "xml"}, 400, 1),
        ("/campaigns/c4/close", {"status": "DELIVRD"}, 400, 1),
        ("/campaigns/c4/close", {}, 400, 11),
        ("/campaigns/nope/export", {"format": "csv"}, 404, 2),
        ("/campaigns/nope/close", {"status": "EXPIRED"}, 404, 2),
        ("/campaigns/c4/export?verbose=1", {"format": "csv"}, 400, 1),
    ]
    for path, body, status, code in cases:
        answer = client.post(path, json=body)
        assert (answer.status_code, answer.json()["code"]) == (status, code), (path, body, answer.text)
    for path in ("/tasks/999", "/tasks/abc", "/tasks/999/result"):
        answer = client.get(path)
        assert (answer.status_code, answer.json()["code"]) == (404, 2), path
    assert client.delete("/tasks/999").json()["code"] == 2
    closed = wait(client, queue(client, "/campaigns/c4/close", {"status": "EXPIRED"}))
    assert client.get(f"/tasks/{closed['id']}/result").json()["code"] == 2
    finished = client.delete(f"/tasks/{closed['id']}")
    assert (finished.status_code, finished.json()["code"]) == (409, 15)


def test_tasks_need_the_api_key(settings: Settings) -> None:
    """With DLR_API_KEYS set, every task endpoint answers code 8 without the key."""

    with TestClient(create_app(replace(settings, api_keys=parse_api_keys("k1")))) as client:
        for method, path in [
            ("POST", "/campaigns/c/export"),
            ("POST", "/campaigns/c/close"),
            ("POST", "/quarantine/replay"),
            ("GET", "/tasks/1"),
            ("DELETE", "/tasks/1"),
            ("GET", "/tasks/1/result"),
        ]:
            answer = client.request(method, path)
            assert (answer.status_code, answer.json()["code"]) == (401, 8), (method, path)
        assert client.get("/tasks/1", headers={"Authorization": "Bearer k1"}).json()["code"] == 2


def test_cancel_stops_a_running_task_and_drops_its_output(settings: Settings, db: str) -> None:
    """A task cancelled while it runs stops at its next batch: state cancelled, no more progress, its partial
    output gone, no result to download; an unfinished one cannot be cancelled twice (code 15)."""
    # One message per batch and a long rest after each: the export is still running when it is cancelled.
    with TestClient(create_app(replace(settings, task_batch=1, task_poll=0.05, task_duty=0.05))) as client:
        seed_campaign(client, "c5", 40)
        task_id = queue(client, "/campaigns/c5/export", {"format": "csv"})
        deadline = time.monotonic() + 20
        while client.get(f"/tasks/{task_id}").json()["data"]["progress"]["done"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        cancelled = client.delete(f"/tasks/{task_id}").json()
        assert (cancelled["code"], cancelled["data"]["state"]) == (0, "cancelled")
        done = cancelled["data"]["progress"]["done"]
        time.sleep(0.5)
        after = client.get(f"/tasks/{task_id}").json()["data"]
        assert (after["state"], after["progress"]["done"]) == ("cancelled", done)
        assert after["finished_at"] is not None
        assert fetch(db, "SELECT count(*) AS n FROM task_output")[0]["n"] == 0
        assert client.get(f"/tasks/{task_id}/result").json()["code"] == 15
        assert client.delete(f"/tasks/{task_id}").json()["code"] == 15
        assert 'dlr_tasks_total{kind="export",outcome="cancelled"}' in client.get("/metrics").text


def test_a_task_that_breaks_ends_failed_with_a_reference(tasks_client: TestClient, db: str) -> None:
    """A task whose batch raises (here: parameters no request can make, written straight into the table, as a
    bug in a kind would) ends `failed`, its error the reference of the logged exception, counted by outcome;
    the runner goes on with the next task."""
    client = tasks_client
    seed_campaign(client, "c6", 2)
    broken = fetch(
        db,
        """INSERT INTO tasks (kind, params) VALUES ('export', '{"campaign": "c6", "format": "xml"}')
                          RETURNING id""",
    )[0]["id"]
    task = wait(client, broken)
    assert task["state"] == "failed"
    assert task["error"].startswith("unexpected application error (reference ")
    assert task["finished_at"] is not None
    after = wait(client, queue(client, "/campaigns/c6/export", {"format": "csv"}))
    assert after["state"] == "done"
    assert 'dlr_tasks_total{kind="export",outcome="failed"}' in client.get("/metrics").text
