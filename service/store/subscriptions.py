"""Subscriptions and deliveries: the SQL of the CRUD API, the dispatcher's fan-out and claims, and replays.

Every claim is `FOR UPDATE SKIP LOCKED`: processes dispatching at once take different subscriptions and
deliveries and never wait on each other. No transaction stays open across an HTTP call.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg

from service.store.events import Cursor, present
from service.store.messages import Connection, json_rows

VIEW_COLUMNS = (
    "id, url, description, filter::text AS filter, enabled, disabled_reason, created_at, updated_at, failing_since"
)
# What PATCH may change, and nothing else reaches the SET clause.
UPDATABLE = ("url", "description", "filter", "enabled")


async def new_id(conn: Connection) -> int:
    """The id the next subscription will have: its secret is sealed with the id bound in before the insert."""
    return int(await conn.fetchval("SELECT nextval(pg_get_serial_sequence('subscriptions', 'id'))"))


async def create(
    conn: Connection, subscription_id: int, url: str, description: str | None, filter_json: dict[str, Any], secret: str
) -> asyncpg.Record:
    """A new subscription whose cursor is the feed's present: it gets only events committed after it."""
    start = await present(conn)
    return await conn.fetchrow(
        f"""
        INSERT INTO subscriptions (id, url, description, filter, secret, cursor_tx, cursor_position)
        VALUES ($1, $2, $3, $4::jsonb, $5, $6::text::xid8, $7)
        RETURNING {VIEW_COLUMNS}
        """,
        subscription_id,
        url,
        description,
        json.dumps(filter_json),
        secret,
        str(start.tx),
        start.position,
    )


async def get(conn: Connection, subscription_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {VIEW_COLUMNS} FROM subscriptions WHERE id = $1", subscription_id)


async def list_page(conn: Connection, limit: int, after_id: int | None) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {VIEW_COLUMNS} FROM subscriptions WHERE ($1::bigint IS NULL OR id > $1) ORDER BY id LIMIT $2",
        after_id,
        limit,
    )


async def update(conn: Connection, subscription_id: int, changes: dict[str, Any]) -> asyncpg.Record | None:
    """Change the given fields. Enabling again clears why it was disabled and its failing streak."""
    sets: list[str] = ["updated_at = now()"]
    args: list[Any] = [subscription_id]
    for name, value in changes.items():
        if name not in UPDATABLE:
            raise ValueError(f"{name} is not a field a PATCH changes")
        args.append(json.dumps(value) if name == "filter" else value)
        sets.append(f"{name} = ${len(args)}{'::jsonb' if name == 'filter' else ''}")
    if changes.get("enabled") is True:
        sets += ["disabled_reason = NULL", "failing_since = NULL"]
    elif changes.get("enabled") is False:
        sets.append("disabled_reason = 'disabled by PATCH'")
    return await conn.fetchrow(
        f"UPDATE subscriptions SET {', '.join(sets)} WHERE id = $1 RETURNING {VIEW_COLUMNS}", *args
    )


async def delete(conn: Connection, subscription_id: int) -> bool:
    return await conn.fetchval("DELETE FROM subscriptions WHERE id = $1 RETURNING true", subscription_id) is not None


async def rotate(conn: Connection, subscription_id: int, sealed_new: str, until: datetime) -> asyncpg.Record | None:
    """The new secret signs from now on; the current one goes on signing beside it until `until`."""
    return await conn.fetchrow(
        f"""
        UPDATE subscriptions SET previous_secret = secret, previous_secret_until = $3, secret = $2,
               updated_at = now()
        WHERE id = $1 RETURNING {VIEW_COLUMNS}
        """,
        subscription_id,
        sealed_new,
        until,
    )


# --- the dispatcher's transactions --------------------------------------------------------------------------


