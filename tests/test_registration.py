"""Registration and delivery times through HTTP: what a re-registration may change, the text kept, the
`created` flag of a batch, and delivery times measured the same way in the metric and the campaign stats."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from service.app import create_app
from tests.conftest import make_settings
from tests.processes import command


@pytest.fixture
def fresh_stats(db: str) -> Iterator[TestClient]:
    """A service whose campaign statistics are counted afresh on every request."""
    with TestClient(create_app(make_settings(db, campaign_stats_ttl=0))) as test_client:
        yield test_client


def message(client: TestClient, message_id: str) -> dict[str, object]:
    response = client.get(f"/messages/{message_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


def test_a_batch_naming_one_id_twice_creates_it_once(client: TestClient) -> None:
    """Only the first item of an id creates the message; the second updates what the first created."""
    items = client.post("/messages", json=[{"id": "twice", "to": "1"}, {"id": "twice", "campaign": "c"}]).json()
    assert [(i["id"], i["created"]) for i in items["data"]["items"]] == [("twice", True), ("twice", False)]
    data = message(client, "twice")
    assert (data["to"], data["campaign"]) == ("1", "c")
    again = client.post("/messages", json={"id": "twice"}).json()["data"]
    assert again["created"] is False


def test_the_text_sent_is_kept_and_shown(client: TestClient) -> None:
    """`text` is stored as registered (up to 10,000 characters) and shown with the message; longer is code 1."""
    text = "Ваш код: 4217 ✓"
    assert client.post("/messages", json={"id": "t1", "text": text}).json()["code"] == 0
    assert message(client, "t1")["text"] == text
    assert message(client, "t1")["text"] == client.get("/messages?ids=t1").json()["data"]["items"][0]["text"]
    long = client.post("/messages", json={"id": "t2", "text": "x" * 10_001})
    assert (long.status_code, long.json()["code"], list(long.json()["data"])) == (400, 1, ["text"])
    assert client.get("/messages/t2").status_code == 404
    assert client.post("/dlr/generic", json={"id": "t3", "status": "ACCEPTD"}).json()["code"] == 0
    assert message(client, "t3")["text"] is None


def test_re_registering_a_final_message_fills_in_only_what_was_empty(fresh_stats: TestClient) -> None:
    """A delivered message keeps its recipient, campaign, sending time and text: a later registration
    cannot move it to another campaign or change its statistics after the fact. What was never known
    (here the text) is filled in."""
    client = fresh_stats
    client.post("/messages", json={"id": "done", "to": "380", "campaign": "spring", "sent_at": "2026-11-25T10:00:00Z"})
    client.post("/dlr/generic", json={"id": "done", "status": "DELIVRD", "time": "2026-11-25T10:00:10Z"})
    before = client.get("/campaigns/spring").json()["data"]
    answer = client.post(
        "/messages",
        json={"id": "done", "to": "999", "campaign": "autumn", "sent_at": "2026-11-20T10:00:00Z", "text": "hi"},
    ).json()
    assert (answer["code"], answer["data"]["status"], answer["data"]["created"]) == (0, "DELIVRD", False)
    data = message(client, "done")
    assert (data["to"], data["campaign"], data["sent_at"], data["text"]) == (
        "380",
        "spring",
        "2026-11-25T10:00:00+00:00",
        "hi",
    )
    assert client.get("/campaigns/autumn").status_code == 404
    assert client.get("/campaigns/spring").json()["data"]["total"] == before["total"]


def test_re_registering_an_open_message_updates_it(client: TestClient) -> None:
    """While a message is open, the platform's registration is what it was sent as."""
    client.post("/messages", json={"id": "open", "to": "380", "campaign": "spring"})
    client.post("/dlr/generic", json={"id": "open", "status": "ACCEPTD"})
    client.post("/messages", json={"id": "open", "to": "381", "campaign": "summer", "text": "hello"})
    data = message(client, "open")
    assert (data["status"], data["to"], data["campaign"], data["text"]) == ("ACCEPTD", "381", "summer", "hello")


def metric(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not found")


def test_delivery_time_runs_from_sending_to_the_operators_time_in_stats_and_metric(
    fresh_stats: TestClient, db: str
) -> None:
    """Registered at 10:00:00, DELIVRD with the operator's time 10:00:10: 10 s, whenever the report arrives,
    in the campaign statistics and in `dlr_delivery_seconds` alike. A message the sweep resolves to DELIVRD
    counts as delivered but adds no delivery time."""
    client = fresh_stats
    count = metric(client, "dlr_delivery_seconds_count")
    total = metric(client, "dlr_delivery_seconds_sum")
    client.post("/messages", json={"id": "d1", "campaign": "timing", "sent_at": "2026-11-25T10:00:00Z"})
    client.post("/dlr/generic", json={"id": "d1", "status": "DELIVRD", "time": "2026-11-25T10:00:10Z"})
    client.post("/messages", json={"id": "d2", "campaign": "timing", "sent_at": "2020-01-01T00:00:00Z", "segments": 2})
    client.post("/dlr/generic", json={"id": "d2", "status": "PDLIVRD"})  # the sweep resolves it to DELIVRD
    observed = (
        metric(client, "dlr_delivery_seconds_count") - count,
        metric(client, "dlr_delivery_seconds_sum") - total,
    )
    # approx: the metric is the process's, other tests add to it first, and (t + 10) - t is not 10 for every t
    assert observed == (1, pytest.approx(10))
    swept = subprocess.run(
        [*command(), "sweep"], env={**os.environ, "DATABASE_URL": db}, capture_output=True, text=True, timeout=120
    )
    assert swept.returncode == 0, swept.stderr
    assert message(client, "d2")["status"] == "DELIVRD"
    stats = client.get("/campaigns/timing").json()["data"]
    assert stats["by_status"]["DELIVRD"] == 2
    assert stats["delivery_seconds"] == {"p50": 10.0, "p90": 10.0, "p99": 10.0}


def test_times_with_any_offset_are_kept_as_the_same_instant(client: TestClient) -> None:
    """ISO-8601 allows offsets PostgreSQL does not (-20:00): such a time is the same instant in UTC, in a
    registration, a report and a listing's filter, never a 500."""
    assert client.post("/messages", json={"id": "far", "sent_at": "2026-01-01T00:00:00-20:00"}).json()["code"] == 0
    assert message(client, "far")["sent_at"] == "2026-01-01T20:00:00+00:00"
    report = {"id": "far", "status": "DELIVRD", "time": "2026-01-01T21:00:00-23:59"}
    assert client.post("/dlr/generic", json=report).json()["data"]["applied"] is True
    listed = client.get("/messages", params={"since": "2026-01-01T00:00:00-20:00"})
    assert (listed.status_code, [m["id"] for m in listed.json()["data"]["items"]]) == (200, ["far"])
