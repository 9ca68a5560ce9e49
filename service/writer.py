"""The write path with group commit: reports from many requests, one transaction, each caller's outcome.

A request hands its reports to `ReportWriter.apply` and waits. Writer tasks (`DLR_WRITERS`, one by
default) take whatever is waiting (up to a bound) and apply it in one transaction; what arrives while a
batch commits goes in the next one. There is no linger: a lone report goes at once, and batches grow only
when traffic does. Answers are given after the commit, so a 2xx still means "stored".

With batching off, every call is its own transaction: the same code path with a batch of one caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from service import metrics, store
from service.config import DEFAULT_WRITERS
from service.engine import Reason
from service.errors import ShuttingDown, Unavailable, database_errors
from service.feed import ChangeSignal
from service.ledger import SWEEP, ReportDecision
from service.reports import IncomingReport
from service.statuses import Status

logger = logging.getLogger("dlr_tracker.writer")


class _Waiting:
    """One caller's reports and the future its answers arrive on."""

    __slots__ = ("future", "reports")

    def __init__(self, reports: Sequence[IncomingReport], future: asyncio.Future[list[ReportDecision]]) -> None:
        self.reports = reports
        self.future = future


class ReportWriter:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        lifetime: int,
        timeout: float,
        batching: bool = True,
        max_batch: int = 1000,
        writers: int = DEFAULT_WRITERS,
        changes: ChangeSignal | None = None,
        writers_pool: asyncpg.Pool | None = None,
    ) -> None:
        self._pool = pool
        # The writer tasks' connections (database.WRITER_SETTINGS); with batching off, each request takes one of
        # the pool's.
        self._writers_pool = writers_pool or pool
        self._lifetime = lifetime
        self._timeout = timeout
        self._batching = batching
        self._max_batch = max_batch
        self._writers = writers
        self._changes = changes
        self._queue: deque[_Waiting] = deque()
        self._arrived = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    def start(self) -> None:
        if self._batching:
            self._tasks = [asyncio.create_task(self._run(), name=f"report-writer-{i}") for i in range(self._writers)]

    async def stop(self) -> None:
        """After the server has finished its requests: nothing should be waiting; refuse what still is."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while self._queue:
            waiting = self._queue.popleft()
            if not waiting.future.done():
                waiting.future.set_exception(ShuttingDown())

    async def apply(self, reports: Sequence[IncomingReport]) -> list[ReportDecision]:
        if not reports:
            return []
        if self._closed:
            raise ShuttingDown()
        loop = asyncio.get_running_loop()
        waiting = _Waiting(reports, loop.create_future())
        if not self._batching:
            await self._commit([waiting])
            return await waiting.future
        self._queue.append(waiting)
        self._arrived.set()
        # A caller waits at most one timeout for its turn and its commit, not for every stalled batch ahead
        # of it: then its future is failed, and the writer skips it if it is still queued. A batch already
        # committing may still commit it after the 503; the sender's retry is then a harmless duplicate.
        # Nothing is acknowledged that is not stored. (A timer per request: wait_for(shield()) cost more
        # than the status engine.)
        timer = loop.call_later(self._timeout, _give_up, waiting.future)
        try:
            return await waiting.future
        finally:
            timer.cancel()

    def _take(self) -> list[_Waiting]:
        batch: list[_Waiting] = []
        size = 0
        while self._queue and (not batch or size + len(self._queue[0].reports) <= self._max_batch):
            waiting = self._queue.popleft()
            # A caller that went away before its turn was never answered: leave its reports unapplied.
            if not waiting.future.done():
                batch.append(waiting)
                size += len(waiting.reports)
        return batch

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            batch = self._take()
            if not batch:
                continue
            # One connection kept while there is work: handing it back to the pool after every batch costs
            # a reset round trip per batch. After a failed batch it goes back (the pool drops a broken one).
            try:
                async with database_errors("ingest"), self._writers_pool.acquire(timeout=self._timeout) as conn:
                    while batch and await self._commit(batch, conn):
                        batch = self._take()
            except asyncio.CancelledError:
                _fail(batch, ShuttingDown())
                raise
            except Exception as exc:  # no connection to be had (or giving it back failed)
                _fail(batch, exc)

    async def _commit(self, batch: list[_Waiting], conn: Any = None) -> bool:
        """Apply a batch and answer its callers; False when it failed (they got the error)."""
        reports = [report for waiting in batch for report in waiting.reports]
        try:
            async with database_errors("ingest"):
                if conn is None:
                    async with self._pool.acquire(timeout=self._timeout) as own:
                        decisions = await store.apply_reports(own, reports, lifetime=self._lifetime)
                else:
                    decisions = await store.apply_reports(conn, reports, lifetime=self._lifetime)
        except asyncio.CancelledError:
            _fail(batch, ShuttingDown())
            raise
        except Exception as exc:
            if len(batch) > 1 and not isinstance(exc, ShuttingDown | Unavailable):
                # Something in the batch broke it: apply each caller's reports on their own, so that
                # only the caller whose report is at fault gets the error.
                logger.warning(
                    "a batch of %d reports failed (%s); retrying them one caller at a time",
                    len(reports),
                    type(exc).__name__,
                )
                for waiting in batch:
                    await self._commit([waiting], conn)
                return False
            _fail(batch, exc)
            return False
        # Committed: only now may anyone be told so.
        record(decisions)
        if self._changes is not None:
            self._changes.notify()
        start = 0
        for waiting in batch:
            end = start + len(waiting.reports)
            if not waiting.future.done():
                waiting.future.set_result(decisions[start:end])
            start = end
        return True


def _fail(batch: list[_Waiting], exc: BaseException) -> None:
    for waiting in batch:
        if not waiting.future.done():
            waiting.future.set_exception(exc)


def _give_up(future: asyncio.Future[list[ReportDecision]]) -> None:
    if not future.done():
        future.set_exception(Unavailable("could not save in time: the database is slow or away, retry later"))


def record(decisions: Sequence[ReportDecision]) -> None:
    """Count what was committed (never before the commit: a rolled-back report counted nothing)."""
    now = datetime.now(UTC)
    # Counted per batch, one inc(n) per label set: each inc() takes a lock. Keys are plain tuples of what
    # each decision says; label values are worked out once per key, not once per report.
    outcomes: dict[tuple[str, bool, Reason | None], int] = {}
    moves: dict[tuple[str, Status, Status], int] = {}
    observe_ingest = metrics.INGEST_SECONDS.observe
    for decision in decisions:
        report = decision.report
        key = (report.source, decision.applied, decision.reason)
        outcomes[key] = outcomes.get(key, 0) + 1
        change = decision.change
        if change is not None:
            before = change.previous_status or Status.NEW
            after = change.message.state.status
            move = (change.source, before, after)
            moves[move] = moves.get(move, 0) + 1
            if after is Status.DELIVRD and before is not Status.DELIVRD and change.source != SWEEP:
                seconds = change.message.delivery_seconds
                if seconds is not None:
                    metrics.DELIVERY_SECONDS.observe(seconds)
        observe_ingest(max(0.0, (now - report.received_at).total_seconds()))
    for (source, applied, reason), n in outcomes.items():
        # Status and Reason are StrEnums: the members are their label values.
        metrics.child(metrics.REPORTS, source, "applied" if applied else (reason or "unmapped")).inc(n)
        if not applied and reason is not None:
            metrics.child(metrics.REJECTED, reason).inc(n)
    for (source, before, after), n in moves.items():
        _count_moves(source, before, after, n)


def _count_moves(source: str, before: Status, after: Status, n: int) -> None:
    metrics.child(metrics.EVENTS, source).inc(n)
    if after is not before:
        metrics.child(metrics.TRANSITIONS, before, after).inc(n)