async def commit_without_flush(conn: Connection) -> None:
    """This transaction's commit does not wait for its WAL to reach disk (`synchronous_commit` off, for it
    alone). For the dispatcher's own writes only: a queued, claimed or recorded delivery that a database crash
    loses in the fraction of a second before the WAL writer flushes it is queued, claimed or attempted again
    (at least once: a duplicate, never a loss; the events themselves were committed by ingest, which waits).
    Under load these commits would otherwise each wait on a WAL flush beside ingest's, which every
    acknowledged report waits on."""
    await conn.execute("SET LOCAL synchronous_commit = off")


# --- fan-out ---------------------------------------------------------------------------------------------


class Target(NamedTuple):
    """What an attempt needs of its subscription: where to POST, and the secrets that sign (sealed)."""

    subscription_id: int
    url: str
    secret: str
    previous_secret: str | None
    previous_secret_until: datetime | None
    failing_since: datetime | None


class ClaimedDelivery(NamedTuple):
    """A delivery this process attempts: what its attempt sends, and to whom. `id` None: an event read by the
    fan-out, whose delivery is written when its first attempt ends (`record_attempts`); otherwise a queued
    delivery this process holds the lease of (`claim_due`)."""

    id: int | None
    event_id: str
    event_at: datetime
    body: bytes | None  # None: not kept (see `record_attempts`), to be made again from the feed
    kept: bool  # the delivery's row holds the body
    attempt_count: int
    target: Target


class FanoutSubscription(NamedTuple):
    """An enabled subscription, as the fan-out sees it: its filter (JSON text), its target, and who holds its
    fan-out lease (None: nobody, or the lease has passed). Its cursor comes with the lease (`take_fanout`)."""

    filter: str
    target: Target
    owner: UUID | None


@dataclass(frozen=True, slots=True)
class FanoutLease:
    """A fan-out lease this process holds (taken with `token`), to renew, and the cursor to move it to: every event
    before it has its delivery written (or none, its filter not matching)."""

    subscription_id: int
    token: UUID
    cursor: Cursor


_TARGET = ("url", "secret", "previous_secret", "previous_secret_until", "failing_since")


def _target(subscription_id: int, row: asyncpg.Record) -> Target:
    """A row holding the `_TARGET` columns."""
    return Target(subscription_id, *(row[column] for column in _TARGET))


async def fanout_subscriptions(conn: Connection) -> list[FanoutSubscription]:
    """The enabled subscriptions, each with who holds its fan-out lease now. Nothing is locked: a lease is taken
    (`take_fanout`) and kept (`keep_fanout`) by statements that check it."""
    rows = await conn.fetch(
        f"""
        SELECT id, filter::text AS filter, {", ".join(_TARGET)},
               CASE WHEN fanout_until > now() THEN fanout_owner END AS owner
        FROM subscriptions WHERE enabled ORDER BY id
        """
    )
    return [FanoutSubscription(r["filter"], _target(r["id"], r), r["owner"]) for r in rows]


async def take_fanout(conn: Connection, subscription_id: int, token: UUID, lease: float) -> Cursor | None:
    """Take a subscription's fan-out lease for `lease` seconds, if it is enabled and nobody holds it (or its
    holder let it pass): the cursor to read its events from, or None. `token` is new for each take, so that a
    holder whose lease passed and was taken knows it no longer holds it (`keep_fanout`)."""
    row = await conn.fetchrow(
        """
        UPDATE subscriptions SET fanout_owner = $2, fanout_until = now() + make_interval(secs => $3)
        WHERE id = $1 AND enabled AND (fanout_until IS NULL OR fanout_until <= now())
        RETURNING cursor_tx::text AS cursor_tx, cursor_position
        """,
        subscription_id,
        token,
        lease,
    )
    return None if row is None else Cursor(int(row["cursor_tx"]), row["cursor_position"])


