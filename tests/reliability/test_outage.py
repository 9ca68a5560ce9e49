"""The database away or slow under load: bounded 503s (code 10, Retry-After) instead of hangs, /readyz
failing and /healthz not, recovery without a restart, a bounded number of connections, and nothing
acknowledged lost.

Outage: a PostgreSQL server of the test's own is stopped (`pg_ctl stop -m fast|immediate`: the process
gone, its socket removed) or frozen (SIGSTOP: it answers nothing) while 32 senders post, then brought
back. Slow: another session holds a lock the senders' reports need for longer than DLR_DB_TIMEOUT.

Each scenario runs once per module (a fixture) and several tests read its record: the answers, the
latency bound (one DLR_DB_TIMEOUT, queueing in the report writer included), connections, recovery.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import asyncpg
import httpx2
import pytest

from tests.processes import ServiceProcess
from tests.reliability.load import Request, SenderLoad, count_connections, lost_reports, summary
from tests.reliability.postgres_server import StoppablePostgres
from tests.reliability.scale import FULL, pick

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

DB_TIMEOUT = 2.0
# What an answer may take beyond its timeouts: the event loop, a commit in flight, a loaded machine.
MARGIN = 1.5
# The promise: no request waits for the database longer than DLR_DB_TIMEOUT (plus the margin).
BOUND = DB_TIMEOUT + MARGIN
# The looser bound other requests (/readyz during a freeze, a batch's own ROLLBACK after a timed-out
# statement) are held to: up to three timeouts. Still bounded: no request hangs.
STALL_BOUND = 3 * DB_TIMEOUT + MARGIN
WARMUP = 1.0
OUTAGE_SECONDS = pick(4.0, 20.0)
# A frozen server holds the requests in flight for up to STALL_BOUND: it stays frozen longer, so that
# requests are also sent and answered while it is.
FREEZE_SECONDS = pick(8.0, 20.0)
LOCK_SECONDS = pick(5.0, 10.0)
RECOVERY_LIMIT = 20.0  # seconds from the database's return to the first acknowledged report
DEFAULT_POOL_SIZE = 10  # DLR_DB_POOL_SIZE's default, one worker
POOL_SIZE, WORKERS = 4, 2  # the slow-database runs: the bound on connections is POOL_SIZE x WORKERS

WAYS = {"fast": "pg_ctl stop -m fast", "immediate": "pg_ctl stop -m immediate", "freeze": "SIGSTOP"}
OUTAGES = ["fast", "immediate", "freeze"] if FULL else ["immediate", "freeze"]
LOCKS = {
    "table": "LOCK TABLE messages IN ACCESS EXCLUSIVE MODE",
    "row": "SELECT 1 FROM messages WHERE id = 'hot' FOR UPDATE",
}
LOCK_KINDS = ["table", "row"] if FULL else ["table"]


@dataclass
class Probes:
    """`/readyz` and `/healthz` asked every 0.2 s: (path, started, finished, HTTP status or None)."""

    url: str
    seen: list[tuple[str, float, float, int | None]] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx2.AsyncClient(base_url=self.url, timeout=STALL_BOUND + 5) as client:
            while not stop.is_set():
                for path in ("/readyz", "/healthz"):
                    started = time.monotonic()
                    try:
                        status: int | None = (await client.get(path)).status_code
                    except httpx2.TransportError:
                        status = None
                    self.seen.append((path, started, time.monotonic(), status))
                await asyncio.sleep(0.2)

    def within(self, path: str, start: float, end: float) -> list[int | None]:
        """The answers to `path` asked and answered inside [start, end]."""
        return [status for p, s, f, status in self.seen if p == path and s >= start and f <= end]


class ConnectionSampler:
    """The service's server connections (pg_stat_activity, application_name 'dlr-tracker'), every 0.1 s.
    While the server cannot answer, samples are skipped (asyncpg's InternalClientError included: a session the
    server ends while it is being opened can raise it, MagicStack/asyncpg#784)."""

    def __init__(self, dsn: str, database: str) -> None:
        self.dsn, self.database = dsn, database
        self.samples: list[int] = []

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with suppress(
                OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, TimeoutError
            ):
                async with asyncio.timeout(1):
                    self.samples.append(await count_connections(self.dsn, self.database))
            await asyncio.sleep(0.1)


async def wait_for_recovery(load: SenderLoad, since: float) -> float:
    """Seconds from `since` until a report that was sent after it is acknowledged (or infinity)."""
    while time.monotonic() - since < RECOVERY_LIMIT:
        answered = load.answered_after(since)
        if answered:
            return min(r.finished for r in answered) - since
        await asyncio.sleep(0.05)
    return float("inf")


def refusals_not_code_10(requests: list[Request]) -> list[str]:
    """Every refusal that is not 503 + code 10 + Retry-After (a dropped connection included)."""
    wrong = []
    for r in requests:
        if r.status is not None and 200 <= r.status < 300:
            continue
        if r.status != 503 or r.code != 10 or not r.retry_after:
            wrong.append(f"{r.status} code {r.code} Retry-After {r.retry_after} {r.error or ''}")
    return wrong


@contextmanager
def running(service: ServiceProcess) -> Iterator[ServiceProcess]:
    """The service, ready; stopped with SIGTERM at the end, which it must survive with exit code 0."""
    try:
        service.wait_ready()
        yield service
    finally:
        if service.proc.poll() is None:
            assert service.stop() == 0, service.output()


# Database outage ------------------------------------------------------------------------------------


@dataclass
class OutageRun:
    way: str
    load: SenderLoad
    t: dict[str, float]  # stopping, down, starting, up (monotonic); recovery (seconds)
    probes: Probes
    connections: list[int]
    ready_after: int
    alive: bool
    lost: list[tuple[str, str]]

    @property
    def during(self) -> list[Request]:
        """The requests sent from the moment the database started going away until it was brought back."""
        return self.load.between(self.t["stopping"], self.t["starting"])

    @property
    def max_latency(self) -> float:
        return max(r.seconds for r in self.during)


@pytest.fixture(scope="module", params=OUTAGES)
def outage(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> OutageRun:
    """One outage under load: 32 senders, the database taken away for OUTAGE_SECONDS (FREEZE_SECONDS), then
    brought back."""
    way: str = request.param
    root = tmp_path_factory.mktemp(f"outage-{way}")
    with StoppablePostgres(root / "pg") as pg:
        env = {"DATABASE_URL": pg.dsn, "DLR_DB_TIMEOUT": str(DB_TIMEOUT)}
        with running(ServiceProcess(root, env=env, name=f"outage-{way}")) as service:
            probes = Probes(service.url)
            sampler = ConnectionSampler(pg.dsn, urlsplit(pg.dsn).path.lstrip("/"))

            async def scenario() -> tuple[SenderLoad, dict[str, float]]:
                stop = asyncio.Event()
                async with SenderLoad(service.url, tag="o") as load:
                    watchers = [asyncio.create_task(probes.run(stop)), asyncio.create_task(sampler.run(stop))]
                    await asyncio.sleep(WARMUP)
                    t = {"stopping": time.monotonic()}
                    await asyncio.to_thread(pg.down, way)
                    t["down"] = time.monotonic()
                    await asyncio.sleep(FREEZE_SECONDS if way == "freeze" else OUTAGE_SECONDS)
                    t["starting"] = time.monotonic()
                    await asyncio.to_thread(pg.up)
                    t["up"] = time.monotonic()
                    t["recovery"] = await wait_for_recovery(load, t["up"])
                    await asyncio.sleep(1.0)
                    stop.set()
                    await asyncio.gather(*watchers)
                return load, t

            load, t = asyncio.run(scenario())
            ready_after = httpx2.get(f"{service.url}/readyz", timeout=10).status_code
            alive = service.proc.poll() is None
        lost = lost_reports(pg.dsn, load.acknowledged)
    return OutageRun(way, load, t, probes, sampler.samples, ready_after, alive, lost)


def test_ingest_answers_503_while_postgres_is_away_and_recovers(outage: OutageRun) -> None:
    """PostgreSQL stopped (fast or immediate) or frozen under load: every ingest request that was sent and
    answered while it was away got 503 with code 10 and Retry-After (none acknowledged, none dropped,
    none hung: all within STALL_BOUND); /readyz answered 503 and /healthz 200 throughout. Brought back,
    the same process acknowledges reports again within RECOVERY_LIMIT and /readyz is 200; the service
    never held more server connections than its pool; no acknowledged report is lost."""
    run, t = outage, outage.t
    away = [r for r in run.during if r.started >= t["down"] and r.finished <= t["starting"]]
    summary(
        f"outage[{WAYS[run.way]}]",
        outage_s=t["starting"] - t["down"],
        requests=len(run.load.requests),
        during_outage=len(run.during),
        refused_503=sum(1 for r in run.load.requests if r.status == 503),
        max_latency_s=run.max_latency,
        readyz_max_s=max(f - s for p, s, f, _ in run.probes.seen if p == "/readyz"),
        recovery_s=t["recovery"],
        max_connections=max(run.connections),
        acknowledged=len(run.load.acknowledged),
        lost=len(run.lost),
    )
    assert run.load.surprises == [], run.load.surprises[:5]
    assert away, "no request was sent and answered while the database was away"
    assert [r for r in away if r.status is not None and r.status < 300] == [], "acknowledged while away"
    assert refusals_not_code_10(run.load.requests) == []
    assert max(r.seconds for r in run.load.requests) <= STALL_BOUND
    readyz = run.probes.within("/readyz", t["down"], t["starting"])
    assert readyz, "/readyz was not asked while the database was away"
    assert set(readyz) == {503}, readyz
    assert set(run.probes.within("/healthz", 0, float("inf"))) == {200}
    assert run.alive, "the service died"
    assert t["recovery"] < RECOVERY_LIMIT, "ingest did not recover by itself"
    assert run.ready_after == 200
    assert max(run.connections) <= DEFAULT_POOL_SIZE
    assert run.lost == [], f"{len(run.lost)} acknowledged reports lost, e.g. {run.lost[:5]}"


@pytest.mark.parametrize(
    "outage",
    [way for way in OUTAGES],
    indirect=True,
)
def test_no_request_waits_past_the_database_timeout_during_an_outage(outage: OutageRun) -> None:
    """While the database is away, every request is answered within DLR_DB_TIMEOUT plus a margin."""
    assert outage.max_latency <= BOUND, f"a request took {outage.max_latency:.2f}s while the database was away"


# Slow database ----------------------------------------------------------------------------------------


@dataclass
class LockRun:
    lock: str
    load: SenderLoad
    t: dict[str, float]  # locked, released (monotonic); recovery (seconds)
    connections: list[int]
    alive: bool
    lost: list[tuple[str, str]]

    @property
    def during(self) -> list[Request]:
        return self.load.between(self.t["locked"], self.t["released"])

    @property
    def max_latency(self) -> float:
        return max(r.seconds for r in self.during)


@pytest.fixture(scope="module", params=LOCK_KINDS)
def slow(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, fresh_database) -> LockRun:  # type: ignore[no-untyped-def]
    """One lock held for LOCK_SECONDS under load: the messages table, or the row of a message a fifth of
    the single reports go to; two workers with DLR_DB_POOL_SIZE=POOL_SIZE each."""
    lock: str = request.param
    root = tmp_path_factory.mktemp(f"lock-{lock}")
    (root / "metrics").mkdir()
    dsn = fresh_database()
    env = {
        "DATABASE_URL": dsn,
        "DLR_DB_TIMEOUT": str(DB_TIMEOUT),
        "DLR_DB_POOL_SIZE": str(POOL_SIZE),
        "WEB_CONCURRENCY": str(WORKERS),
        "PROMETHEUS_MULTIPROC_DIR": str(root / "metrics"),
    }
    with running(ServiceProcess(root, env=env, name=f"lock-{lock}")) as service:
        hot = httpx2.post(f"{service.url}/dlr/generic", data={"id": "hot", "status": "ENQUEUD"}, timeout=10)
        assert hot.status_code == 200, hot.text
        sampler = ConnectionSampler(dsn, urlsplit(dsn).path.lstrip("/"))

        async def scenario() -> tuple[SenderLoad, dict[str, float]]:
            stop = asyncio.Event()
            share = 0.2 if lock == "row" else 0.0
            async with SenderLoad(service.url, tag="l", hot_id="hot", hot_share=share) as load:
                sampling = asyncio.create_task(sampler.run(stop))
                await asyncio.sleep(WARMUP)
                holder = await asyncpg.connect(dsn)
                try:
                    transaction = holder.transaction()
                    await transaction.start()
                    await holder.execute(LOCKS[lock])
                    t = {"locked": time.monotonic()}
                    await asyncio.sleep(LOCK_SECONDS)
                    await transaction.rollback()
                    t["released"] = time.monotonic()
                finally:
                    await holder.close()
                t["recovery"] = await wait_for_recovery(load, t["released"])
                await asyncio.sleep(1.0)
                stop.set()
                await sampling
            return load, t

        load, t = asyncio.run(scenario())
        alive = service.proc.poll() is None
    return LockRun(lock, load, t, sampler.samples, alive, lost_reports(dsn, load.acknowledged))


def test_slow_database_gets_bounded_answers_and_bounded_connections(slow: LockRun) -> None:
    """Another session holds a lock the reports need for LOCK_SECONDS (> DLR_DB_TIMEOUT) under load: the
    refusals are 503 code 10 with Retry-After, no request hangs (all within STALL_BOUND), the service
    never holds more than pool size x workers connections (pg_stat_activity sampled every 0.1 s), a
    report on a locked row is refused rather than kept waiting; once the lock is released ingest recovers
    by itself; no acknowledged report is lost."""
    run, t = slow, slow.t
    during = run.during
    # With a row lock: requests for other messages refused all the same (they shared a commit with it).
    others = {"refused_other_messages": sum(1 for r in during if r.status == 503 and not r.hot)}
    summary(
        f"slow-database[{run.lock} lock]",
        lock_s=t["released"] - t["locked"],
        requests=len(run.load.requests),
        during_lock=len(during),
        refused_503=sum(1 for r in during if r.status == 503),
        acknowledged_during_lock=sum(r.reports for r in during if r.status is not None and r.status < 300),
        max_latency_s=run.max_latency,
        max_connections=max(run.connections),
        connection_bound=POOL_SIZE * WORKERS,
        recovery_s=t["recovery"],
        acknowledged=len(run.load.acknowledged),
        lost=len(run.lost),
        **(others if run.lock == "row" else {}),
    )
    assert run.load.surprises == [], run.load.surprises[:5]
    assert any(r.status == 503 for r in during), "the lock did not hold anything up"
    assert refusals_not_code_10(run.load.requests) == []
    assert max(r.seconds for r in run.load.requests) <= STALL_BOUND
    assert max(run.connections) <= POOL_SIZE * WORKERS
    if run.lock == "row":
        hot = [r for r in during if r.hot and r.finished <= t["released"]]
        assert hot, "no report on the locked row was sent while it was locked"
        assert {r.status for r in hot} == {503}, "a report on the locked row got through"
    assert run.alive, "the service died"
    assert t["recovery"] < RECOVERY_LIMIT, "ingest did not recover after the lock was released"
    assert run.lost == [], f"{len(run.lost)} acknowledged reports lost, e.g. {run.lost[:5]}"


@pytest.mark.parametrize("slow", ["table"], indirect=True)
def test_no_request_waits_past_the_database_timeout_behind_a_lock(slow: LockRun) -> None:
    """While the messages table is locked, every request is answered within DLR_DB_TIMEOUT plus a margin
    (the time a report waits in the writer's queue counts against it)."""
    assert slow.max_latency <= BOUND, f"a request took {slow.max_latency:.2f}s while the lock was held"
