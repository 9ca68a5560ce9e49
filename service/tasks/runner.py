"""TaskRunner: every serving process runs one; it claims a task and runs it a bounded batch at a time.

Runners never wait for each other: a claim takes a task with SKIP LOCKED and holds it by a lease that every
committed batch renews (`store/tasks.py` says how a takeover stays safe). Between batches the runner rests
like the sweeper, so that a million-message task never crowds out ingest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from service import metrics
from service.config import Settings
from service.errors import is_unavailable
from service.feed import ChangeSignal
from service.http.envelope import unexpected_error_message
from service.store import tasks as store
from service.store.messages import Connection
from service.tasks import close, export, replay
from service.tasks.model import Batch, Kind, State

logger = logging.getLogger("dlr_tracker.tasks")

# A task whose runner died this many times is not tried again: it may be what kills them.
MAX_ATTEMPTS = 5
# Seconds between tries of a batch while the database is away (the claim may lapse meanwhile: then the
# runner lets the task go, and whoever claims it next resumes it).
RETRY_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class KindSteps:
    begin: Callable[[Connection, dict[str, Any], datetime], Awaitable[tuple[int, dict[str, Any]]]]
    step: Callable[[Connection, int, dict[str, Any], dict[str, Any], int, Settings], Awaitable[Batch]]
    result: Callable[[int, dict[str, Any], dict[str, Any]], dict[str, Any]]


KINDS = {
    Kind.EXPORT: KindSteps(export.begin, export.step, export.result),
    Kind.CLOSE: KindSteps(close.begin, close.step, close.result),
    Kind.REPLAY: KindSteps(replay.begin, replay.step, replay.result),
}
assert set(KINDS) == set(Kind), "every kind has its steps"


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    kind: Kind
    params: dict[str, Any]
    token: uuid.UUID
    attempts: int


class TaskRunner:
    def __init__(self, pool: asyncpg.Pool, settings: Settings, changes: ChangeSignal | None = None) -> None:
        self._pool = pool
        self._settings = settings
        self._changes = changes
        # The share of time a task may spend in batches: after a batch that took t seconds the runner rests
        # t * (1 - duty) / duty.
        self._rest = (1 - settings.task_duty) / settings.task_duty
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Look for a task now (one was just queued) rather than at the next poll."""
        self._wake.set()

    async def run_once(self) -> bool:
        """Claim one task and run it to its end (or until this runner stops); False if none was waiting."""
        token = uuid.uuid4()
        async with self._pool.acquire(timeout=self._settings.db_timeout) as conn:
            row = await store.claim(conn, token, self._settings.task_lease)
        if row is None:
            return False
        task = Claimed(row["id"], Kind(row["kind"]), json.loads(row["params"]), token, row["attempts"])
        metrics.TASKS_RUNNING.inc()
        try:
            await self._run(task)
        finally:
            metrics.TASKS_RUNNING.dec()
        return True

    async def _run(self, task: Claimed) -> None:
        if task.attempts > MAX_ATTEMPTS:
            await self._end(task, State.FAILED, error=f"abandoned: its runner stopped {MAX_ATTEMPTS} times")
            return
        logger.info("running task %d (%s)", task.id, task.kind.value)
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                going = await self._batch(task)
            except Exception as exc:
                if not is_unavailable(exc):
                    await self._end(task, State.FAILED, error=unexpected_error_message(exc))
                    return
                logger.warning("task %d: database unavailable (%s), retrying", task.id, type(exc).__name__)
                await self._sleep(RETRY_SECONDS)
                continue
            elapsed = time.perf_counter() - started
            metrics.child(metrics.TASK_BATCH_SECONDS, task.kind.value).observe(elapsed)
            if not going:
                return
            if self._rest:
                await self._sleep(elapsed * self._rest)
        await self._release(task)

    async def _batch(self, task: Claimed) -> bool:
        """One batch in one transaction: its effect, the task's progress and position, and the lease renewed
        (or the task finished). False when the task is over, or no longer this runner's."""
        steps = KINDS[task.kind]
        lease = self._settings.task_lease
        async with self._pool.acquire(timeout=self._settings.db_timeout) as conn, conn.transaction():
            row = await store.lock_for_batch(conn, task.id, task.token)
            if row is None:
                logger.info("task %d: cancelled or taken over, letting it go", task.id)
                return False
            if row["position"] is None:
                # The first batch only counts what there is to do (the total), so that progress means something.
                total, position = await steps.begin(conn, task.params, datetime.now(UTC))
                await store.advance(conn, task.id, position, 0, total, lease)
                return True
            position = json.loads(row["position"])
            batch = await steps.step(conn, task.id, task.params, position, self._settings.task_batch, self._settings)
            await store.advance(conn, task.id, batch.position, row["done"] + batch.done, None, lease)
            if batch.finished:
                await store.finish(conn, task.id, State.DONE, steps.result(task.id, task.params, batch.position))
        batch.count()
        if batch.changed and self._changes is not None:
            self._changes.notify()
        if batch.finished:
            metrics.child(metrics.TASKS, task.kind.value, State.DONE.value).inc()
            logger.info("task %d (%s) done", task.id, task.kind.value)
        return not batch.finished

    async def _end(self, task: Claimed, state: State, *, error: str) -> None:
        async with self._pool.acquire(timeout=self._settings.db_timeout) as conn, conn.transaction():
            if await store.lock_for_batch(conn, task.id, task.token) is None:
                return
            await store.finish(conn, task.id, state, error=error)
        metrics.child(metrics.TASKS, task.kind.value, state.value).inc()
        logger.error("task %d (%s) %s: %s", task.id, task.kind.value, state.value, error)

    async def _release(self, task: Claimed) -> None:
        """Stopping mid-task: end the lease now, so that another runner resumes it without waiting it out."""
        try:
            async with self._pool.acquire(timeout=self._settings.db_timeout) as conn:
                await store.release(conn, task.id, task.token)
        except Exception as exc:  # the lease lapses by itself; nothing is lost
            logger.warning("task %d: could not release its lease: %s", task.id, type(exc).__name__)

    async def _sleep(self, seconds: float) -> None:
        # Wakes early on stop: a resting runner must not hold shutdown back.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def run_forever(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                ran = await self.run_once()
            except Exception as exc:
                # A database blip must not end the runner: log it, look again at the next poll.
                if is_unavailable(exc):
                    logger.warning("task runner: database unavailable: %s", type(exc).__name__)
                else:
                    logger.exception("task runner failed")
                ran = False
            if ran:
                continue  # there may be more waiting
            waits = [asyncio.ensure_future(self._stop.wait()), asyncio.ensure_future(self._wake.wait())]
            await asyncio.wait(waits, timeout=self._settings.task_poll, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()

    def start(self) -> None:
        self._task = asyncio.create_task(self.run_forever(), name="task-runner")

    async def stop(self) -> None:
        """Stop after the batch in progress (its transaction commits or rolls back whole)."""
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
