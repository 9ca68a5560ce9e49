"""The event feed through HTTP: `GET /events` (DESIGN "Follow changes") and `dlr-tracker events`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from starlette.testclient import TestClient

from service.store import events as feed
from tests.conftest import arrange, fetch
from tests.processes import ServiceProcess, command

OVERDUE = "2020-01-01T00:00:00Z"


def events(client: TestClient, **params: Any) -> dict[str, Any]:
    response = client.get("/events", params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


def everything(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    page = events(client, limit=1000, **params)
    while page["items"]:
        items += page["items"]
        page = events(client, limit=1000, after=page["next_cursor"], **params)
    return items


def test_each_committed_change_is_one_event_with_the_message_after_it(client: TestClient) -> None:
    """Creation by registration, each applied report: one event each, in commit order, with the message as
    GET /messages/{id} showed it after the change, the status before, the source and a version rising by one.
    Duplicates, stale and after-final reports change nothing and make no event."""
    client.post("/messages", json={"id": "m1", "to": "380", "campaign": "spring", "segments": 2})
    client.post("/dlr/generic", json={"id": "m1", "status": "ACCEPTD"})
    client.post("/dlr/generic", json={"id": "m1", "status": "ACCEPTD"})  # duplicate
    client.post("/dlr/generic", json={"id": "m1", "status": "ENQUEUD"})  # stale
    client.post("/dlr/generic", json={"id": "m1", "status": "DELIVRD", "segment": 1})
    after_third = client.get("/messages/m1").json()["data"]
    client.post("/dlr/generic", json={"id": "m1", "status": "DELIVRD", "segment": 2})
    client.post("/dlr/generic", json={"id": "m1", "status": "UNDELIV"})  # after_final
    items = everything(client)
    assert [(e["data"]["previous_status"], e["data"]["status"], e["data"]["source"]) for e in items] == [
        (None, "NEW", "registration"),
        ("NEW", "ACCEPTD", "generic"),
        ("ACCEPTD", "PDLIVRD", "generic"),
        ("PDLIVRD", "DELIVRD", "generic"),
    ]
    assert [e["data"]["version"] for e in items] == [1, 2, 3, 4]
    assert {e["type"] for e in items} == {"message.status_changed"}
    assert len({e["id"] for e in items}) == 4
    third = {k: v for k, v in items[2]["data"].items() if k not in ("previous_status", "source")}
    assert third == after_third
    last = {k: v for k, v in items[3]["data"].items() if k not in ("previous_status", "source")}
    assert last == client.get("/messages/m1").json()["data"]
    assert items[3]["timestamp"] == last["updated_at"]
    assert everything(client) == items  # the same events, the same ids, every time


def test_several_changes_of_one_message_in_one_batch_are_each_an_event_in_order(client: TestClient) -> None:
    """A batch that creates a message and changes it twice (a sender's array of reports): three events, in
    the order they happened, each with the message as it was after its own change, not as the batch left it."""
    answer = client.post(
        "/dlr/generic",
        json=[
            {"id": "b1", "status": "ACCEPTD", "segments": 2},
            {"id": "other", "status": "ACCEPTD"},
            {"id": "b1", "status": "DELIVRD", "segment": 1},
            {"id": "b1", "status": "DELIVRD", "segment": 2},
        ],
    )
    assert answer.json()["code"] == 0
    items = [e["data"] for e in everything(client) if e["data"]["id"] == "b1"]
    assert [(e["previous_status"], e["status"], e["version"]) for e in items] == [
        (None, "ACCEPTD", 1),
        ("ACCEPTD", "PDLIVRD", 2),
        ("PDLIVRD", "DELIVRD", 3),
    ]
    assert [s["status"] for s in items[1]["segments"]] == ["DELIVRD", "ACCEPTD"]
    assert items[0]["final_at"] is None
    assert items[2]["final_at"] is not None
    final = client.get("/messages/b1").json()["data"]
    assert {k: v for k, v in items[2].items() if k not in ("previous_status", "source")} == final


def test_a_report_creating_a_message_and_a_sweep_resolution_are_events(client: TestClient, db: str) -> None:
    """The first report of an unknown id makes one event (no status before it); the expiry sweep's
    resolution is an event with source `sweep`, like any other change."""
    client.post("/dlr/generic", json={"id": "r1", "status": "ACCEPTD", "time": OVERDUE})
    swept = subprocess.run(
        [*command(), "sweep"], env={**os.environ, "DATABASE_URL": db}, capture_output=True, text=True, timeout=120
    )
    assert swept.returncode == 0, swept.stderr
    items = everything(client)
    assert [(e["data"]["previous_status"], e["data"]["status"], e["data"]["source"]) for e in items] == [
        (None, "ACCEPTD", "generic"),
        ("ACCEPTD", "EXPIRED", "sweep"),
    ]
    assert items[1]["data"]["version"] == 2
    assert {k: v for k, v in items[1]["data"].items() if k not in ("previous_status", "source")} == client.get(
        "/messages/r1"
    ).json()["data"]


def test_pages_follow_on_from_their_cursor(client: TestClient) -> None:
    """Small pages and their next_cursor give every event once, in order; an event's id resumes after it;
    past the end the page is empty and hands back the same cursor."""
    client.post("/messages", json=[{"id": f"p{i}"} for i in range(7)])
    whole = [e["id"] for e in everything(client)]
    seen, cursor = [], None
    while True:
        page = events(client, limit=3, **({"after": cursor} if cursor else {}))
        if not page["items"]:
            assert page["next_cursor"] == cursor
            break
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
    assert seen == whole
    assert len(whole) == 7
    assert [e["id"] for e in events(client, after=whole[3])["items"]] == whole[4:]


def test_filters_by_campaign_and_finality(client: TestClient) -> None:
    client.post("/messages", json=[{"id": "a", "campaign": "c1"}, {"id": "b", "campaign": "c2"}])
    client.post("/dlr/generic", json=[{"id": "a", "status": "DELIVRD"}, {"id": "b", "status": "ACCEPTD"}])
    assert [(e["data"]["id"], e["data"]["status"]) for e in everything(client, campaign="c1")] == [
        ("a", "NEW"),
        ("a", "DELIVRD"),
    ]
    assert [e["data"]["id"] for e in everything(client, final="true")] == ["a"]
    assert [e["data"]["status"] for e in everything(client, final="false")] == ["NEW", "NEW", "ACCEPTD"]


def test_latest_starts_at_the_present(client: TestClient) -> None:
    client.post("/messages", json={"id": "old"})
    page = events(client, after="latest")
    assert page["items"] == []
    client.post("/messages", json={"id": "new"})
    assert [e["data"]["id"] for e in events(client, after=page["next_cursor"])["items"]] == ["new"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"after": "nonsense"}, "after"),
        ({"after": "1-2-3"}, "after"),
        ({"after": "99999999999999999999-1"}, "after"),
        ({"limit": "1001"}, "limit"),
    ],
)
def test_a_malformed_cursor_or_limit_is_code_12(client: TestClient, query: dict[str, str], field: str) -> None:
    answer = client.get("/events", params=query)
    assert (answer.status_code, answer.json()["code"], list(answer.json()["data"])[:1]) == (400, 12, [field])


@pytest.mark.parametrize(
    ("query", "field"), [({"final": "yes"}, "final"), ({"wait": "31"}, "wait"), ({"since": "x"}, "since")]
)
def test_bad_parameters_are_code_1(client: TestClient, query: dict[str, str], field: str) -> None:
    answer = client.get("/events", params=query)
    assert (answer.status_code, answer.json()["code"], field in answer.json()["data"]) == (400, 1, True)


def test_a_cursor_older_than_the_oldest_event_kept_is_code_12_naming_it(client: TestClient, db: str) -> None:
    """Once events are pruned past a reader's cursor, the reader is told so (and where the feed now starts),
    never served a silent gap."""
    client.post("/messages", json=[{"id": f"x{i}"} for i in range(3)])
    first = events(client, limit=1)["next_cursor"]

    async def prune() -> int:
        conn = await asyncpg.connect(db)
        try:
            return await feed.prune(conn, datetime.now(UTC) + timedelta(seconds=1), 2)
        finally:
            await conn.close()

    assert asyncio.run(prune()) == 2
    answer = client.get("/events", params={"after": first})
    oldest = answer.json()["data"]["oldest"]
    assert (answer.status_code, answer.json()["code"]) == (400, 12)
    assert [e["data"]["id"] for e in events(client)["items"]] == ["x2"]  # no `after`: the oldest kept
    assert [e["data"]["id"] for e in events(client, after=oldest)["items"]] == ["x2"]


def test_pruning_deletes_only_the_start_of_the_feed_up_to_the_first_event_too_young(
    client: TestClient, db: str
) -> None:
    """Pruning walks the feed in its own order and stops at the first event younger than the cutoff, even
    when older ones follow it (a batch received earlier may commit later): what is gone is always a prefix,
    so the horizon says exactly which cursors are expired."""
    client.post("/messages", json=[{"id": f"p{i}"} for i in range(4)])

    async def prune() -> int:
        conn = await asyncpg.connect(db)
        try:
            await conn.execute("UPDATE events SET at = now() + interval '1 hour' WHERE id = 'p1'")
            return await feed.prune(conn, datetime.now(UTC) + timedelta(seconds=1), 100)
        finally:
            await conn.close()

    assert asyncio.run(prune()) == 1
    assert [e["data"]["id"] for e in events(client)["items"]] == ["p1", "p2", "p3"]


def test_wait_answers_as_soon_as_a_change_commits(client: TestClient) -> None:
    """A long poll returns within a fraction of a second of the commit; with nothing new it returns empty
    after `wait` seconds, with the cursor it was given."""
    start = events(client, after="latest")["next_cursor"]
    answers: list[tuple[float, dict[str, Any]]] = []

    def follow() -> None:
        began = time.monotonic()
        data = events(client, after=start, wait=10)
        answers.append((time.monotonic() - began, data))

    reader = threading.Thread(target=follow)
    reader.start()
    time.sleep(0.5)
    committed = time.monotonic()
    client.post("/dlr/generic", json={"id": "w1", "status": "DELIVRD"})
    reader.join(15)
    took, data = answers[0]
    assert [e["data"]["id"] for e in data["items"]] == ["w1"]
    assert took < 0.5 + (time.monotonic() - committed) + 0.5
    began = time.monotonic()
    empty = events(client, after=data["next_cursor"], wait=1)
    assert empty == {"items": [], "next_cursor": data["next_cursor"]}
    assert 0.9 <= time.monotonic() - began < 3


def test_the_events_command_prints_json_lines_and_resumes(tmp_path: Any, fresh_database: Any) -> None:
    """`dlr-tracker events` prints one JSON event per line from a running service; `--after` resumes after
    an event; `--follow` keeps going and ends cleanly on Ctrl-C."""
    from service import database

    dsn = fresh_database()
    database.migrate(dsn)
    service = ServiceProcess(tmp_path, env={"DATABASE_URL": dsn})
    try:
        service.wait_ready()
        import httpx2

        httpx2.post(f"{service.url}/messages", json=[{"id": "c1"}, {"id": "c2", "campaign": "k"}])
        env = {**os.environ, "DLR_URL": service.url}
        out = subprocess.run([*command(), "events"], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        lines = [json.loads(line) for line in out.stdout.splitlines()]
        assert [e["data"]["id"] for e in lines] == ["c1", "c2"]
        again = subprocess.run(
            [*command(), "events", "--after", lines[0]["id"]], env=env, capture_output=True, text=True, timeout=60
        )
        assert [json.loads(line)["data"]["id"] for line in again.stdout.splitlines()] == ["c2"]
        only = subprocess.run(
            [*command(), "events", "--campaign", "k"], env=env, capture_output=True, text=True, timeout=60
        )
        assert [json.loads(line)["data"]["id"] for line in only.stdout.splitlines()] == ["c2"]

        follow = subprocess.Popen(
            [*command(), "events", "--follow", "--after", lines[1]["id"]],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # Ctrl-C as in a terminal: a test run started in the background (`cmd &` in a script) passes SIGINT
            # on ignored, and Python then never raises KeyboardInterrupt.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        time.sleep(1)
        httpx2.post(f"{service.url}/dlr/generic", json={"id": "c3", "status": "DELIVRD"})
        assert follow.stdout is not None
        line = follow.stdout.readline()
        assert json.loads(line)["data"]["id"] == "c3"
        follow.send_signal(signal.SIGINT)
        _rest, errors = follow.communicate(timeout=10)
        assert follow.returncode == 0, errors
    finally:
        service.stop()


def test_every_change_writes_its_event_in_the_same_transaction(client: TestClient, db: str) -> None:
    """Messages' versions and the feed agree: each message has exactly its `version` events, numbered 1..n."""
    client.post("/messages", json=[{"id": f"v{i}", "segments": 2} for i in range(5)])
    client.post("/dlr/generic", json=[{"id": f"v{i}", "status": "DELIVRD", "segment": 1} for i in range(5)])
    client.post("/dlr/generic", json=[{"id": f"v{i}", "status": "DELIVRD"} for i in range(0, 5, 2)])
    versions = {r["id"]: r["version"] for r in fetch(db, "SELECT id, version FROM messages")}
    stored = fetch(db, "SELECT id, array_agg(version ORDER BY tx, position) AS v FROM events GROUP BY id")
    assert {r["id"]: list(r["v"]) for r in stored} == {i: list(range(1, n + 1)) for i, n in versions.items()}


def test_a_sweep_pass_prunes_events_past_their_retention(client: TestClient, db: str) -> None:
    """`DLR_EVENT_RETENTION`: each sweep pass (here `dlr-tracker sweep`) deletes older events; a reader whose
    cursor they were is told where the feed now starts, and a reader from the start sees only what is kept."""
    client.post("/messages", json=[{"id": "old1"}, {"id": "old2"}])
    first = events(client, limit=1)["next_cursor"]
    client.post("/messages", json={"id": "young"})
    arrange(db, "UPDATE events SET at = at - interval '1 hour' WHERE id IN ('old1', 'old2')")
    env = {**os.environ, "DATABASE_URL": db, "DLR_EVENT_RETENTION": "10m"}
    swept = subprocess.run([*command(), "sweep"], env=env, capture_output=True, text=True, timeout=120)
    assert swept.returncode == 0, swept.stderr
    assert [e["data"]["id"] for e in everything(client)] == ["young"]
    answer = client.get("/events", params={"after": first})
    assert (answer.status_code, answer.json()["code"]) == (400, 12)
    assert fetch(db, "SELECT count(*) AS n FROM events")[0]["n"] == 1


@pytest.mark.parametrize("value", ["7", "90s", "15m", "2h", "7d", "1.5d"])
def test_retention_durations_are_read(value: str) -> None:
    from service.config import Settings

    seconds = {"7": 7, "90s": 90, "15m": 900, "2h": 7200, "7d": 604800, "1.5d": 129600}[value]
    assert Settings.from_env({"DLR_EVENT_RETENTION": value}, env_file=None).event_retention == seconds


@pytest.mark.parametrize("value", ["7w", "-1d", "d", "1e3", "0.5"])
def test_a_malformed_retention_stops_the_start_naming_the_variable(value: str) -> None:
    from service.config import Settings, SettingsError

    with pytest.raises(SettingsError, match="DLR_EVENT_RETENTION"):
        Settings.from_env({"DLR_EVENT_RETENTION": value}, env_file=None)


def test_pruning_in_small_steps_walks_the_feed_to_its_end(client: TestClient, db: str) -> None:
    """Each step starts after the horizon the step before moved: seven old events go in steps of 2, 2, 2, 1,
    and the feed is empty after them."""
    client.post("/messages", json=[{"id": f"s{i}"} for i in range(7)])

    async def prune_all() -> list[int]:
        conn = await asyncpg.connect(db)
        try:
            steps = [await feed.prune(conn, datetime.now(UTC) + timedelta(seconds=1), 2)]
            while steps[-1] == 2:
                steps.append(await feed.prune(conn, datetime.now(UTC) + timedelta(seconds=1), 2))
            return steps
        finally:
            await conn.close()

    assert asyncio.run(prune_all()) == [2, 2, 2, 1]
    assert events(client)["items"] == []
