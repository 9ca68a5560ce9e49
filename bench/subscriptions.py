"""Subscriptions benchmark: what one subscription costs ingest, and whether its deliveries keep up.

    python -m bench.subscriptions [--seconds 10] [--connections 64] [--rate 1000] [--outage 300]
                                  [--dispatch process|on] [--rounds 1] [--phases floor,flat,steady,outage]

One service (one worker; deliveries made by the dispatching process `serve` starts, or with `--dispatch on`
in the serving process itself) and one subscriber on loopback (bench/webhook_sink.py under uvicorn,
answering 204 at once; it stands in for another host: at nice 19, and at 0 after the outage, so that it
neither takes CPU from ingest nor is starved by it), in one run:
0. (floor) the physical floor of a delivery on this machine, in the same run: a bare aiohttp client (no
   database, no claims, no records), one session kept alive, POSTing a real event's body to the same
   subscriber flat out with the dispatcher's bound per subscription in flight, unsigned and signed: what no
   dispatcher on this stack delivers faster, beside flat-out ingest without a subscription.
1. ingest flat out with no subscription, then with one: req/s of each and the ratio (goal >= 0.8), and
   PostgreSQL's WAL bytes and CPU per report in each; --rounds pairs, each with a new subscription (deleted
   after its deliveries arrived), medians;
2. the deliveries of that run: per second, and how long after wrk stopped the last one arrived (the dispatcher
   keeps up when that is near zero);
3. a steady load of about --rate reports/s (a new subscription): the time from each event (its report's
   receipt) to its delivery, p50 / p99 (goal p99 < 1 s);
4. a new subscription, its subscriber down for --outage seconds under the steady load, then up, the load going
   on: how long until every event committed before it came back has been delivered (goal < 2 minutes for a
   5-minute outage).
Each report here makes one event (a new message delivered at once), so deliveries = reports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
import httpx2
import orjson
import psutil

from bench.harness import (
    BackgroundLoad,
    ServerCost,
    Service,
    database_server,
    free_port,
    fresh_database,
    run_wrk,
    table,
)
from service.config import DEFAULT_DELIVERY_CONCURRENCY_PER_SUBSCRIPTION
from service.subscriptions import signing

HERE = Path(__file__).resolve().parent


class Sink:
    """bench/webhook_sink.py in its own process, on a port that survives a restart (the outage)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.niceness = 19
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [sys.executable, "-m", "uvicorn", "bench.webhook_sink:app", "--port", str(self.port)]
        argv += ["--log-level", "warning", "--no-access-log"]
        # The subscriber stands in for another host, and here it shares the 2 cores with the service measured:
        # at nice 19 (flat out, steady load) it takes only the CPU the service, PostgreSQL and wrk leave; after
        # the outage it runs at 0, or it would be starved by the load and set the drain's pace itself.
        niceness = self.niceness
        self.proc = subprocess.Popen(argv, cwd=HERE.parent, preexec_fn=lambda: os.nice(niceness))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx2.TransportError):
                if httpx2.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise SystemExit("the webhook sink did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)

    def stats(self, since: float | None = None, before: float | None = None) -> dict[str, float]:
        params = {} if since is None or before is None else {"since": since, "before": before}
        return dict(httpx2.get(self.url + "/stats", params=params, timeout=10).json())

    def reset(self) -> None:
        httpx2.post(self.url + "/reset", timeout=10)


def events_since(dsn: str, since: float) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM events WHERE at >= to_timestamp($1)", since))
        finally:
            await conn.close()

    return asyncio.run(count())


def events_between(dsn: str, since: float, before: float) -> int:
    """Events committed with their time from `since` to `before` (epoch seconds). Counted once, not polled: the
    feed has no index by time, and a scan of it every half second is load on the database being measured."""

    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            query = "SELECT count(*) FROM events WHERE at >= to_timestamp($1) AND at < to_timestamp($2)"
            return int(await conn.fetchval(query, since, before))
        finally:
            await conn.close()

    return asyncio.run(count())


def drained(sink: Sink, expected: int, timeout: float) -> float | None:
    """Seconds until the sink has `expected` distinct deliveries, or None past `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if sink.stats()["unique"] >= expected:
            return time.monotonic() - started
        time.sleep(0.2)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rate", type=float, default=1000, help="the steady load, reports/s in all")
    parser.add_argument("--outage", type=float, default=300, help="seconds the subscriber is down")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the flat-out pair (without, with)")
    parser.add_argument(
        "--phases", default="floor,flat,steady,outage", help="which of floor, flat, steady, outage to run"
    )
    parser.add_argument(
        "--dispatch", choices=("process", "on"), default="process", help="DLR_SUBSCRIPTION_DISPATCH of the service"
    )
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    if not phases <= {"floor", "flat", "steady", "outage"}:
        parser.error("--phases: a comma-separated choice of floor, flat, steady, outage")
    # Stopped early (kill, timeout): still stop the service, the sink and the load on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    script = HERE / "ingest_unique.lua"
    paced_connections = 16
    paced = {"RATE": str(args.rate)}
    rows: list[list[object]] = []
    sink = Sink()
    sink.start()
    with database_server() as server:
        dsn = fresh_database(server)
        service = Service(
            {"DATABASE_URL": dsn, "DLR_SUBSCRIPTION_ALLOW_PRIVATE": "true", "DLR_SUBSCRIPTION_DISPATCH": args.dispatch}
        )
        try:
            run_wrk(service.url, script, args.connections, 2, env={"RUN": "warm"})
            if "floor" in phases:
                floor_phase(service, sink, script, args, rows)
            if "flat" in phases:
                flat = [flat_round(service, dsn, sink, script, args, f"r{i}") for i in range(args.rounds)]
                show(rows, flat_rows(flat, args))
            steady = Paced(service, dsn, sink, script, paced_connections, paced, args)
            if "steady" in phases:
                steady_phase(steady, rows)
            if "outage" in phases:
                outage_phase(steady, rows)
        finally:
            service.stop()
            sink.stop()
    print()
    print(table(["measure", "value"], rows))
    print(
        f"\n{args.connections} connections flat out ({args.rounds} rounds: medians); the steady load"
        f" {paced_connections} connections offering {args.rate:.0f} reports/s on a schedule; one service worker,"
        f" deliveries: DLR_SUBSCRIPTION_DISPATCH={args.dispatch}, one subscriber, 2 cores"
    )


def flat_round(
    service: Service, dsn: str, sink: Sink, script: Path, args: argparse.Namespace, run: str
) -> dict[str, float]:
    """Ingest flat out without a subscription, then with a new one (it starts at the feed's present), its
    deliveries drained, then the subscription deleted: one round's figures."""
    serving_before = cpu_seconds(service, dispatching=False)
    cost = ServerCost(dsn)
    without = run_wrk(service.url, script, args.connections, args.seconds, env={"RUN": f"{run}-without"})
    wal_without, _, server_without = cost.per(without.requests)
    serving_cpu = cpu_seconds(service, dispatching=False) - serving_before
    sink.reset()
    # Reports the last run left in flight may still commit after the subscription is made: they are its too.
    subscribed = time.time()
    subscription = subscribe(service, sink)
    time.sleep(1)
    started = time.time()
    dispatch_before = cpu_seconds(service, dispatching=True)
    cost = ServerCost(dsn)
    with_one = run_wrk(service.url, script, args.connections, args.seconds, env={"RUN": f"{run}-with"})
    ended = time.time()
    expected = events_since(dsn, subscribed)
    at_stop = sink.stats()["unique"]
    late = drained(sink, expected, 600)
    wal_with, _, server_with = cost.per(with_one.requests)
    delivered = sink.stats()["unique"]
    dispatch_cpu = cpu_seconds(service, dispatching=True) - dispatch_before
    httpx2.delete(f"{service.url}/subscriptions/{subscription}", timeout=10)
    figures = {
        "without": without.requests_per_second,
        "without p99": without.p99_ms,
        "with": with_one.requests_per_second,
        "with p99": with_one.p99_ms,
        "ratio": with_one.requests_per_second / without.requests_per_second,
        "delivered": delivered,
        "expected": expected,
        "per second": expected / (ended - started + (late or 0)),
        "late": float("nan") if late is None else late,
        "after stop": float("nan") if not late else (expected - at_stop) / late,
        "serving cpu": serving_cpu / without.requests * 1e6,
        "dispatch cpu": dispatch_cpu / max(1, expected) * 1e6,
        "wal without": wal_without,
        "wal with": wal_with,
        "server cpu without": server_without,
        "server cpu with": server_with,
    }
    print(f"flat round {run}: " + ", ".join(f"{k} {v:,.2f}" for k, v in figures.items()), flush=True)
    return figures


def flat_rows(rounds: list[dict[str, float]], args: argparse.Namespace) -> list[list[object]]:
    def median(name: str) -> float:
        return statistics.median(r[name] for r in rounds)

    def each(name: str, form: str = "{:,.2f}") -> str:
        return ", ".join(form.format(r[name]) for r in rounds)

    return [
        ["ingest flat out, no subscription: req/s (p99 ms)", f"{median('without'):,.0f} ({median('without p99'):.1f})"],
        ["ingest flat out, one subscription: req/s (p99 ms)", f"{median('with'):,.0f} ({median('with p99'):.1f})"],
        ["**with / without** (goal >= 0.8): median (each round)", f"{median('ratio'):.2f} ({each('ratio')})"],
        [
            "deliveries of each run / events committed",
            ", ".join(f"{r['delivered']:,.0f} / {r['expected']:,.0f}" for r in rounds),
        ],
        ["deliveries per second (events / (run + drain))", f"{median('per second'):,.0f}"],
        ["last delivery after wrk stopped, s", each("late", "{:.1f}")],
        ["deliveries per second once wrk stopped (the backlog left / its drain time)", f"{median('after stop'):,.0f}"],
        ["serving processes' CPU per report, flat out without a subscription (us)", f"{median('serving cpu'):.0f}"],
        [
            "dispatching process's CPU per delivery (us; --dispatch process only)",
            f"{median('dispatch cpu'):,.0f}" if args.dispatch == "process" else "-",
        ],
        [
            "PostgreSQL per report, without / with (run and drain): WAL bytes",
            f"{median('wal without'):,.0f} / {median('wal with'):,.0f}",
        ],
        [
            "PostgreSQL per report, without / with (run and drain): server CPU us",
            f"{median('server cpu without'):,.0f} / {median('server cpu with'):,.0f}",
        ],
    ]


def floor_phase(service: Service, sink: Sink, script: Path, args: argparse.Namespace, rows: list[list[object]]) -> None:
    """A bare client's POSTs per second to the subscriber, beside flat-out ingest without a subscription."""
    shown = httpx2.get(f"{service.url}/events", params={"limit": 1}, timeout=10).json()["data"]  # the oldest
    event = shown["items"][0]
    body = orjson.dumps({"type": event["type"], "timestamp": event["timestamp"], "data": event["data"]})
    in_flight = DEFAULT_DELIVERY_CONCURRENCY_PER_SUBSCRIPTION
    assert sink.proc is not None
    subscriber = psutil.Process(sink.proc.pid)
    plain, _, _ = asyncio.run(bare_posts(sink.url + "/hook", body, in_flight, args.seconds, subscriber, signed=False))
    signed, client_us, sink_us = asyncio.run(
        bare_posts(sink.url + "/hook", body, in_flight, args.seconds, subscriber, signed=True)
    )
    ingest = run_wrk(service.url, script, args.connections, args.seconds, env={"RUN": "floor"})
    beside, beside_posts = ingest_beside_bare_client(service, sink, script, args, body, in_flight)
    show(
        rows,
        [
            [
                f"floor: a bare aiohttp client, {len(body):,}-byte bodies, {in_flight} in flight: POSTs/s",
                f"{plain:,.0f}",
            ],
            ["floor: the same, each POST signed (standardwebhooks)", f"{signed:,.0f}"],
            ["floor: CPU per signed POST, the client / the subscriber", f"{client_us:,.0f} / {sink_us:,.0f} us"],
            ["floor: ingest flat out beside it, no subscription: req/s", f"{ingest.requests_per_second:,.0f}"],
            ["**floor: signed POSTs/s / ingest req/s**", f"{signed / ingest.requests_per_second:.2f}"],
            [
                "floor: ingest flat out beside the signed bare client at nice 10: req/s; its POSTs/s",
                f"{beside:,.0f}; {beside_posts:,.0f}",
            ],
            [
                "**floor: ingest beside the bare client / alone** (the most a subscription can leave ingest here)",
                f"{beside / ingest.requests_per_second:.2f}",
            ],
        ],
    )


def ingest_beside_bare_client(
    service: Service, sink: Sink, script: Path, args: argparse.Namespace, body: bytes, in_flight: int
) -> tuple[float, float]:
    """Ingest flat out while a bare client (bench/bare_client.py, a process at nice 10 as the dispatcher is) POSTs
    signed events to the subscriber flat out: ingest's req/s and the client's POSTs/s. A dispatcher does at least
    that much work per delivery (and its database work besides), on the same cores: ingest beside a subscription
    that keeps up cannot do better."""
    assert sink.proc is not None
    argv = [sys.executable, "-m", "bench.bare_client", sink.url + "/hook", str(in_flight)]
    argv += [str(args.seconds + 1), str(sink.proc.pid)]  # its warm-up second, then wrk's run and a second more
    client = subprocess.Popen(argv, cwd=HERE.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert client.stdin is not None
        client.stdin.write(body)
        client.stdin.close()
        time.sleep(2)  # started, its pool warm
        ingest = run_wrk(service.url, script, args.connections, args.seconds, env={"RUN": "floor-beside"})
        assert client.stdout is not None
        out = client.stdout.read()
        client.wait(60)
    finally:
        if client.poll() is None:
            client.kill()
    return ingest.requests_per_second, float(orjson.loads(out)["posts_per_second"])


async def bare_posts(
    url: str, body: bytes, in_flight: int, seconds: float, subscriber: psutil.Process, *, signed: bool
) -> tuple[float, float, float]:
    """POSTs answered per second by `in_flight` callers sharing one kept-alive session, for `seconds`; and the
    CPU per POST (us) of this client and of the subscriber's process."""
    secret = signing.new_secret()
    done = 0
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=in_flight), cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
    ) as session:

        async def caller(n: int, until: float) -> None:
            nonlocal done
            i = 0
            while time.monotonic() < until:
                i += 1
                webhook_id = f"floor-{signed}-{n}-{i}"
                headers = {"content-type": "application/json", "webhook-id": webhook_id}
                if signed:
                    headers = signing.headers(webhook_id, datetime.now(UTC), body, [secret])
                async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                    if response.status >= 300:
                        raise SystemExit(f"the subscriber answered {response.status}")
                done += 1

        await asyncio.gather(*(caller(n, time.monotonic() + 1) for n in range(in_flight)))  # warm the pool
        done, started = 0, time.monotonic()
        client_before, subscriber_before = time.process_time(), sum(subscriber.cpu_times()[:2])
        await asyncio.gather(*(caller(n, started + seconds) for n in range(in_flight)))
        elapsed = time.monotonic() - started
        client = (time.process_time() - client_before) / done * 1e6
        return done / elapsed, client, (sum(subscriber.cpu_times()[:2]) - subscriber_before) / done * 1e6


@dataclass(frozen=True)
class Paced:
    """What the steady and the outage phases share: the service, its database, the subscriber, the paced load."""

    service: Service
    dsn: str
    sink: Sink
    script: Path
    connections: int
    paced: dict[str, str]
    args: argparse.Namespace


def steady_phase(run: Paced, rows: list[list[object]]) -> None:
    """A steady load with a new subscription: event-to-delivery latency."""
    subscription = subscribe(run.service, run.sink)
    run.sink.reset()
    steady_started = time.time()
    steady = run_wrk(
        run.service.url, run.script, run.connections, max(run.args.seconds, 20), env={**run.paced, "RUN": "steady"}
    )
    expected = events_since(run.dsn, steady_started)
    drained(run.sink, expected, 120)
    stats = run.sink.stats()
    httpx2.delete(f"{run.service.url}/subscriptions/{subscription}", timeout=10)
    show(
        rows,
        [
            ["steady load: reports/s", steady.requests_per_second],
            [
                "steady load: event to delivery p50 / p99 / max, s (goal p99 < 1)",
                f"{stats['p50']:.3f} / {stats['p99']:.3f} / {stats['max']:.3f}",
            ],
        ],
    )


def outage_phase(run: Paced, rows: list[list[object]]) -> None:
    """The subscriber down for --outage seconds under the steady load, then up, the load going on."""
    subscribe(run.service, run.sink)
    time.sleep(1)
    run.sink.stop()
    outage_started = time.time()
    load = BackgroundLoad(run.service.url, run.script, run.connections, {**run.paced, "RUN": "outage"}, settle=0)
    try:
        time.sleep(run.args.outage)
        queued = events_since(run.dsn, outage_started)
        run.sink.niceness = 0
        run.sink.start()  # a new process: it starts empty
        back, back_at = time.monotonic(), time.time()
        time.sleep(1)  # the reports received before `back_at` have committed
        expected = events_between(run.dsn, outage_started, back_at)
        took = None
        # The sink restarted empty: every event of the outage arrives at it (and is counted by the time its body
        # carries), none is lost in the stop.
        while time.monotonic() - back < 1800:
            if run.sink.stats(outage_started, back_at)["unique_between"] >= expected:
                took = time.monotonic() - back
                break
            time.sleep(0.5)
    finally:
        load.stop()
    show(
        rows,
        [
            [f"subscriber down {run.args.outage:.0f} s under the steady load: events queued", f"{queued:,}"],
            [
                "every event of the outage delivered after it came back, s (load on; goal < 120 for 300 s)",
                "not in 1800 s" if took is None else f"{took:.1f}",
            ],
        ],
    )


def subscribe(service: Service, sink: Sink) -> int:
    created = httpx2.post(f"{service.url}/subscriptions", json={"url": sink.url + "/hook"}, timeout=10)
    if created.json()["code"] != 0:
        raise SystemExit(f"could not subscribe: {created.text}")
    return int(created.json()["data"]["id"])


def cpu_seconds(service: Service, *, dispatching: bool) -> float:
    """User + system CPU so far of the service's dispatching process (`dispatching`), or of all its others."""
    total = 0.0
    parent = psutil.Process(service.proc.pid)
    for proc in [parent, *parent.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            if ("dispatch" in proc.cmdline()) is dispatching:
                times = proc.cpu_times()
                total += times.user + times.system
    return total


def show(rows: list[list[object]], new: list[list[object]]) -> None:
    """Keep the rows for the table at the end, and print them now: a long run stopped early still says something."""
    rows += new
    for name, value in new:
        print(f"{name}: {value}", flush=True)


if __name__ == "__main__":
    main()
