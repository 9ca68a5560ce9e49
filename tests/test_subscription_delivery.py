"""Deliveries to a real receiver on loopback (DESIGN "Subscriptions"): every matching event POSTed once it
commits, signed so that `standardwebhooks` verifies it, retried on the schedule with the same webhook-id,
Retry-After honoured, 410 disabling, filters, replay, and ingest never waiting on a subscriber."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import asyncpg
import orjson
import pytest
from standardwebhooks import Webhook
from starlette.testclient import TestClient

from service.app import create_app
from service.config import DEFAULT_DELIVERY_SCHEDULE, Settings
from tests.conftest import arrange, fetch
from tests.processes import command, free_port
from tests.webhook_receiver import Answer, Receiver, receiving

# The delivery timeout of the tests whose failed attempts wait minutes (DESIGN's schedule, or 300 s backoffs).
# Their thread-per-request receiver answers a whole backlog at once when it comes back; on a loaded machine
# (CI) attempts that had reached it timed out at `fast`'s 2 s, and a timed-out attempt rightly waits its backoff.
PATIENT_TIMEOUT = 15.0


@pytest.fixture
def fast(settings: Settings) -> Settings:
    """Loopback subscribers allowed; retries a fifth of a second apart; a short timeout; deliveries made in the
    app's own event loop (no `serve` here to start a dispatching process)."""
    return replace(
        settings,
        subscription_dispatch="on",
        subscription_allow_private=True,
        delivery_schedule=(0.0, 0.2, 0.2, 0.2),
        delivery_timeout=2.0,
        sweep_interval=86400,
    )


@pytest.fixture
def app(fast: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(fast)) as client:
        yield client


def subscribe(client: TestClient, receiver: Receiver, **body: Any) -> dict[str, Any]:
    answer = client.post("/subscriptions", json={"url": receiver.url, **body})
    assert answer.status_code == 201, answer.text
    return answer.json()["data"]  # type: ignore[no-any-return]


def verified(secret: str, received: Any) -> dict[str, Any]:
    """The event a request carried, after standardwebhooks verified its signature."""
    return Webhook(secret).verify(received.body, received.headers)  # type: ignore[no-any-return]


def deliveries(client: TestClient, subscription_id: int, **params: Any) -> list[dict[str, Any]]:
    answer = client.get(f"/subscriptions/{subscription_id}/deliveries", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]["items"]  # type: ignore[no-any-return]


