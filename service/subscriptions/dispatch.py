"""SubscriptionDispatcher: feed events -> deliveries -> signed POSTs, in the background of a dispatching process
(or of every serving process: DLR_SUBSCRIPTION_DISPATCH).

Three steps, each safe with any number of processes:

1. Fan-out: a subscription's new events are read by one process at a time, the one holding its fan-out lease
   (`fanout_owner`, a token new for each take, and `fanout_until`, past the delivery timeout; renewed every
   `RENEW_EVERY`, handed back at stop). It reads the feed gap-free after the cursor (store/events.read_page), no
   more events than it has room to attempt (step 2's window), and starts an attempt for each event the filter
   matches, writing nothing: a subscriber slower than the feed leaves its backlog in the feed, read as its
   attempts free room (they wake the fan-out). The cursor moves past a page of events only once every delivery of
   it is written (step 3; service/subscriptions/fanout.py): a process that dies leaves what it was attempting to
   be read again by the next holder of the lease, once it passes (at least once). With a schedule whose first
   attempt waits, the fan-out queues the deliveries instead, and the cursor moves with them in one statement.
2. Delivery: queued deliveries that are due (retries, replays) are claimed per subscription (SKIP LOCKED) with a
   lease (`leased_until`, past the timeout: a column no index holds, so a claim writes no index entry) before any
   POST, so a process that dies mid-attempt leaves them to any process once the lease passes: at least once.
   Attempts run as tasks, at most `delivery_concurrency` at once and `delivery_concurrency_per_subscription` per
   subscriber, so a slow subscriber holds up only its own. Up to as many again are read or claimed ahead and
   started as attempts end, without a round trip in between (a claimed delivery not started while its lease
   still covers an attempt is left for the lease to pass).
3. Recording: finished attempts are written back in batches, one transaction for whatever finished while the
   previous batch was being written, or in the 20 ms a small batch waits (a pipeline: attempts go on while their
   results are recorded). A first attempt inserts its delivery (delivered, or pending with its body, so that every
   retry sends the same bytes), and the same transaction moves the subscription's cursor past what is written and
   renews the lease: a delivery is written once, and twice more per retry (its claim, its record). A queued one stays
   leased until its attempt is recorded, so nobody tries it twice meanwhile. The first attempts of a batch the
   database could not take (away, or another transaction in the way) are recorded again later: they hold the
   cursor back until written.

Each step is a loop of its own (and the backlog gauges a fourth): the fan-out every `POLL_SECONDS` and when
attempts free room for a subscription whose feed has more; the claimer whenever an attempt ends while
more may be due and its claims run low, the fan-out queued first attempts that wait (a schedule whose first
wait is not 0), or `POLL_SECONDS` passed; the recorder whenever attempts ended. So a fan-out waiting on a busy
database (as ingest does) holds up neither a backlog's drain nor the recording. Ingest never waits on any of this:
it writes its feed row as always. The fan-out is not woken by this process's commits (`ChangeSignal`): with that
wake-up, schemathesis' ASGI run (tests/reliability/test_fuzz.py) left a request waiting forever in asyncpg, a cause
not found yet; a poll costs at most `POLL_SECONDS` of delivery latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import asyncpg
import orjson

from service import __version__, metrics
from service.config import Settings
from service.errors import is_unavailable
from service.http import views
from service.store import events as feed
from service.store import subscriptions as store
from service.store.events import Cursor, CursorExpired, FeedEvent
from service.store.subscriptions import ClaimedDelivery, Target
from service.subscriptions import policy, signing
from service.subscriptions.address_guard import socket_factory
from service.subscriptions.fanout import HeldFanout, ReadPage, written
from service.subscriptions.model import filter_from_json
from service.subscriptions.sealing import SealError, unseal

logger = logging.getLogger("dlr_tracker.subscriptions")

POLL_SECONDS = 0.25
FANOUT_PAGE = 500  # events read per subscription per transaction
LEASE_MARGIN = 5.0  # seconds past the timeout before a claimed delivery may be taken again
METRICS_EVERY = 5.0
RETRY_NOW_STEP = 1000  # retries made due per statement when a subscriber is back
UNSENDABLE = "the event is no longer in the feed (pruned), and this delivery kept no body to send"
RECORD_BATCH = 100  # attempts recorded at once without waiting for more
RECORD_LINGER = 0.02  # seconds a smaller batch waits for more attempts to finish
RENEW_EVERY = 1.0  # seconds between renewals of a fan-out lease (it lasts the delivery lease: past the timeout)
# A recording undone by another transaction (a subscription deleted meanwhile, a deadlock): worth doing again.
_RECORD_AGAIN = (
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)
STOP_GRACE = 5.0  # seconds in-flight attempts get to finish at shutdown (the rest are retried, lease expired)


def payload(event: FeedEvent) -> bytes:
    """The body POSTed for an event: `{"type", "timestamp", "data"}` as the feed shows it (the id travels in
    `webhook-id`)."""
    shown = views.event(event)
    return orjson.dumps({"type": shown["type"], "timestamp": shown["timestamp"], "data": shown["data"]})


@dataclass(frozen=True, slots=True)
class Finished:
    """An attempt made and judged, waiting to be recorded."""

    delivery: ClaimedDelivery
    page: ReadPage | None  # the fan-out's page it came from (its row is not written yet), or None
    attempt: policy.Attempt
    verdict: policy.Verdict
    recovered: bool  # it ended an outage (policy.recovered)
    body: bytes | None  # the body for the delivery to keep, when it does not yet and is not delivered

    @property
    def subscription_id(self) -> int:
        return self.delivery.target.subscription_id

    def record(self) -> store.AttemptRecord:
        d = self.delivery
        return store.AttemptRecord(
            d.id,
            self.subscription_id,
            d.event_id,
            d.event_at,
            self.attempt.to_json(),
            self.verdict.state,
            self.verdict.next_attempt_at,
            self.body,
        )


class SubscriptionDispatcher:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings
        self._timeout = settings.delivery_timeout
        self._lease = settings.delivery_timeout + LEASE_MARGIN
        self._in_flight: Counter[int] = Counter()
        self._reserved: Counter[int] = Counter()  # room the fan-out is claiming, not started yet
        # Deliveries waiting for a free slot, per subscription, with when their lease ends (monotonic; the fan-out's
        # never do) and the fan-out's page they came from.
        self._ready: dict[int, deque[tuple[float, ClaimedDelivery, ReadPage | None]]] = {}
        self._fanouts: dict[int, HeldFanout] = {}  # the fan-out leases this process holds, by subscription
        self._subscriptions: list[store.FanoutSubscription] = []  # the enabled ones, as last listed
        self._listed_at = -math.inf  # when (time.monotonic())
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._claimer: asyncio.Task[None] | None = None
        # Set when the claimer should look again: an attempt ended where more may be due, or the fan-out queued
        # more than it claimed.
        self._claim_more = asyncio.Event()
        # Subscriptions whose due deliveries may outnumber what this process has claimed: the fan-out queued more
        # than it claimed, or a claim got all it asked for. Only their attempts wake the claimer: a wake is a
        # round trip, and under a flat-out load (every first attempt claimed by the fan-out) it would find nothing.
        self._maybe_due: set[int] = set()
        # Subscriptions whose feed holds more than this process had room to claim: their attempts wake the fan-out.
        self._behind: set[int] = set()
        self._batch = max(1, settings.delivery_concurrency_per_subscription // 2)
        self._looked_at = 0.0  # when the claimer last asked the database which subscriptions have any due
        # Per subscription, the task making its retries due now (`_retry_now`): one at a time.
        self._pulling: dict[int, asyncio.Task[None]] = {}
        self._gauges: asyncio.Task[None] | None = None
        self._shown: set[str] = set()  # the subscriptions the per-subscription gauges show
        self._finished: list[Finished] = []  # attempts made, not recorded yet
        self._attempted: Counter[str] = Counter()  # attempts made by outcome, not counted in the metrics yet
        self._recorded = asyncio.Event()  # set when there is something for the recorder
        self._recorder: asyncio.Task[None] | None = None
        self._attempts_over = False  # stopping, and no attempt is in flight any more
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        """One session (a connection pool kept alive per subscriber) for the dispatcher's life."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._settings.delivery_concurrency,
                    limit_per_host=0,  # bounded per subscription by the dispatcher, not per host
                    keepalive_timeout=30,
                    socket_factory=socket_factory(self._settings.subscription_allow_private),
                ),
                # The whole attempt is bounded in `_post`; the session's own 5-minute default must not cut in.
                timeout=aiohttp.ClientTimeout(total=None),
                cookie_jar=aiohttp.DummyCookieJar(),  # a subscriber's cookie must not travel to the next POST
                auto_decompress=False,
                trust_env=False,  # a proxy would make the connection instead of us, past the address guard
                headers={"user-agent": f"dlr-tracker/{__version__}", "content-type": "application/json"},
            )
        return self._session

    # --- fan-out ---------------------------------------------------------------------------------------

    async def fan_out(self) -> bool:
        """Read, for each subscription whose fan-out lease this process holds (or takes: nobody else does), the events
        after its cursor that this process has room to attempt now (`_window`), and start them; True when one may
        have more to read now. The leases held are renewed every `RENEW_EVERY`, with the cursors moved past what is
        written (the recorder moves them too, as it writes deliveries).

        Only what there is room for is read: a subscriber slower than the feed leaves its backlog in the feed, read
        as room frees (`_attempt` wakes the fan-out). A delivery's row is written once, when its first attempt
        ends (`record_finished`); what a dispatcher that dies held is only what it was attempting."""
        more = False
        async with self._pool.acquire(timeout=self._settings.db_timeout) as conn:
            await self._keep_leases(conn)
            if time.monotonic() - self._listed_at >= POLL_SECONDS:
                # Every poll, not on every wake-up (attempts freeing room, many a second under load): a change to a
                # subscription (its filter, its URL, disabled) takes effect within a poll.
                self._listed_at = time.monotonic()
                self._subscriptions = await store.fanout_subscriptions(conn)
            subscriptions = self._subscriptions
            enabled = {sub.target.subscription_id for sub in subscriptions}
            # Disabled or deleted, nothing of it in flight: handed back, so that enabling it again reads on at once.
            idle = [f for sid, f in self._fanouts.items() if sid not in enabled and not f.pages]
            if idle:
                await store.keep_fanout(conn, [f.lease() for f in idle], 0.0, release=True)
                for f in idle:
                    del self._fanouts[f.subscription_id]
            for sub in subscriptions:
                held = await self._hold(conn, sub)
                if held is not None:
                    more |= await self._read_new(conn, sub, held)
        return more

    async def _keep_leases(self, conn: asyncpg.Connection) -> None:
        """Renew the leases not renewed for `RENEW_EVERY` (and move their cursors); forget those taken meanwhile
        by another process (this one stalled past its lease)."""
        now = time.monotonic()
        due = [held for held in self._fanouts.values() if now - held.renewed >= RENEW_EVERY]
        if not due:
            return
        leases = [held.lease() for held in due]
        self._renewed(due, leases, await store.keep_fanout(conn, leases, self._lease), now)

    def _renewed(self, held: list[HeldFanout], leases: list[store.FanoutLease], kept: set[int], at: float) -> None:
        """These leases were renewed (`at`, time.monotonic()) with their cursors written, those in `kept`; the
        others are no longer this process's."""
        for fanout, lease in zip(held, leases, strict=True):
            if fanout.subscription_id in kept:
                fanout.renewed = at
                fanout.settle(lease.cursor)
            elif self._fanouts.get(fanout.subscription_id) is fanout:
                logger.warning(
                    "subscription %s: its fan-out lease is no longer held here (taken by another process, or deleted)",
                    fanout.subscription_id,
                )
                del self._fanouts[fanout.subscription_id]

    async def _hold(self, conn: asyncpg.Connection, sub: store.FanoutSubscription) -> HeldFanout | None:
        """This process's hold on the subscription's fan-out: the one it has, or one it takes now if nobody holds
        the lease; None when another process does."""
        subscription_id = sub.target.subscription_id
        held = self._fanouts.get(subscription_id)
        if held is not None:
            return held  # until a renewal finds it taken (`_keep_leases`, `record_finished`)
        if sub.owner is not None:
            return None
        token = uuid.uuid4()
        taken_at = time.monotonic()
        cursor = await store.take_fanout(conn, subscription_id, token, self._lease)
        if cursor is None:
            return None
        held = HeldFanout(subscription_id, token, cursor, cursor, taken_at)
        self._fanouts[subscription_id] = held
        return held

    async def _read_new(self, conn: asyncpg.Connection, sub: store.FanoutSubscription, held: HeldFanout) -> bool:
        """Read the subscription's next events as far as there is room, and start those its filter wants (or queue
        them, when the schedule's first attempt waits): whether it may have more to read now."""
        subscription_id = sub.target.subscription_id
        first_wait = self._settings.delivery_schedule[0]
        room = self._window(subscription_id) if first_wait <= 0 else FANOUT_PAGE
        if room <= 0:
            self._behind.add(subscription_id)
            return False
        limit = min(room, FANOUT_PAGE)
        # Held while the page is read, so that the claimer does not take the room meanwhile.
        self._reserved[subscription_id] += limit
        try:
            try:
                page = await feed.read_page(conn, held.read_to, limit)
            except CursorExpired as exc:
                # Disabled (or stopped) for longer than the feed keeps events: what came between is gone. The cursor
                # moves to the oldest event kept with the next renewal, even if no page is read after it.
                logger.warning("subscription %s: events before %s were pruned unread", subscription_id, exc.oldest)
                held.read(exc.oldest, 0)
                page = await feed.read_page(conn, exc.oldest, limit)
            wanted = filter_from_json(orjson.loads(sub.filter))
            matching = [e for e in page.events if wanted.matches(e)]
            if not page.events:
                pass  # nothing new: nothing to write either
            elif first_wait > 0:
                # Queued, claimed when due: the cursor moves with them, in one statement.
                events = [(str(e.cursor), e.at, payload(e)) for e in matching]
                lease = store.FanoutLease(subscription_id, held.token, page.next_cursor)
                if not await store.queue_deliveries(conn, lease, self._lease, events, first_wait):
                    del self._fanouts[subscription_id]
                    return False
                held.read_to = page.next_cursor
                held.settle(page.next_cursor)
                if matching:
                    self._maybe_due.add(subscription_id)
                    self._claim_more.set()
            else:
                read = held.read(page.next_cursor, len(matching))
                ready = self._ready.setdefault(subscription_id, deque())
                for e in matching:
                    delivery = ClaimedDelivery(None, str(e.cursor), e.at, payload(e), False, 0, sub.target)
                    ready.append((math.inf, delivery, read))  # held by the fan-out lease, not a lease of its own
        finally:
            self._reserved[subscription_id] -= limit
            self._reserved += Counter()  # drops the zeros
        if matching:
            metrics.WEBHOOK_QUEUED.inc(len(matching))
        self._start_ready(subscription_id)
        if len(page.events) < limit:
            self._behind.discard(subscription_id)  # read up to the present
            return False
        if first_wait > 0 or self._window(subscription_id) > 0:
            return True
        self._behind.add(subscription_id)  # its attempts wake the fan-out as they free room
        return False

    # --- delivery --------------------------------------------------------------------------------------

    def _room(self, subscription_id: int) -> int:
        """How many more attempts this process may start now for this subscription."""
        free = self._settings.delivery_concurrency - len(self._tasks)
        return min(free, self._settings.delivery_concurrency_per_subscription - self._in_flight[subscription_id])

    def _window(self, subscription_id: int) -> int:
        """How many more deliveries this process may claim now for this subscription: up to twice its concurrency
        (in flight, claimed and waiting for a slot, or being claimed by the fan-out), and twice the process's
        in all. Claims wait at most about one attempt's time for their slot, well inside their lease."""
        waiting = len(self._ready.get(subscription_id, ())) + self._reserved[subscription_id]
        mine = 2 * self._settings.delivery_concurrency_per_subscription - self._in_flight[subscription_id] - waiting
        free = 2 * self._settings.delivery_concurrency - len(self._tasks) - self._waiting() - self._reserved.total()
        return min(free, mine)

    def _start(self, delivery: ClaimedDelivery, page: ReadPage | None) -> None:
        self._in_flight[delivery.target.subscription_id] += 1
        task = asyncio.create_task(self._attempt(delivery, page), name=f"delivery-{delivery.event_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_ready(self, subscription_id: int) -> None:
        """Start this subscription's claimed deliveries as far as there is room: no round trip between one
        attempt ending and the next starting. One whose lease would run out before its attempt could end is
        left for its lease to pass (it is due again then, here or in any process): never two attempts at once."""
        ready = self._ready.get(subscription_id)
        while ready and self._room(subscription_id) > 0:
            lease_ends, delivery, page = ready.popleft()
            if time.monotonic() + self._timeout < lease_ends:
                self._start(delivery, page)
        if not ready:
            self._ready.pop(subscription_id, None)

    async def dispatch_due(self) -> int:
        """Claim what is due and start an attempt for each, as far as the concurrency bounds allow; and up to
        as many again per subscription, kept ready for the slots its attempts free (`_start_ready`)."""
        claimed = 0
        for subscription_id in list(self._ready):
            self._start_ready(subscription_id)  # first what is claimed already (and drop what is too late)
        async with self._pool.acquire(timeout=self._settings.db_timeout) as conn:
            if time.monotonic() - self._looked_at >= POLL_SECONDS:
                # Retries come due with time: every poll asks which subscriptions have any.
                self._looked_at = time.monotonic()
                due = await store.subscriptions_due(conn)
            else:
                # Woken by an attempt's end or the fan-out: only where more is known to be waiting. The question
                # costs more than a claim when the due index holds many just-claimed rows' old versions.
                due = sorted(self._maybe_due)
            for subscription_id in due:
                wanted = self._window(subscription_id)
                if wanted <= 0:
                    self._maybe_due.add(subscription_id)
                    continue
                lease_ends = time.monotonic() + self._lease
                rows = await store.claim_due(conn, subscription_id, wanted, self._lease)
                if len(rows) < wanted:
                    self._maybe_due.discard(subscription_id)  # all that is due now is claimed
                else:
                    self._maybe_due.add(subscription_id)
                rows = await self._with_bodies(conn, rows)
                self._ready.setdefault(subscription_id, deque()).extend((lease_ends, row, None) for row in rows)
                self._start_ready(subscription_id)
                claimed += len(rows)
        return claimed

    async def _with_bodies(self, conn: asyncpg.Connection, rows: list[ClaimedDelivery]) -> list[ClaimedDelivery]:
        """Claimed deliveries that keep no body (delivered ones replayed) get their event's, made again from the
        feed. One whose event the feed no longer keeps cannot
        be sent: it is failed, saying why (a subscriber's streak is not touched: it did not fail)."""
        missing = {row.id: Cursor.parse(row.event_id) for row in rows if row.body is None and row.id is not None}
        if not missing:
            return rows
        found = await feed.events_at(conn, [cursor for cursor in missing.values() if cursor is not None])
        gone = {delivery_id for delivery_id, cursor in missing.items() if cursor not in found}
        if gone:
            await store.fail_unsendable(conn, sorted(gone), UNSENDABLE)
            metrics.WEBHOOK_DELIVERIES.labels(policy.FAILED).inc(len(gone))
            logger.warning("%d deliveries failed: %s", len(gone), UNSENDABLE)
        made = {i: payload(found[cursor]) for i, cursor in missing.items() if cursor is not None and cursor in found}
        return [
            row if row.body is not None or row.id is None else row._replace(body=made[row.id])
            for row in rows
            if row.id not in gone
        ]

    def _waiting(self) -> int:
        return sum(len(ready) for ready in self._ready.values())

    def _secrets(self, target: Target, now: datetime) -> list[str]:
        key = self._settings.subscription_key
        secrets = [unseal(target.secret, target.subscription_id, key)]
        until = target.previous_secret_until
        if target.previous_secret is not None and until is not None and until > now:
            secrets.append(unseal(target.previous_secret, target.subscription_id, key))
        return secrets

    async def _post(self, delivery: ClaimedDelivery) -> policy.Attempt:
        at = datetime.now(UTC)
        started = time.perf_counter()
        body = delivery.body
        assert body is not None  # made again before the claim was started (`_with_bodies`)
        try:
            headers = signing.headers(delivery.event_id, at, body, self._secrets(delivery.target, at))
        except SealError as exc:
            return policy.Attempt(at, 0.0, error=f"secret: {exc}")
        try:
            # The whole attempt, not each phase: a subscriber dribbling bytes must not hold it past the timeout.
            async with (
                asyncio.timeout(self._timeout),
                # A redirect could lead past the address guard: it is an answer, not a hop.
                self._client().post(delivery.target.url, data=body, headers=headers, allow_redirects=False) as response,
            ):
                status = response.status  # the answer's body is not read: its status says it all
                retry_after_header = response.headers.get("retry-after")
        except TimeoutError:
            return policy.Attempt(at, time.perf_counter() - started, error="timeout")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return policy.Attempt(at, time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}"[:300])
        retry_after = None
        if status in policy.THROTTLED:
            retry_after = policy.retry_after(retry_after_header, at)
        return policy.Attempt(at, time.perf_counter() - started, status, None, retry_after)

    async def _attempt(self, delivery: ClaimedDelivery, page: ReadPage | None) -> None:
        subscription_id = delivery.target.subscription_id
        failing_since = delivery.target.failing_since
        try:
            try:
                attempt = await self._post(delivery)
            except Exception as exc:
                # Recorded as a failed attempt all the same (retried on schedule): a first attempt not recorded would
                # hold its subscription's cursor back for as long as this process lives.
                logger.exception("delivery of %s failed unexpectedly", delivery.event_id)
                attempt = policy.Attempt(datetime.now(UTC), 0.0, error=f"unexpected: {type(exc).__name__}")
            metrics.WEBHOOK_ATTEMPT_SECONDS.observe(attempt.duration)
            self._attempted[attempt.outcome] += 1
            verdict = policy.decide(
                attempt,
                delivery.attempt_count + 1,
                self._settings.delivery_schedule,
                failing_since,
                self._settings.subscription_disable_after,
                random.uniform(*policy.JITTER),  # noqa: S311 - spreading retries, not security
            )
            recovered = policy.recovered(attempt, failing_since, self._settings.delivery_schedule)
            keep = None if verdict.state == policy.DELIVERED or delivery.kept else delivery.body
            self._finished.append(Finished(delivery, page, attempt, verdict, recovered, keep))
            self._recorded.set()
        finally:
            self._in_flight[subscription_id] -= 1
            if self._in_flight[subscription_id] <= 0:
                del self._in_flight[subscription_id]
            self._start_ready(subscription_id)
            # Its feed has more than there was room for: read on once a batch's worth of room is free. Not while
            # deliveries of its are due (a subscriber back from an outage): those the claimer takes first, as many
            # to a round trip, where each fan-out is a transaction of its own for a handful of new events.
            if (
                subscription_id in self._behind
                and subscription_id not in self._maybe_due
                and self._window(subscription_id) >= self._batch
            ):
                self._wake.set()
            # Claim more once the claims waiting here run low (a batch, not a round trip per attempt); the poll
            # every POLL_SECONDS finds the rest (retries coming due).
            ready = len(self._ready.get(subscription_id, ()))
            if (
                subscription_id in self._maybe_due
                and ready <= self._settings.delivery_concurrency_per_subscription // 2
            ):
                self._claim_more.set()

    # --- recording -------------------------------------------------------------------------------------

    async def record_finished(self) -> int:
        """Write back every attempt finished so far, in one transaction: how many."""
        # Counted here, a batch at a time: a labelled increment per attempt was a thirtieth of the dispatcher's CPU.
        attempted, self._attempted = self._attempted, Counter()
        for outcome, count in attempted.items():
            metrics.WEBHOOK_ATTEMPTS.labels(outcome).inc(count)
        batch, self._finished = self._finished, []
        if not batch:
            return 0
        by_subscription: defaultdict[int, list[Finished]] = defaultdict(list)
        for done in batch:
            by_subscription[done.subscription_id].append(done)
        streaks = []
        for subscription_id, done_here in by_subscription.items():
            change = policy.streak([d.attempt for d in done_here])
            disable = next((d.verdict.disable for d in done_here if d.verdict.disable is not None), None)
            streaks.append(store.StreakChange(subscription_id, change.ended, change.since, disable))
        # The fan-out leases whose cursor may move past what this batch writes, renewed with it.
        writing = Counter(d.page for d in batch if d.page is not None)
        held = [h for h in self._fanouts.values() if any(page in writing for page in h.pages)]
        leases = [h.lease(writing) for h in held]
        renewing = time.monotonic()  # before the transaction: never later than the database's renewal
        try:
            async with self._pool.acquire(timeout=self._settings.db_timeout) as conn:
                kept = await store.record_attempts(conn, [d.record() for d in batch], streaks, leases, self._lease)
        except Exception as exc:
            # Deliveries the fan-out read are recorded later when the database was away or another transaction was
            # in the way (they hold the cursor back until they are written); otherwise (a fault of this code) they
            # are dropped, the cursor stays before them, and the next holder of the lease sends them again. Queued
            # ones are not recorded again: their leases run out and they are tried again (at least once).
            again = is_unavailable(exc) or isinstance(exc, _RECORD_AGAIN)
            first = [d for d in batch if d.page is not None] if again else []
            self._finished[:0] = first
            if is_unavailable(exc):
                logger.warning(
                    "%d delivery attempts not recorded (%d to record again), database unavailable: %s",
                    len(batch),
                    len(first),
                    type(exc).__name__,
                )
            else:
                logger.exception("%d delivery attempts not recorded (%d to record again)", len(batch), len(first))
            return 0
        written(writing)
        self._renewed(held, leases, kept, renewing)
        for subscription_id in sorted({d.subscription_id for d in batch if d.recovered} - self._pulling.keys()):
            task = asyncio.create_task(self._retry_now(subscription_id), name=f"retry-now-{subscription_id}")
            self._pulling[subscription_id] = task
        for state, count in Counter(d.verdict.state for d in batch if d.verdict.state != policy.PENDING).items():
            metrics.WEBHOOK_DELIVERIES.labels(state).inc(count)
        for streak in streaks:
            if streak.disable is not None:
                logger.warning("subscription %s disabled: %s", streak.subscription_id, streak.disable)
        return len(batch)

    async def _retry_now(self, subscription_id: int) -> None:
        """A subscriber answers again: its retries are due now, in steps, beside the recording (which must not
        wait for them), and the claimer takes them as they come."""
        pulled = 0
        try:
            while not self._stop.is_set():
                async with self._pool.acquire(timeout=self._settings.db_timeout) as conn:
                    step = await store.retry_now(conn, subscription_id, self._lease, RETRY_NOW_STEP)
                pulled += step
                if step:
                    self._maybe_due.add(subscription_id)
                    self._claim_more.set()
                if step < RETRY_NOW_STEP:
                    break
        except Exception as exc:
            # The retries keep their schedule: they come due in time all the same.
            logger.warning("subscription %s: could not make its retries due now: %s", subscription_id, exc)
        finally:
            del self._pulling[subscription_id]
        if pulled:
            logger.info("subscription %s is answering again: %d retries due now", subscription_id, pulled)

    async def _record_forever(self) -> None:
        """Record what finished while the previous batch was written; once more after the last attempt."""
        while not self._attempts_over:
            await self._recorded.wait()
            self._recorded.clear()
            if len(self._finished) < RECORD_BATCH:
                # A moment for more to finish: a recording is a transaction of several round trips whatever its
                # size, and one per attempt or two was a sixth of the dispatcher's CPU under load.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RECORD_LINGER):
                        await self._stop.wait()
            if not await self.record_finished() and self._finished:
                # Not recorded (the database is away): again in a while, not in a loop as fast as it fails.
                self._recorded.set()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_SECONDS):
                        await self._stop.wait()
        await self.record_finished()

    # --- metrics ---------------------------------------------------------------------------------------

    async def refresh_metrics(self) -> None:
        async with self._pool.acquire(timeout=self._settings.db_timeout) as conn:
            rows = await store.backlog(conn)
        now = datetime.now(UTC)
        shown = set()
        for row in rows:
            label = str(row["id"])
            shown.add(label)
            metrics.SUBSCRIPTION_BACKLOG.labels(label).set(row["pending"])
            oldest = row["oldest"]
            age = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
            metrics.SUBSCRIPTION_OLDEST_PENDING.labels(label).set(age)
        for gone in self._shown - shown:  # deleted subscriptions
            metrics.forget(metrics.SUBSCRIPTION_BACKLOG, gone)
            metrics.forget(metrics.SUBSCRIPTION_OLDEST_PENDING, gone)
        self._shown = shown
        metrics.SUBSCRIPTIONS_DISABLED.set(sum(1 for row in rows if not row["enabled"]))

    # --- the loop --------------------------------------------------------------------------------------

    async def fan_out_once(self) -> None:
        while await self.fan_out() and not self._stop.is_set():
            pass

    async def _refresh_metrics_forever(self) -> None:
        """The backlog gauges every `METRICS_EVERY`, in a loop of their own: their query waits on the database like
        any other, and must not hold up the fan-out."""
        while not self._stop.is_set():
            try:
                await self.refresh_metrics()
            except Exception as exc:
                if is_unavailable(exc):
                    logger.warning("subscription metrics not refreshed, database unavailable: %s", type(exc).__name__)
                else:
                    logger.exception("subscription metrics not refreshed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(METRICS_EVERY):
                    await self._stop.wait()

    async def _fan_out_forever(self) -> None:
        """New events, every `POLL_SECONDS`."""
        await self._forever(self.fan_out_once, self._wake)

    async def _claim_forever(self) -> None:
        """Due deliveries (retries, and first attempts the fan-out had no room for): whenever an attempt ends,
        and every `POLL_SECONDS`. A loop of its own, so that a slow fan-out (its transaction waits on the
        database like ingest's) does not hold up a backlog's drain, nor the drain new events."""
        await self._forever(self.dispatch_due, self._claim_more)

    async def _forever(self, step: Callable[[], Awaitable[object]], woken: asyncio.Event) -> None:
        while not self._stop.is_set():
            try:
                await step()
            except Exception as exc:
                # A database blip must not end the dispatcher: log it, look again next tick.
                if is_unavailable(exc):
                    logger.warning("subscription dispatch failed, database unavailable: %s", type(exc).__name__)
                else:
                    logger.exception("subscription dispatch failed")
            try:
                async with asyncio.timeout(POLL_SECONDS):
                    await woken.wait()
            except TimeoutError:
                pass
            woken.clear()

    def start(self) -> None:
        self._task = asyncio.create_task(self._fan_out_forever(), name="subscription-fan-out")
        self._claimer = asyncio.create_task(self._claim_forever(), name="subscription-claimer")
        self._recorder = asyncio.create_task(self._record_forever(), name="subscription-recorder")
        self._gauges = asyncio.create_task(self._refresh_metrics_forever(), name="subscription-metrics")

    async def _hand_back_leases(self) -> None:
        """The fan-out leases, handed back with the cursors past what was written: any process takes them at once
        (what was being attempted and not written is read again then), not when they would have passed."""
        leases = [held.lease() for held in self._fanouts.values()]
        self._fanouts.clear()
        if not leases:
            return
        try:
            async with self._pool.acquire(timeout=self._settings.db_timeout) as conn:
                await store.keep_fanout(conn, leases, 0.0, release=True)
        except Exception as exc:
            logger.warning("fan-out leases not handed back (they pass in %.0f s): %r", self._lease, exc)

    async def stop(self) -> None:
        """Stop claiming and reading; give attempts in flight a moment to finish, cancel the rest (their leases run
        out and another process, or this one restarted, tries them again); record what finished; hand the fan-out
        leases back."""
        self._stop.set()
        self._wake.set()
        self._claim_more.set()
        for loop in (self._task, self._claimer, self._gauges):
            if loop is not None:
                await loop
        self._task = self._claimer = self._gauges = None
        self._ready.clear()  # claimed, never attempted: their leases pass and they are due again
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=min(STOP_GRACE, self._timeout))
            for task in late:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*late, return_exceptions=True)
        if self._recorder is not None:
            self._attempts_over = True
            self._recorded.set()
            await self._recorder
            self._recorder = None
        # Retries being made due stop after their current step (`_stop`); what they did not reach keeps its time.
        await asyncio.gather(*self._pulling.values(), return_exceptions=True)
        await self._hand_back_leases()
        if self._session is not None:
            await self._session.close()