# The leases' renewal and cursors, as a JSON document's rows (`_lease_rows`): a cursor only ever moves forward.
_KEEP_LEASE = """
    fanout_until = CASE WHEN s.fanout_owner = u.token THEN {until} ELSE s.fanout_until END,
    fanout_owner = CASE WHEN s.fanout_owner = u.token THEN {owner} ELSE s.fanout_owner END,
    cursor_tx = CASE WHEN s.fanout_owner = u.token AND (u.tx::xid8, u.position) > (s.cursor_tx, s.cursor_position)
                     THEN u.tx::xid8 ELSE s.cursor_tx END,
    cursor_position = CASE WHEN s.fanout_owner = u.token
                                AND (u.tx::xid8, u.position) > (s.cursor_tx, s.cursor_position)
                           THEN u.position ELSE s.cursor_position END
"""


def _lease_rows(leases: Sequence[FanoutLease]) -> dict[int, dict[str, Any]]:
    return {
        lease.subscription_id: {
            "id": lease.subscription_id,
            "token": str(lease.token),
            "tx": str(lease.cursor.tx),
            "position": lease.cursor.position,
        }
        for lease in leases
    }


async def keep_fanout(
    conn: Connection, leases: Sequence[FanoutLease], lease: float, *, release: bool = False
) -> set[int]:
    """Renew these leases for `lease` seconds (or, `release`, hand them back: the next fan-out of any process takes
    them at once) and move their cursors: the subscriptions whose lease this process still held."""
    if not leases:
        return set()
    rows = await conn.fetch(
        f"""
        UPDATE subscriptions AS s SET {
            _KEEP_LEASE.format(
                until="NULL" if release else "now() + make_interval(secs => $2::float8)",
                owner="NULL" if release else "s.fanout_owner",
            )
        }
        FROM json_to_recordset($1::json) AS u(id bigint, token uuid, tx text, position bigint)
        WHERE s.id = u.id AND s.fanout_owner = u.token
        RETURNING s.id
        """,
        json_rows(sorted(_lease_rows(leases).values(), key=lambda row: row["id"])),
        *(() if release else (lease,)),
    )
    return {row["id"] for row in rows}


async def queue_deliveries(
    conn: Connection,
    fanout: FanoutLease,
    lease: float,
    events: Sequence[tuple[str, datetime, bytes]],
    first_wait: float,
) -> bool:
    """A pending delivery per (event id, event time, body), due `first_wait` seconds on, and the subscription's
    cursor moved to the lease's, in one statement, if this process still holds the fan-out lease (renewed):
    whether it did. An event already queued for it stays as it is. For a schedule whose first attempt waits: the
    deliveries are claimed when due (`claim_due`)."""
    held = await conn.fetchval(
        f"""
        WITH moved AS (
            UPDATE subscriptions AS s SET {
            _KEEP_LEASE.format(until="now() + make_interval(secs => $6::float8)", owner="s.fanout_owner")
        }
            FROM (SELECT $1::bigint AS id, $7::uuid AS token, $8::text AS tx, $9::bigint AS position) AS u
            WHERE s.id = u.id AND s.fanout_owner = u.token
            RETURNING s.id
        ), queued AS (
            INSERT INTO deliveries (subscription_id, event_id, event_at, body, state, next_attempt_at)
            SELECT moved.id, e.id, e.at, e.body, 'pending', now() + make_interval(secs => $5::float8)
            FROM moved, unnest($2::text[], $3::timestamptz[], $4::bytea[]) AS e(id, at, body)
            ON CONFLICT (subscription_id, event_id) DO NOTHING
        )
        SELECT count(*) FROM moved
        """,
        fanout.subscription_id,
        [e[0] for e in events],
        [e[1] for e in events],
        [e[2] for e in events],
        first_wait,
        lease,
        fanout.token,
        str(fanout.cursor.tx),
        fanout.cursor.position,
    )
    return bool(held)


# --- delivery ----------------------------------------------------------------------------------------------

