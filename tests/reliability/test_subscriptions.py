"""Subscriptions across real processes: two `dlr-tracker serve` on one database deliver each event (duplicates
rare and counted), and a `kill -9` mid-delivery, or a database crash, loses nothing once a process runs again (at
least once); with deliveries in every serving process and in a dispatching process `serve` starts."""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path
from typing import Any

import httpx2
import psutil
import pytest
from standardwebhooks import Webhook

from service import database
from tests.processes import ServiceProcess
from tests.reliability.postgres_server import StoppablePostgres
from tests.webhook_receiver import Answer, Receiver, receiving

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

FAST = {
    "DLR_SUBSCRIPTION_ALLOW_PRIVATE": "true",
    "DLR_DELIVERY_SCHEDULE": "0,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2",
    "DLR_DELIVERY_TIMEOUT": "2",
}


def feed_ids(url: str) -> set[str]:
    items = httpx2.get(f"{url}/events", params={"limit": 1000}).json()["data"]["items"]
    return {e["id"] for e in items}


def delivered_ids(receiver: Receiver, secret: str) -> list[str]:
    ids = []
    for got in list(receiver.received):
        Webhook(secret).verify(got.body, got.headers)
        ids.append(got.headers["webhook-id"])
    return ids


def wait_for_all(receiver: Receiver, secret: str, wanted: set[str], timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = delivered_ids(receiver, secret)
        if wanted <= set(ids):
            return ids
        time.sleep(0.1)
    missing = wanted - set(delivered_ids(receiver, secret))
    raise AssertionError(f"{len(missing)} events never delivered")


# on: each serving process delivers; process: `serve` starts a dispatching process of its own
MODES = pytest.mark.parametrize("mode", ["on", "process"])


@MODES
def test_two_processes_deliver_each_event(tmp_path: Path, fresh_database: Any, mode: str) -> None:
    """Reports posted to both processes alternately: every event reaches the receiver, verified; the same event
    twice only when a lease ran out, which a quick receiver never lets happen here."""
    dsn = fresh_database()
    database.migrate(dsn)
    env = {"DATABASE_URL": dsn, "DLR_SUBSCRIPTION_DISPATCH": mode, **FAST}
    services = [ServiceProcess(tmp_path, env=env, name=f"s{i}") for i in range(2)]
    try:
        for service in services:
            service.wait_ready()
        with receiving() as receiver:
            sub = httpx2.post(f"{services[0].url}/subscriptions", json={"url": receiver.url}).json()["data"]
            for i in range(60):
                target = services[i % 2].url
                answer = httpx2.post(f"{target}/dlr/generic", json={"id": f"two-{i}", "status": "ACCEPTD"})
                assert answer.status_code == 200
            wanted = feed_ids(services[0].url)
            assert len(wanted) == 60
            ids = wait_for_all(receiver, sub["secret"], wanted)
            duplicates = len(ids) - len(set(ids))
            print(f"\nRELIABILITY subscriptions two ({mode}): events=60 deliveries={len(ids)} duplicates={duplicates}")
            assert duplicates <= 3
            if mode == "process":
                # each serve's own dispatching process, at a lower CPU priority than the workers
                for service in services:
                    (child,) = [c for c in psutil.Process(service.proc.pid).children() if "dispatch" in c.cmdline()]
                    assert child.nice() == psutil.Process(service.proc.pid).nice() + 10
    finally:
        for service in services:
            service.stop()


@MODES
def test_kill_9_mid_delivery_loses_nothing(tmp_path: Path, fresh_database: Any, mode: str) -> None:
    """The receiver holds each request a second; the service (and its dispatching process) is killed with
    SIGKILL while deliveries are in flight; a new process on the same database delivers every event once the
    leases run out."""
    dsn = fresh_database()
    database.migrate(dsn)
    env = {"DATABASE_URL": dsn, "DLR_SUBSCRIPTION_DISPATCH": mode, **FAST}
    slow = {"on": True}
    with receiving(lambda n: Answer(200, delay=1.0 if slow["on"] else 0)) as receiver:
        first = ServiceProcess(tmp_path, env=env, name="first")
        first.wait_ready()
        sub = httpx2.post(f"{first.url}/subscriptions", json={"url": receiver.url}).json()["data"]
        for i in range(30):
            httpx2.post(f"{first.url}/dlr/generic", json={"id": f"k-{i}", "status": "DELIVRD"})
        wanted = feed_ids(first.url)
        receiver.wait_for(4)  # attempts are in flight, held by the receiver
        for child in psutil.Process(first.proc.pid).children(recursive=True):
            child.kill()  # the dispatching process dies as abruptly as its parent
        first.stop(signal.SIGKILL)
        slow["on"] = False
        second = ServiceProcess(tmp_path, env=env, name="second")
        try:
            second.wait_ready()
            ids = wait_for_all(receiver, sub["secret"], wanted, timeout=90)
            print(f"\nRELIABILITY subscriptions kill -9: events={len(wanted)} deliveries={len(ids)}")
            assert set(ids) == wanted
        finally:
            second.stop()


def test_a_database_crash_mid_delivery_loses_no_event(tmp_path: Path) -> None:
    """The dispatcher's own commits do not wait for the WAL flush (store.commit_without_flush): PostgreSQL
    stopped at once (as in a crash: what was not flushed is gone) while deliveries are in flight, then started
    again; every event committed before the crash still reaches the receiver, verified (duplicates allowed)."""
    with StoppablePostgres(tmp_path / "pg") as pg:
        database.migrate(pg.dsn)
        env = {"DATABASE_URL": pg.dsn, "DLR_DB_TIMEOUT": "2", **FAST}
        # Each answer held half a second: at the crash, attempts are in flight and others are being recorded.
        with receiving(lambda n: Answer(200, delay=0.5)) as receiver:
            service = ServiceProcess(tmp_path, env=env, name="crash")
            try:
                service.wait_ready()
                sub = httpx2.post(f"{service.url}/subscriptions", json={"url": receiver.url}).json()["data"]
                batch = [{"id": f"c-{i}", "status": "DELIVRD"} for i in range(100)]  # one request, one commit
                assert httpx2.post(f"{service.url}/dlr/generic", json=batch).status_code == 200
                wanted = feed_ids(service.url)
                assert len(wanted) == 100
                receiver.wait_for(40)  # the first attempts answered, being recorded; more in flight
                pg.down("immediate")
                time.sleep(2)
                pg.up()
                ids = wait_for_all(receiver, sub["secret"], wanted, timeout=120)
                duplicates = len(ids) - len(set(ids))
                print(f"\nRELIABILITY subscriptions database crash: events=100 duplicates={duplicates}")
                assert set(ids) == wanted
            finally:
                service.stop()


def test_a_dispatch_process_of_its_own_delivers_and_shows_its_metrics(tmp_path: Path, fresh_database: Any) -> None:
    """`serve` with DLR_SUBSCRIPTION_DISPATCH=off delivers nothing; a `dlr-tracker dispatch` beside it on the same
    database delivers every event, and answers /metrics on its own port with what it did."""
    dsn = fresh_database()
    database.migrate(dsn)
    serving = ServiceProcess(tmp_path, env={"DATABASE_URL": dsn, "DLR_SUBSCRIPTION_DISPATCH": "off", **FAST})
    dispatching = None
    try:
        serving.wait_ready()
        with receiving() as receiver:
            sub = httpx2.post(f"{serving.url}/subscriptions", json={"url": receiver.url}).json()["data"]
            for i in range(10):
                httpx2.post(f"{serving.url}/dlr/generic", json={"id": f"own-{i}", "status": "DELIVRD"})
            time.sleep(1)
            assert receiver.received == []
            dispatching = ServiceProcess(tmp_path, env={"DATABASE_URL": dsn, **FAST}, name="dispatch", run="dispatch")
            dispatching.wait_ready(path="/metrics")
            wanted = feed_ids(serving.url)
            assert set(wait_for_all(receiver, sub["secret"], wanted)) == wanted
            shown = httpx2.get(f"{dispatching.url}/metrics").text
            assert 'dlr_webhook_attempts_total{outcome="2xx"} 10.0' in shown
            dispatching.stop()
            assert "delivering subscriptions' events" in dispatching.output()
    finally:
        if dispatching is not None:
            dispatching.stop()
        serving.stop()


def test_a_dispatching_process_that_dies_is_started_again(tmp_path: Path, fresh_database: Any) -> None:
    """`serve`'s dispatching process killed with SIGKILL (a crash, the OOM killer): `serve` says so and starts
    another, which delivers what came meanwhile. Before, deliveries stopped until `serve` itself restarted."""
    dsn = fresh_database()
    database.migrate(dsn)
    service = ServiceProcess(tmp_path, env={"DATABASE_URL": dsn, "DLR_SUBSCRIPTION_DISPATCH": "process", **FAST})
    try:
        service.wait_ready()

        def dispatching() -> list[psutil.Process]:
            alive = []
            for child in psutil.Process(service.proc.pid).children():
                with contextlib.suppress(psutil.Error):  # gone, or a zombie nobody reaped
                    if child.status() != psutil.STATUS_ZOMBIE and "dispatch" in child.cmdline():
                        alive.append(child)
            return alive

        (first,) = dispatching()
        with receiving() as receiver:
            sub = httpx2.post(f"{service.url}/subscriptions", json={"url": receiver.url}).json()["data"]
            first.kill()
            deadline = time.monotonic() + 15
            while [c.pid for c in dispatching()] in ([], [first.pid]):
                assert time.monotonic() < deadline, "no dispatching process was started again"
                time.sleep(0.1)
            for i in range(20):
                httpx2.post(f"{service.url}/dlr/generic", json={"id": f"again-{i}", "status": "DELIVRD"})
            wanted = feed_ids(service.url)
            assert len(wanted) == 20
            ids = wait_for_all(receiver, sub["secret"], wanted, timeout=30)
            assert set(ids) == wanted
        (second,) = dispatching()
        assert second.pid != first.pid
        assert second.nice() == psutil.Process(service.proc.pid).nice() + 10
    finally:
        service.stop()
    assert "the dispatching process ended (exit code -9)" in service.output()