def wait_until(check: Any, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_each_event_is_posted_signed_and_verifiable(app: TestClient) -> None:
    """A report's change reaches the receiver as `{type, timestamp, data}` with webhook-id = the feed event's
    id, and standardwebhooks verifies the signature with the secret shown at creation."""
    with receiving() as receiver:
        sub = subscribe(app, receiver)
        app.post("/dlr/generic", json={"id": "m1", "status": "DELIVRD", "campaign": "c"})
        (got,) = receiver.wait_for(1)
        event = verified(sub["secret"], got)
        feed = app.get("/events").json()["data"]["items"]
        assert got.headers["webhook-id"] == feed[0]["id"]
        assert event == {k: v for k, v in orjson.loads(orjson.dumps(feed[0])).items() if k != "id"}
        assert (event["type"], event["data"]["id"], event["data"]["status"]) == (
            "message.status_changed",
            "m1",
            "DELIVRD",
        )
        assert got.headers["content-type"] == "application/json"
        delivered = wait_until(lambda: deliveries(app, sub["id"], state="delivered"))
        assert delivered[0]["event_id"] == feed[0]["id"]
        assert [a["status"] for a in delivered[0]["attempts"]] == [200]


def test_a_subscription_gets_only_events_committed_after_it(app: TestClient) -> None:
    with receiving() as receiver:
        app.post("/dlr/generic", json={"id": "before", "status": "ACCEPTD"})
        sub = subscribe(app, receiver)
        app.post("/dlr/generic", json={"id": "after", "status": "ACCEPTD"})
        got = receiver.wait_for(1)
        time.sleep(0.5)
        assert [verified(sub["secret"], r)["data"]["id"] for r in receiver.received] == ["after"]
        assert len(got) == 1


def test_500_three_times_then_200_is_delivered_with_the_same_webhook_id(app: TestClient) -> None:
    with receiving(lambda n: Answer(500 if n < 3 else 200)) as receiver:
        sub = subscribe(app, receiver)
        app.post("/dlr/generic", json={"id": "r1", "status": "DELIVRD"})
        got = receiver.wait_for(4)
        assert len({r.headers["webhook-id"] for r in got}) == 1
        assert all(verified(sub["secret"], r)["data"]["id"] == "r1" for r in got)
        (delivery,) = wait_until(lambda: deliveries(app, sub["id"], state="delivered"))
        assert [a["status"] for a in delivery["attempts"]] == [500, 500, 500, 200]
        assert app.get(f"/subscriptions/{sub['id']}").json()["data"]["failing_since"] is None


def test_after_the_last_attempt_the_delivery_is_failed_kept_and_replayable(app: TestClient) -> None:
    with receiving(lambda n: Answer(500 if n < 4 else 200)) as receiver:
        sub = subscribe(app, receiver)
        app.post("/dlr/generic", json={"id": "f1", "status": "UNDELIV"})
        receiver.wait_for(4)
        (failed,) = wait_until(lambda: deliveries(app, sub["id"], state="failed"))
        assert [a["status"] for a in failed["attempts"]] == [500] * 4
        assert app.get(f"/subscriptions/{sub['id']}").json()["data"]["failing_since"] is not None
        time.sleep(0.5)
        assert len(receiver.received) == 4  # no fifth attempt by itself
        answer = app.post(f"/subscriptions/{sub['id']}/replay", json={"event_ids": [failed["event_id"], "1-1"]})
        assert answer.json()["data"] == {"queued": 1, "not_found": ["1-1"]}
        got = receiver.wait_for(5)
        assert got[4].headers["webhook-id"] == failed["event_id"]
        (done,) = wait_until(lambda: deliveries(app, sub["id"], state="delivered"))
        assert [a["status"] for a in done["attempts"]] == [500] * 4 + [200]


def test_replay_since_queues_delivered_events_again(app: TestClient) -> None:
    with receiving() as receiver:
        sub = subscribe(app, receiver)
        app.post("/dlr/generic", json=[{"id": "a", "status": "ACCEPTD"}, {"id": "b", "status": "ACCEPTD"}])
        receiver.wait_for(2)
        wait_until(lambda: len(deliveries(app, sub["id"], state="delivered")) == 2)
        answer = app.post(f"/subscriptions/{sub['id']}/replay", json={"since": "2020-01-01T00:00:00Z"})
        assert answer.json()["data"] == {"queued": 2, "not_found": []}
        got = receiver.wait_for(4)
        assert sorted(r.headers["webhook-id"] for r in got[2:]) == sorted(r.headers["webhook-id"] for r in got[:2])
        # A delivered delivery keeps no body: the replay sends the event's, made again from the feed, byte for byte.
        first = {r.headers["webhook-id"]: r.body for r in got[:2]}
        assert {r.headers["webhook-id"]: r.body for r in got[2:]} == first
        for body, code in [
            ({}, 11),
            ({"since": "x"}, 1),
            ({"event_ids": []}, 1),
            ({"since": "2020-01-01", "event_ids": ["a"]}, 1),
        ]:
            refused = app.post(f"/subscriptions/{sub['id']}/replay", json=body)
            assert (refused.status_code, refused.json()["code"]) == (400, code), body


def test_a_delivery_keeps_its_body_only_while_it_may_be_sent_again(app: TestClient, db: str) -> None:
    """Delivered: no body kept. Failed after its last attempt: the body kept, and a replay sends the same bytes."""
    with receiving(lambda n: Answer(500) if n < 4 else Answer(200)) as receiver:
        sub = subscribe(app, receiver, filter={"campaigns": ["kept"]})
        app.post("/dlr/generic", json={"id": "kept-1", "status": "DELIVRD", "campaign": "kept"})
        failed = wait_until(lambda: deliveries(app, sub["id"], state="failed"))
        kept = "SELECT body IS NOT NULL AS kept FROM deliveries WHERE event_id = $1"
        assert [r["kept"] for r in fetch(db, kept, failed[0]["event_id"])] == [True]
        assert app.post(f"/subscriptions/{sub['id']}/replay", json={"event_ids": [failed[0]["event_id"]]}).json()[
            "data"
        ] == {"queued": 1, "not_found": []}
        got = receiver.wait_for(5)
        assert len({r.body for r in got}) == 1  # four failed attempts and the replay: the same bytes
        wait_until(lambda: deliveries(app, sub["id"], state="delivered"))
        assert [r["kept"] for r in fetch(db, kept, failed[0]["event_id"])] == [False]


def test_replaying_a_delivered_event_the_feed_no_longer_keeps_fails_it_saying_why(app: TestClient, db: str) -> None:
    """A delivered delivery keeps no body: once the feed has pruned its event, a replay cannot send it. It is
    failed, its last attempt saying why, and the subscription is not marked failing (its subscriber did not fail)."""
    with receiving() as receiver:
        sub = subscribe(app, receiver)
        app.post("/dlr/generic", json={"id": "pruned-1", "status": "DELIVRD"})
        receiver.wait_for(1)
        wait_until(lambda: deliveries(app, sub["id"], state="delivered"))
        arrange(db, "UPDATE events SET at = now() - interval '8 days'")
        env = {**os.environ, "DATABASE_URL": db, "DLR_EVENT_RETENTION": "7d"}
        swept = subprocess.run([*command(), "sweep"], env=env, capture_output=True, text=True, timeout=120)
        assert swept.returncode == 0, swept.stderr
        assert fetch(db, "SELECT count(*) AS n FROM events")[0]["n"] == 0
        replayed = app.post(f"/subscriptions/{sub['id']}/replay", json={"since": "2020-01-01T00:00:00Z"})
        assert replayed.json()["data"] == {"queued": 1, "not_found": []}
        failed = wait_until(lambda: deliveries(app, sub["id"], state="failed"))
        assert "no longer in the feed" in failed[0]["attempts"][-1]["error"]
        assert app.get(f"/subscriptions/{sub['id']}").json()["data"]["failing_since"] is None
        time.sleep(0.3)
        assert len(receiver.received) == 1  # nothing was sent


def test_410_disables_the_subscription(app: TestClient) -> None:
    with receiving(lambda n: Answer(410)) as receiver:
        sub = subscribe(app, receiver)
        app.post("/dlr/generic", json=[{"id": "g1", "status": "ACCEPTD"}, {"id": "g2", "status": "ACCEPTD"}])
        receiver.wait_for(1)
        shown = wait_until(
            lambda: (s := app.get(f"/subscriptions/{sub['id']}").json()["data"])["enabled"] is False and s
        )
        assert "410" in shown["disabled_reason"]
        time.sleep(0.6)
        # The other delivery stays queued for when it is enabled again; nothing more is sent meanwhile.
        assert len(receiver.received) <= 2
        assert fetch(app_db(app), "SELECT count(*) AS n FROM deliveries WHERE state = 'failed'")[0]["n"] >= 1


def app_db(client: TestClient) -> str:
    return str(client.app.state.services.settings.database_url.reveal())  # type: ignore[attr-defined]


def test_retry_after_is_honoured(app: TestClient) -> None:
    """A 429 with Retry-After: 2 puts the next attempt two seconds later, past the 0.2 s schedule."""
    with receiving(lambda n: Answer(429, {"Retry-After": "2"}) if n == 0 else Answer(200)) as receiver:
        subscribe(app, receiver)
        app.post("/dlr/generic", json={"id": "t1", "status": "ACCEPTD"})
        first, second = receiver.wait_for(2, timeout=20)
        assert second.at - first.at >= 1.9


def test_filters_by_final_statuses_and_campaigns(app: TestClient) -> None:
    with receiving() as finals, receiving() as delivered, receiving() as spring:
        s_final = subscribe(app, finals, filter={"final": True})
        s_deliv = subscribe(app, delivered, filter={"statuses": ["DELIVRD"]})
        s_spring = subscribe(app, spring, filter={"campaigns": ["spring"]})
        app.post("/messages", json=[{"id": "x", "campaign": "spring"}, {"id": "y", "campaign": "autumn"}])
        app.post(
            "/dlr/generic",
            json=[{"id": "x", "status": "ACCEPTD"}, {"id": "x", "status": "DELIVRD"}, {"id": "y", "status": "UNDELIV"}],
        )
        finals.wait_for(2)
        delivered.wait_for(1)
        spring.wait_for(3)
        time.sleep(0.5)

        def seen(r: Receiver, secret: str) -> list[tuple[str, str]]:
            events = sorted((verified(secret, x) for x in r.received), key=lambda e: e["data"]["version"])
            return sorted((e["data"]["id"], e["data"]["status"]) for e in events)

        assert seen(finals, s_final["secret"]) == [("x", "DELIVRD"), ("y", "UNDELIV")]
        assert seen(delivered, s_deliv["secret"]) == [("x", "DELIVRD")]
        assert seen(spring, s_spring["secret"]) == [("x", "ACCEPTD"), ("x", "DELIVRD"), ("x", "NEW")]


def test_concurrency_is_bounded_per_subscriber_and_nothing_stalls(fast: Settings) -> None:
    """A slow subscriber gets at most `delivery_concurrency_per_subscription` requests at once, while reports keep
    arriving (fan-outs claiming first attempts as earlier attempts end, the claimer taking the rest ahead):
    every event arrives, none twice."""
    bounded = replace(fast, delivery_concurrency=8, delivery_concurrency_per_subscription=3)
    with receiving(lambda n: Answer(delay=0.05)) as receiver, TestClient(create_app(bounded)) as client:
        sub = subscribe(client, receiver)
        for batch in range(20):
            ids = [f"c{batch}-{i}" for i in range(10)]
            assert client.post("/dlr/generic", json=[{"id": i, "status": "DELIVRD"} for i in ids]).status_code == 200
            time.sleep(0.02)
        got = receiver.wait_for(200, timeout=60)
        time.sleep(0.5)  # a duplicate would arrive by now
        delivered = [verified(sub["secret"], r)["data"]["id"] for r in receiver.received]
        assert sorted(delivered) == sorted(f"c{b}-{i}" for b in range(20) for i in range(10))
        assert len(got) == len(receiver.received) == 200
        assert 1 < receiver.most_at_once <= 3


def backlog_shown(client: TestClient, subscription_id: int) -> float:
    """dlr_subscription_backlog of one subscription, as /metrics shows it (0 when it shows none)."""
    prefix = f'dlr_subscription_backlog{{subscription="{subscription_id}"}} '
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return 0.0


def test_a_subscriber_slower_than_the_feed_leaves_its_backlog_in_the_feed(fast: Settings, db: str) -> None:
    """Only what the dispatcher has room to attempt is queued (twice the subscription's concurrency): the rest
    waits in the feed, unread, and the backlog gauge counts it all the same. As attempts end the fan-out reads
    on: every event arrives, once."""
    bounded = replace(fast, delivery_concurrency=8, delivery_concurrency_per_subscription=2)
    with receiving(lambda n: Answer(delay=0.25)) as receiver, TestClient(create_app(bounded)) as client:
        sub = subscribe(client, receiver)
        ids = [f"slow-{i}" for i in range(80)]
        assert client.post("/dlr/generic", json=[{"id": i, "status": "DELIVRD"} for i in ids]).status_code == 200
        receiver.wait_for(4)
        rows = []
        for _ in range(10):  # while the backlog drains (2 at a time, 0.25 s each: 10 s)
            rows.append(fetch(db, "SELECT count(*) AS n FROM deliveries WHERE state = 'pending'")[0]["n"])
            time.sleep(0.1)
        # None is queued ahead: a first attempt's delivery is written when it ends (as delivered, here). At most a
        # few pending while their record is on its way (the fan-out of earlier sessions queued all 80 at once).
        assert max(rows) <= 8, rows
        assert wait_until(lambda: backlog_shown(client, sub["id"]) >= 20, timeout=10)
        receiver.wait_for(80, timeout=60)
        time.sleep(0.5)  # a duplicate would arrive by now
        delivered = [verified(sub["secret"], r)["data"]["id"] for r in receiver.received]
        assert sorted(delivered) == sorted(ids)
        assert wait_until(lambda: len(deliveries(client, sub["id"], state="delivered", limit=100)) == 80)


def test_a_receiver_down_then_up_loses_nothing(fast: Settings) -> None:
    """Deliveries to a port nobody listens on are retried; once a receiver listens there every event arrives."""
    patient = replace(fast, delivery_schedule=(0.0, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3))
    port = free_port()
    with TestClient(create_app(patient)) as client:
        sub = client.post("/subscriptions", json={"url": f"http://127.0.0.1:{port}/hook"}).json()["data"]
        client.post("/dlr/generic", json=[{"id": f"d{i}", "status": "ACCEPTD"} for i in range(5)])
        wait_until(lambda: any(d["attempts"] for d in deliveries(client, sub["id"])))  # refused: nobody listens
        time.sleep(0.5)
        with receiving(port=port) as receiver:
            got = receiver.wait_for(5, timeout=20)
            assert sorted(verified(sub["secret"], r)["data"]["id"] for r in got) == [f"d{i}" for i in range(5)]
            assert wait_until(lambda: len(deliveries(client, sub["id"], state="delivered")) == 5)
        errors = [a for d in deliveries(client, sub["id"]) for a in d["attempts"] if a["status"] is None]
        assert errors
        assert all(a["error"] for a in errors)


def test_a_receiver_down_for_a_minute_loses_nothing(fast: Settings) -> None:
    """DESIGN's own schedule (now, 5 s, 5 min, ...) and a receiver down for a minute while reports go on
    coming: every event arrives once it is back, the ones from the outage too (not 5 minutes later)."""
    port = free_port()
    patient = replace(fast, delivery_schedule=DEFAULT_DELIVERY_SCHEDULE, delivery_timeout=PATIENT_TIMEOUT)
    with TestClient(create_app(patient)) as client:
        sub = client.post("/subscriptions", json={"url": f"http://127.0.0.1:{port}/hook"}).json()["data"]
        sent = []
        down_until = time.monotonic() + 60
        while time.monotonic() < down_until:
            sent.append(f"m{len(sent)}")
            assert client.post("/dlr/generic", json={"id": sent[-1], "status": "ACCEPTD"}).status_code == 200
            time.sleep(1)

        def all_queued() -> list[dict[str, Any]]:
            found = deliveries(client, sub["id"], limit=500)
            return found if len(found) == len(sent) else []

        tried = wait_until(all_queued)
        assert all(d["state"] == "pending" for d in tried)
        assert max(len(d["attempts"]) for d in tried) == 2  # now and 5 s on; the third is 5 minutes away
        with receiving(port=port) as receiver:
            sent.append("back")
            client.post("/dlr/generic", json={"id": "back", "status": "ACCEPTD"})
            got = receiver.wait_for(len(sent), timeout=30)
            assert sorted({verified(sub["secret"], r)["data"]["id"] for r in got}) == sorted(sent)
            try:  # on failure, name the deliveries left and their attempts (why they were not delivered)
                wait_until(lambda: len(deliveries(client, sub["id"], state="delivered", limit=500)) == len(sent))
            except AssertionError:
                late = [(d["event_id"], d["attempts"]) for d in deliveries(client, sub["id"], state="pending")]
                raise AssertionError(f"not delivered: {late}") from None


def test_the_address_guard_refuses_at_connection_time_too(fast: Settings) -> None:
    """A URL registered while private addresses were allowed (or a name re-pointed at one later): without
    the allowance the connection itself is refused, nothing reaches the receiver, and the attempt says why."""
    with receiving() as receiver:
        with TestClient(create_app(replace(fast, subscription_dispatch="off"))) as client:
            sub = subscribe(client, receiver)
        with TestClient(create_app(replace(fast, subscription_allow_private=False))) as client:
            client.post("/dlr/generic", json={"id": "inside", "status": "ACCEPTD"})
            (delivery,) = wait_until(lambda: [d for d in deliveries(client, sub["id"]) if d["attempts"]])
            assert delivery["attempts"][0]["status"] is None
            assert "127.0.0.1 is not a global address" in delivery["attempts"][0]["error"]
            time.sleep(0.5)
        assert receiver.received == []


def test_once_a_receiver_answers_again_its_backed_off_retries_are_due_at_once(fast: Settings) -> None:
    """A receiver down long enough that its deliveries wait a long backoff (here 300 s after two refusals):
    when it answers again (a new event gets through), the waiting ones are tried at once, not in 300 s."""
    patient = replace(fast, delivery_schedule=(0.0, 0.5, 300.0, 300.0), delivery_timeout=PATIENT_TIMEOUT)
    port = free_port()
    with TestClient(create_app(patient)) as client:
        sub = client.post("/subscriptions", json={"url": f"http://127.0.0.1:{port}/hook"}).json()["data"]
        client.post("/dlr/generic", json=[{"id": f"o{i}", "status": "ACCEPTD"} for i in range(5)])

        # refused twice each: the third attempt is 300 s away
        def refused_twice() -> bool:
            queued = deliveries(client, sub["id"])
            return len(queued) == 5 and all(len(d["attempts"]) >= 2 for d in queued)

        assert wait_until(refused_twice, timeout=20)
        with receiving(port=port) as receiver:
            client.post("/dlr/generic", json={"id": "back", "status": "ACCEPTD"})
            got = receiver.wait_for(6, timeout=15)
            ids = sorted(verified(sub["secret"], r)["data"]["id"] for r in got)
            assert ids == ["back", *[f"o{i}" for i in range(5)]]


def test_after_a_long_outage_every_backed_off_retry_is_due_at_once(fast: Settings) -> None:
    """As above with more waiting deliveries than one step of `retry_now` makes due (2,100: three steps): all
    of them arrive at once, not in 300 s. (One statement over a long outage's backlog used to outlast the
    statement timeout, and the retries kept their schedule.)"""
    patient = replace(fast, delivery_schedule=(0.0, 0.5, 300.0, 300.0), delivery_timeout=PATIENT_TIMEOUT)
    port = free_port()
    with TestClient(create_app(patient)) as client:
        sub = client.post("/subscriptions", json={"url": f"http://127.0.0.1:{port}/hook"}).json()["data"]
        for start in range(0, 2100, 700):
            reports = [{"id": f"l{i}", "status": "ACCEPTD"} for i in range(start, start + 700)]
            assert client.post("/dlr/generic", json=reports).status_code == 200

        def refused_twice() -> bool:
            waiting = deliveries(client, sub["id"], state="pending", limit=1000)
            return len(waiting) == 1000 and all(len(d["attempts"]) >= 2 for d in waiting)

        assert wait_until(refused_twice, timeout=60)
        with receiving(port=port) as receiver:
            client.post("/dlr/generic", json={"id": "back", "status": "ACCEPTD"})
            got = receiver.wait_for(2101, timeout=60)
            assert {verified(sub["secret"], r)["data"]["id"] for r in got} == {"back", *(f"l{i}" for i in range(2100))}


def test_a_hanging_receiver_does_not_slow_ingest(app: TestClient) -> None:
    """A subscriber that never answers within the timeout: every report is still acknowledged at once."""
    with receiving(lambda n: Answer(200, delay=3)) as receiver:
        subscribe(app, receiver)
        took = []
        for i in range(40):
            began = time.monotonic()
            answer = app.post("/dlr/generic", json={"id": f"h{i}", "status": "ACCEPTD"})
            took.append(time.monotonic() - began)
            assert answer.status_code == 200
        receiver.wait_for(8)  # attempts are being made (and hang) meanwhile
        assert max(took) < 0.5, max(took)
        assert sorted(took)[len(took) // 2] < 0.1


def test_rotation_signs_with_both_secrets(app: TestClient) -> None:
    with receiving() as receiver:
        sub = subscribe(app, receiver)
        new = app.post(f"/subscriptions/{sub['id']}/rotate-secret").json()["data"]["secret"]
        app.post("/dlr/generic", json={"id": "rot", "status": "ACCEPTD"})
        (got,) = receiver.wait_for(1)
        assert len(got.headers["webhook-signature"].split(" ")) == 2
        assert verified(new, got)["data"]["id"] == "rot"
        assert verified(sub["secret"], got)["data"]["id"] == "rot"


def test_a_disabled_subscription_resumes_where_it_stopped(app: TestClient) -> None:
    with receiving() as receiver:
        sub = subscribe(app, receiver)
        app.patch(f"/subscriptions/{sub['id']}", json={"enabled": False})
        app.post("/dlr/generic", json={"id": "while-off", "status": "ACCEPTD"})
        time.sleep(0.6)
        assert receiver.received == []
        app.patch(f"/subscriptions/{sub['id']}", json={"enabled": True})
        (got,) = receiver.wait_for(1)
        assert verified(sub["secret"], got)["data"]["id"] == "while-off"


def test_a_sweep_pass_prunes_finished_deliveries_past_the_feeds_retention_in_small_steps(
    app: TestClient, db: str
) -> None:
    """Delivered deliveries older than DLR_EVENT_RETENTION go with a sweep pass, in steps of 2 that walk on from
    the last time deleted (five of one time: a step ends among them); the younger ones stay."""
    with receiving() as receiver:
        sub = subscribe(app, receiver)
        for i in range(7):
            app.post("/dlr/generic", json={"id": f"d{i}", "status": "DELIVRD"})
        delivered = wait_until(lambda: len(found := deliveries(app, sub["id"], state="delivered")) == 7 and found)
    ids = sorted(d["event_id"] for d in delivered)
    old, young = ids[:5], ids[5:]

    async def age() -> None:  # the clock cannot move back 8 days: the rows are aged instead
        conn = await asyncpg.connect(db)
        try:
            # One time for all five, as the attempts one recorder transaction records share it.
            await conn.execute(
                "UPDATE deliveries SET updated_at = now() - interval '8 days' WHERE event_id = ANY($1::text[])", old
            )
        finally:
            await conn.close()

    asyncio.run(age())
    env = {**os.environ, "DATABASE_URL": db, "DLR_EVENT_RETENTION": "7d", "DLR_SWEEP_BATCH": "2"}
    swept = subprocess.run([*command(), "sweep"], env=env, capture_output=True, text=True, timeout=120)
    assert swept.returncode == 0, swept.stderr
    assert sorted(d["event_id"] for d in deliveries(app, sub["id"])) == young


def _delivery_writes(db: str) -> tuple[int, int]:
    """Rows inserted into and updated in `deliveries` since the server started (its table statistics)."""
    row = fetch(db, "SELECT n_tup_ins, n_tup_upd FROM pg_stat_user_tables WHERE relname = 'deliveries'")[0]
    return int(row["n_tup_ins"]), int(row["n_tup_upd"])


def test_a_delivery_is_written_once_when_its_first_attempt_ends(fast: Settings, db: str) -> None:
    """The fan-out writes nothing for the events it reads: each delivery's row is inserted when its first attempt
    ends, and updated only for a retry; never queued first and updated after (two writes each, before migration
    0016)."""
    inserted, updated = _delivery_writes(db)
    with receiving() as receiver, TestClient(create_app(fast)) as client:
        sub = subscribe(client, receiver)
        reports = [{"id": f"once-{i}", "status": "DELIVRD"} for i in range(50)]
        assert client.post("/dlr/generic", json=reports).status_code == 200
        receiver.wait_for(50)
        wait_until(lambda: len(deliveries(client, sub["id"], state="delivered", limit=100)) == 50)
        # Nearly always one each; a first attempt that timed out on a loaded machine was retried (an update).
        retries = sum(len(d["attempts"]) - 1 for d in deliveries(client, sub["id"], limit=100))
    # The service's connections are closed: each reported its statistics as it ended.
    wait_until(lambda: _delivery_writes(db)[0] - inserted >= 50)
    time.sleep(1)  # any update reported by a connection that ended later
    # A retry is two updates: its claim, its record.
    assert _delivery_writes(db) == (inserted + 50, updated + 2 * retries)


def test_a_stopped_dispatcher_hands_its_fan_out_lease_back(fast: Settings) -> None:
    """A dispatcher that stops hands its subscriptions' fan-out leases back: the next one reads on at once, not
    once the lease has passed (here 65 s: the delivery timeout and 5 s). Nothing is sent twice."""
    patient = replace(fast, delivery_timeout=60.0)
    with receiving() as receiver:
        with TestClient(create_app(patient)) as client:
            sub = subscribe(client, receiver)
            client.post("/dlr/generic", json={"id": "before", "status": "DELIVRD"})
            receiver.wait_for(1)
            wait_until(lambda: deliveries(client, sub["id"], state="delivered"))
        with TestClient(create_app(patient)) as client:
            client.post("/dlr/generic", json={"id": "after", "status": "DELIVRD"})
            got = receiver.wait_for(2, timeout=10)
            time.sleep(0.5)
        ids = [verified(sub["secret"], r)["data"]["id"] for r in receiver.received]
        assert ids == ["before", "after"], got


def test_a_schedule_whose_first_attempt_waits_queues_the_deliveries_and_sends_them_when_due(fast: Settings) -> None:
    """`DLR_DELIVERY_SCHEDULE` starting at 2 s: the fan-out queues each matching event as a pending delivery (listed
    at once, no attempt yet), and it is sent once, two seconds or so after its commit."""
    waiting = replace(fast, delivery_schedule=(2.0, 0.2, 0.2))
    with receiving() as receiver, TestClient(create_app(waiting)) as client:
        sub = subscribe(client, receiver)
        sent_at = time.monotonic()
        reports = [{"id": f"later-{i}", "status": "DELIVRD"} for i in range(5)]
        assert client.post("/dlr/generic", json=reports).status_code == 200
        assert wait_until(lambda: len(deliveries(client, sub["id"], state="pending")) == 5)
        assert receiver.received == []
        got = receiver.wait_for(5)
        assert time.monotonic() - sent_at >= 1.9
        wait_until(lambda: len(deliveries(client, sub["id"], state="delivered")) == 5)
        time.sleep(0.5)
        ids = sorted(verified(sub["secret"], r)["data"]["id"] for r in receiver.received)
        assert ids == sorted(r["id"] for r in reports), got


def test_a_subscription_whose_unread_events_were_pruned_reads_on_from_the_oldest_kept(
    fast: Settings, db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Its cursor is older than the feed keeps (it was stopped past `DLR_EVENT_RETENTION`): what came between is
    gone, said once in the log, and its cursor moves to the oldest event kept even before a new one comes; the next
    event is delivered."""
    with receiving() as receiver:
        with TestClient(create_app(replace(fast, subscription_dispatch="off"))) as client:
            sub = subscribe(client, receiver)
            client.post("/dlr/generic", json=[{"id": f"gone-{i}", "status": "DELIVRD"} for i in range(3)])
        # What retention's pruning leaves: the events gone, the horizon at the last of them.
        arrange(
            db,
            """
            WITH gone AS (DELETE FROM events RETURNING tx, position)
            UPDATE event_horizon SET (tx, position) = (SELECT tx, position FROM gone ORDER BY tx DESC, position DESC
                                                       LIMIT 1)
            """,
        )
        horizon = fetch(db, "SELECT tx::text AS tx, position FROM event_horizon")[0]
        with caplog.at_level("WARNING", logger="dlr_tracker.subscriptions"), TestClient(create_app(fast)) as client:

            def moved() -> bool:
                row = fetch(db, "SELECT cursor_tx::text AS tx, cursor_position AS position FROM subscriptions")[0]
                return (int(row["tx"]), row["position"]) >= (int(horizon["tx"]), horizon["position"])

            assert wait_until(moved, timeout=10)
            client.post("/dlr/generic", json={"id": "kept", "status": "DELIVRD"})
            got = receiver.wait_for(1)
            time.sleep(0.5)
        assert [verified(sub["secret"], r)["data"]["id"] for r in receiver.received] == ["kept"], got
        assert len([r for r in caplog.records if "pruned unread" in r.getMessage()]) == 1