# A delivery no dispatcher holds: never claimed, or its claim's lease has passed (that dispatcher died).
_NOT_LEASED = "(leased_until IS NULL OR leased_until <= now())"


async def subscriptions_due(conn: Connection) -> list[int]:
    """Enabled subscriptions with at least one delivery due now (and not leased)."""
    rows = await conn.fetch(
        f"""
        SELECT s.id FROM subscriptions AS s
        WHERE s.enabled AND EXISTS (
            SELECT 1 FROM deliveries AS d
            WHERE d.subscription_id = s.id AND d.state = 'pending' AND d.next_attempt_at <= now() AND {_NOT_LEASED}
        )
        ORDER BY s.id
        """
    )
    return [row[0] for row in rows]


async def claim_due(conn: Connection, subscription_id: int, limit: int, lease: float) -> list[ClaimedDelivery]:
    """Up to `limit` due deliveries of one subscription, leased for `lease` seconds, so that no other process
    takes them while this one tries, and any process does once the lease has passed without a result (this one
    died). The lease is a column no index holds: the claim is a HOT update, no index entry written."""
    rows = await conn.fetch(
        f"""
        WITH due AS (
            SELECT id FROM deliveries
            WHERE subscription_id = $1 AND state = 'pending' AND next_attempt_at <= now() AND {_NOT_LEASED}
            ORDER BY next_attempt_at LIMIT $2
            FOR UPDATE SKIP LOCKED
        )
        UPDATE deliveries AS d SET leased_until = now() + make_interval(secs => $3)
        FROM due, subscriptions AS s
        WHERE d.id = due.id AND s.id = d.subscription_id AND s.enabled
        RETURNING d.id, d.event_id, d.event_at, d.body, d.attempt_count, {", ".join(f"s.{c}" for c in _TARGET)}
        """,
        subscription_id,
        limit,
        lease,
    )
    if not rows:
        return []
    target = _target(subscription_id, rows[0])
    return [
        ClaimedDelivery(
            r["id"], r["event_id"], r["event_at"], r["body"], r["body"] is not None, r["attempt_count"], target
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt to write back: the delivery's new state, and the attempt appended to its list. Of a delivery
    not written yet (`delivery_id` None, a first attempt of the fan-out's): the delivery, made with it."""

    delivery_id: int | None
    subscription_id: int
    event_id: str
    event_at: datetime
    attempt: dict[str, Any]
    state: str
    next_attempt_at: datetime | None
    body: bytes | None  # to keep, when the row does not hold it yet; a delivered delivery keeps none

    def row(self) -> dict[str, Any]:
        return {
            "id": self.delivery_id,
            "subscription_id": self.subscription_id,
            "event_id": self.event_id,
            "event_at": self.event_at,
            "attempt": self.attempt,
            "state": self.state,
            "next_at": self.next_attempt_at,
            "body": None if self.body is None else self.body.decode(),
        }


@dataclass(frozen=True, slots=True)
class StreakChange:
    """A subscription's failing streak after a batch of its attempts (`policy.streak`), and why it is to be
    disabled, if it is."""

    subscription_id: int
    ended: bool  # a success came: the streak it had is over
    since: datetime | None  # when the failing left after the batch began; None when there is none
    disable: str | None


# A JSON document's rows, one per attempt (`AttemptRecord.row`): one orjson call, where asyncpg would encode each
# element of five arrays in Python. A body is JSON text: it travels as a string.
_ATTEMPTS = """json_to_recordset($1::json) AS a(
    id bigint, subscription_id bigint, event_id text, event_at timestamptz, attempt jsonb, state text,
    next_at timestamptz, body text)"""


async def record_attempts(
    conn: Connection,
    attempts: Sequence[AttemptRecord],
    streaks: Sequence[StreakChange],
    leases: Sequence[FanoutLease] = (),
    lease: float = 0.0,
) -> set[int]:
    """Attempts of any number of deliveries and subscriptions in one transaction: each subscription's failing
    streak and disabling, and the fan-out leases renewed (for `lease` seconds) with their cursors moved past the
    deliveries written here, in one statement; each queued delivery's new state with its attempt appended; each
    delivery not written yet inserted with its first attempt (none for a subscription deleted meanwhile, and an
    event that has one already keeps it). Returns the subscriptions whose lease this process still held.

    A subscription whose streak the batch leaves as it was (nearly always: answering, or still failing since the
    same time) and whose lease is not given is not written."""
    by_id: dict[int, dict[str, Any]] = _lease_rows(leases)
    for change in streaks:
        by_id.setdefault(change.subscription_id, {"id": change.subscription_id}).update(
            streak=True, ended=change.ended, since=change.since, disable=change.disable
        )
    # In id order, as every statement writing several subscriptions takes them: two processes recording at once
    # do not wait on each other in a cycle.
    subscriptions = [by_id[key] for key in sorted(by_id)]
    queued = [a.row() for a in attempts if a.delivery_id is not None]
    first = [a.row() for a in attempts if a.delivery_id is None]
    async with conn.transaction():
        await commit_without_flush(conn)
        held: set[int] = set()
        if subscriptions:
            rows = await conn.fetch(
                f"""
                UPDATE subscriptions AS s SET
                    failing_since = CASE WHEN NOT u.streak THEN s.failing_since WHEN u.ended THEN u.since
                                         ELSE coalesce(s.failing_since, u.since) END,
                    enabled = s.enabled AND NOT (u.streak AND u.disable IS NOT NULL),
                    disabled_reason = CASE WHEN u.streak AND s.enabled AND u.disable IS NOT NULL THEN u.disable
                                           ELSE s.disabled_reason END,
                    {_KEEP_LEASE.format(until="now() + make_interval(secs => $2::float8)", owner="s.fanout_owner")}
                FROM (
                    SELECT id, token, tx, position, coalesce(streak, false) AS streak, ended, since, disable
                    FROM json_to_recordset($1::json) AS j(
                        id bigint, token uuid, tx text, position bigint, streak bool, ended bool, since timestamptz,
                        disable text)
                ) AS u
                WHERE s.id = u.id AND (
                    s.fanout_owner = u.token
                    OR (u.streak AND (
                        s.failing_since IS DISTINCT FROM
                            CASE WHEN u.ended THEN u.since ELSE coalesce(s.failing_since, u.since) END
                        OR (s.enabled AND u.disable IS NOT NULL))))
                RETURNING s.id, s.fanout_owner = u.token AS held
                """,
                json_rows(subscriptions),
                lease,
            )
            held = {row["id"] for row in rows if row["held"]}
        if queued:
            await conn.execute(
                f"""
                UPDATE deliveries AS d SET attempts = d.attempts || jsonb_build_array(a.attempt),
                       attempt_count = d.attempt_count + 1, state = a.state, next_attempt_at = a.next_at,
                       leased_until = NULL, updated_at = now(),
                       body = CASE WHEN a.state = 'delivered' THEN NULL
                                   ELSE coalesce(d.body, convert_to(a.body, 'UTF8')) END
                FROM {_ATTEMPTS}
                WHERE d.id = a.id
                """,
                json_rows(queued),
            )
        if first:
            await conn.execute(
                f"""
                INSERT INTO deliveries (subscription_id, event_id, event_at, body, state, attempt_count, attempts,
                                        next_attempt_at)
                SELECT a.subscription_id, a.event_id, a.event_at,
                       CASE WHEN a.state = 'delivered' THEN NULL ELSE convert_to(a.body, 'UTF8') END,
                       a.state, 1, jsonb_build_array(a.attempt), a.next_at
                FROM {_ATTEMPTS}
                JOIN subscriptions AS s ON s.id = a.subscription_id
                ON CONFLICT (subscription_id, event_id) DO NOTHING
                """,
                json_rows(first),
            )
    return held


async def fail_unsendable(conn: Connection, delivery_ids: Sequence[int], why: str) -> None:
    """Claimed deliveries that cannot be sent at all: failed, an attempt saying why appended, lease ended."""
    await conn.execute(
        """
        UPDATE deliveries SET state = 'failed', next_attempt_at = NULL, leased_until = NULL, updated_at = now(),
               attempts = attempts || jsonb_build_array(jsonb_build_object(
                   'at', now(), 'status', NULL, 'error', $2::text, 'duration', 0)),
               attempt_count = attempt_count + 1
        WHERE id = any($1::bigint[])
        """,
        list(delivery_ids),
        why,
    )


async def retry_now(conn: Connection, subscription_id: int, beyond: float, limit: int) -> int:
    """Make up to `limit` of a subscription's deliveries waiting for a retry due now (its subscriber is back),
    the soonest first: how many. Only those not leased and due more than `beyond` seconds on: an attempt in
    flight must not get a second one beside it (the lease says so; `beyond` still does for deliveries claimed
    before migration 0014, whose lease pushed `next_attempt_at`). In steps, each its own short transaction: after
    a long outage there are hundreds of thousands, and one statement over all of them outlasted the statement
    timeout."""
    async with conn.transaction():
        await commit_without_flush(conn)
        status = await conn.execute(
            f"""
            WITH pulled AS (
                SELECT id FROM deliveries
                WHERE subscription_id = $1 AND state = 'pending' AND next_attempt_at > now() + make_interval(secs => $2)
                      AND {_NOT_LEASED}
                ORDER BY next_attempt_at LIMIT $3
                FOR UPDATE SKIP LOCKED
            )
            UPDATE deliveries AS d SET next_attempt_at = now() FROM pulled WHERE d.id = pulled.id
            """,
            subscription_id,
            beyond,
            limit,
        )
    return int(status.split()[-1])


# --- the deliveries API ----------------------------------------------------------------------------------


async def list_deliveries(
    conn: Connection, subscription_id: int, state: str | None, limit: int, before_id: int | None
) -> list[asyncpg.Record]:
    """Newest first."""
    return await conn.fetch(
        """
        SELECT id, event_id, event_at, state, attempt_count, attempts::text AS attempts, next_attempt_at,
               created_at, updated_at
        FROM deliveries
        WHERE subscription_id = $1 AND ($2::text IS NULL OR state = $2) AND ($3::bigint IS NULL OR id < $3)
        ORDER BY id DESC LIMIT $4
        """,
        subscription_id,
        state,
        before_id,
        limit,
    )


async def latest_deliveries(
    conn: Connection, subscription_ids: Sequence[int], state: str | None, limit: int
) -> dict[int, list[asyncpg.Record]]:
    """The newest `limit` deliveries (of a state, if given) of each of several subscriptions, in one statement:
    the console's subscriptions page."""
    rows = await conn.fetch(
        """
        SELECT s.id AS subscription_id, d.*
        FROM unnest($1::bigint[]) AS s(id), LATERAL (
            SELECT id AS delivery_id, event_id, event_at, state, attempt_count, attempts::text AS attempts,
                   next_attempt_at, created_at, updated_at
            FROM deliveries
            WHERE subscription_id = s.id AND ($2::text IS NULL OR state = $2)
            ORDER BY id DESC LIMIT $3
        ) AS d
        ORDER BY s.id, d.delivery_id DESC
        """,
        list(subscription_ids),
        state,
        limit,
    )
    found: dict[int, list[asyncpg.Record]] = {i: [] for i in subscription_ids}
    for row in rows:
        found[row["subscription_id"]].append(row)
    return found


_REQUEUE = """
    UPDATE deliveries SET state = 'pending', attempt_count = 0, next_attempt_at = now(), leased_until = NULL,
                          updated_at = now()
    WHERE subscription_id = $1 AND state <> 'pending' AND {which}
    RETURNING event_id
"""


async def replay_since(conn: Connection, subscription_id: int, since: datetime) -> int:
    """Every delivered or failed delivery of an event from `since` on, queued again: how many."""
    rows = await conn.fetch(_REQUEUE.format(which="event_at >= $2"), subscription_id, since)
    return len(rows)


async def replay_events(conn: Connection, subscription_id: int, event_ids: Sequence[str]) -> tuple[int, list[str]]:
    """Those events' deliveries queued again: how many, and the ids this subscription has no delivery of."""
    rows = await conn.fetch(_REQUEUE.format(which="event_id = any($2::text[])"), subscription_id, list(event_ids))
    known = {
        r[0]
        for r in await conn.fetch(
            "SELECT event_id FROM deliveries WHERE subscription_id = $1 AND event_id = any($2::text[])",
            subscription_id,
            list(event_ids),
        )
    }
    return len(rows), [e for e in event_ids if e not in known]


# --- metrics -----------------------------------------------------------------------------------------------


async def backlog(conn: Connection) -> list[asyncpg.Record]:
    """Per subscription: its backlog (pending deliveries, and for an enabled one about how many events its fan-out
    has not read yet, wanted by its filter or not: a dispatcher slower than the feed leaves them there), when the
    oldest of them was made (None when there is none), and whether it is enabled.

    The unread events are not counted, they are told by positions (the feed's last one less the cursor's): a count
    reads every one, 200 ms of a benchmark's backlog every refresh, and a subscriber that hangs for hours leaves
    millions. Positions are taken at insert, so a batch undone leaves a gap and batches committing side by side
    interleave: about, not exactly. The feed's order follows time closely: its first unread event is about its
    oldest."""
    return await conn.fetch(
        """
        SELECT s.id, s.enabled,
               d.pending + CASE WHEN s.enabled THEN greatest(0, last.position - s.cursor_position) ELSE 0 END
                   AS pending,
               least(d.oldest, CASE WHEN s.enabled THEN (
                   SELECT at FROM events WHERE (tx, position) > (s.cursor_tx, s.cursor_position)
                   ORDER BY tx, position LIMIT 1) END) AS oldest
        FROM subscriptions AS s
        CROSS JOIN LATERAL (
            SELECT count(*) AS pending, min(created_at) AS oldest FROM deliveries
            WHERE subscription_id = s.id AND state = 'pending'
        ) AS d
        LEFT JOIN (SELECT position FROM events ORDER BY tx DESC, position DESC LIMIT 1) AS last ON true
        ORDER BY s.id
        """
    )


class FinishedDeliveriesPast:
    """Deletes finished (delivered or failed) deliveries last touched before `before`, a step of at most `limit`
    at a time, oldest first. SKIP LOCKED: replicas pruning at once take different rows, and a delivery being
    replayed is left alone.

    Each step starts at the last time the one before deleted, not at the index's first entry: those of the rows
    deleted earlier in the pass stay in the index, dead, until a vacuum comes by (as retention's message steps
    once did). At that time, not after it: the attempts one recorder transaction records share it."""

    def __init__(self, before: datetime, limit: int) -> None:
        self._before = before
        self._limit = limit
        self._from = datetime(1, 1, 1, tzinfo=UTC)

    async def step(self, conn: Connection) -> int:
        """Delete the next step's deliveries; return how many."""
        deleted, last = await conn.fetchrow(
            """
            WITH doomed AS (
                SELECT id FROM deliveries
                WHERE state <> 'pending' AND updated_at < $1 AND updated_at >= $3
                ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED
            ), gone AS (
                DELETE FROM deliveries AS d USING doomed WHERE d.id = doomed.id RETURNING d.updated_at
            )
            SELECT count(*), max(updated_at) FROM gone
            """,
            self._before,
            self._limit,
            self._from,
        )
        if last is not None:
            self._from = last
        return int(deleted)
