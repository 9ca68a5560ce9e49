"""Every SQL statement the service runs.

Writes lock the messages they touch in one stable order (ids sorted), so concurrent requests and
replicas never deadlock; the status engine runs between the lock and the write-back, inside the
transaction, so a report is applied against the state it was decided on.

A batch of reports is four round trips whatever its size: BEGIN, lock the existing messages, one statement
that inserts the new messages (in their state after the batch), updates the changed ones and appends the
history, COMMIT. A message another batch created meanwhile makes the insert skip a row: the transaction is
rolled back and the batch applied again (it then finds the row and locks it).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeAlias, TypeVar

import asyncpg
import orjson

from service.engine import InvalidReport, MessageState, Outcome, Reason, Report, apply_report, grow
from service.reports import IncomingReport, Registration
from service.statuses import FINAL, Status

T = TypeVar("T")

# What pool.acquire() hands out, or a plain connection: both speak the same API.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"


@dataclass(slots=True)
class AppliedReport:
    """What applying one report did: the answer to its sender and the material for metrics."""

    message_id: str
    status: Status
    applied: bool
    reason: Reason | None
    message_from: Status
    transitions: tuple[tuple[int, Status, Status], ...] = ()
    delivery_seconds: float | None = None  # set when this report made the message DELIVRD


@dataclass(slots=True)
class _Row:
    """A locked message row being changed in memory before its single write-back."""

    state: MessageState
    segment_updated_at: list[datetime]
    recipient: str | None
    campaign: str | None
    error: str | None
    sent_at: datetime
    expires_at: datetime
    final_at: datetime | None
    registered_at: datetime | None
    updated_at: datetime
    dirty: bool = False
    created_at: datetime | None = None  # set on a row this batch creates: it is inserted, not updated
    seen_events: set[tuple[str, str]] = field(default_factory=set)
    last_sequence: dict[str, int] = field(default_factory=dict)


_LOCK_COLUMNS = """
    id, status, partial, segment_statuses, segment_updated_at, recipient, campaign, error,
    sent_at, expires_at, final_at, registered_at, updated_at
"""


# A dict lookup: calling Status(value) goes through the enum machinery, a microsecond per segment.
_STATUS_BY_VALUE: dict[str, Status] = {s.value: s for s in Status}


def _row_from_record(record: asyncpg.Record) -> _Row:
    return _Row(
        state=MessageState(
            segments=tuple(_STATUS_BY_VALUE[s] for s in record["segment_statuses"]),
            status=_STATUS_BY_VALUE[record["status"]],
            partial=record["partial"],
        ),
        segment_updated_at=list(record["segment_updated_at"]),
        recipient=record["recipient"],
        campaign=record["campaign"],
        error=record["error"],
        sent_at=record["sent_at"],
        expires_at=record["expires_at"],
        final_at=record["final_at"],
        registered_at=record["registered_at"],
        updated_at=record["updated_at"],
    )


async def _lock(conn: Connection, ids: Iterable[str]) -> dict[str, _Row]:
    records = await conn.fetch(
        f"SELECT {_LOCK_COLUMNS} FROM messages WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
        sorted(set(ids)),
    )
    return {r["id"]: _row_from_record(r) for r in records}


_UPDATE_MESSAGES = """
    UPDATE messages AS m SET
        status = u.status, partial = u.partial,
        segment_statuses = u.segment_statuses, segment_updated_at = u.segment_updated_at,
        recipient = u.recipient, campaign = u.campaign, error = u.error,
        sent_at = u.sent_at, expires_at = u.expires_at, final_at = u.final_at,
        registered_at = u.registered_at, updated_at = u.updated_at
    FROM json_to_recordset($1::json) AS u(
        id text, status text, partial boolean, segment_statuses text[], segment_updated_at timestamptz[],
        recipient text, campaign text, error text, sent_at timestamptz, expires_at timestamptz,
        final_at timestamptz, registered_at timestamptz, updated_at timestamptz)
    WHERE m.id = u.id
"""
_INSERT_HISTORY = """
    INSERT INTO history (message_id, status, raw_status, segment, event_time, received_at, source,
                         applied, reason, error, event_id, sequence)
    SELECT message_id, status, raw_status, segment, event_time, received_at, source, applied, reason, error,
           event_id, sequence
    FROM json_to_recordset($2::json) AS h(
        message_id text, status text, raw_status text, segment int, event_time timestamptz,
        received_at timestamptz, source text, applied boolean, reason text, error text, event_id text,
        sequence bigint)
"""
# The batch travels as JSON documents rather than two dozen typed arrays: one orjson call, where
# asyncpg would encode every element of every array in Python.
_WRITE_BACK = f"WITH updated AS ({_UPDATE_MESSAGES}){_INSERT_HISTORY}"
# The same, inserting the messages the batch creates, in their state after it ($3). ON CONFLICT: another
# transaction created one meanwhile; the count tells, and the batch is applied again.
_WRITE_BACK_CREATING = f"""
WITH created AS (
    INSERT INTO messages (id, status, partial, segment_statuses, segment_updated_at, recipient, campaign, error,
                          sent_at, expires_at, final_at, registered_at, updated_at, created_at)
    SELECT c.id, c.status, c.partial, c.segment_statuses, c.segment_updated_at, c.recipient, c.campaign, c.error,
           c.sent_at, c.expires_at, c.final_at, c.registered_at, c.updated_at, c.created_at
    FROM json_to_recordset($3::json) AS c(
        id text, status text, partial boolean, segment_statuses text[], segment_updated_at timestamptz[],
        recipient text, campaign text, error text, sent_at timestamptz, expires_at timestamptz,
        final_at timestamptz, registered_at timestamptz, updated_at timestamptz, created_at timestamptz)
    ORDER BY c.id
    ON CONFLICT (id) DO NOTHING
    RETURNING 1
), updated AS ({_UPDATE_MESSAGES}), logged AS ({_INSERT_HISTORY} RETURNING 1)
SELECT count(*) FROM created
"""


def _json(rows: list[dict[str, Any]]) -> str:
    # orjson writes datetimes (ISO-8601 with their offset) and StrEnum members itself, in C.
    return orjson.dumps(rows).decode()


class CreatedElsewhere(Exception):
    """A message this batch took for new was created by another transaction meanwhile: apply it again."""


def _message_json(i: str, r: _Row) -> dict[str, Any]:
    return {
        "id": i,
        # StrEnum members are str: json writes them as their values (`.value` is a slow descriptor).
        "status": r.state.status,
        "partial": r.state.partial,
        "segment_statuses": r.state.segments,
        "segment_updated_at": r.segment_updated_at,
        "recipient": r.recipient,
        "campaign": r.campaign,
        "error": r.error,
        "sent_at": r.sent_at,
        "expires_at": r.expires_at,
        "final_at": r.final_at,
        "registered_at": r.registered_at,
        "updated_at": r.updated_at,
    }


async def _write_back(conn: Connection, rows: dict[str, _Row], history: Sequence[_HistoryRow] = ()) -> None:
    """Insert the messages this batch creates, write the changed ones and append the history rows, in one
    statement. The rows are locked (or new) already, so nothing here waits on anyone -- except an insert
    that meets a row another transaction created meanwhile, which raises CreatedElsewhere.
    """
    new = sorted(i for i, r in rows.items() if r.created_at is not None)
    dirty = sorted(i for i, r in rows.items() if r.dirty and r.created_at is None)
    if not new and not dirty and not history:
        return
    messages = [_message_json(i, rows[i]) for i in dirty]
    if new:
        created = [{**_message_json(i, rows[i]), "created_at": rows[i].created_at} for i in new]
        events = _history_json(history)
        inserted = await conn.fetchval(_WRITE_BACK_CREATING, _json(messages), _json(events), _json(created))
        if inserted != len(new):
            raise CreatedElsewhere()
        return
    await conn.execute(_WRITE_BACK, _json(messages), _json(_history_json(history)))


def _history_json(history: Sequence[_HistoryRow]) -> list[dict[str, Any]]:
    return [
        {
            "message_id": h.message_id,
            "status": h.status,
            "raw_status": h.raw_status,
            "segment": h.segment,
            "event_time": h.event_time,
            "received_at": h.received_at,
            "source": h.source,
            "applied": h.applied,
            "reason": h.reason,
            "error": h.error,
            "event_id": h.event_id,
            "sequence": h.sequence,
        }
        for h in history
    ]


async def apply_reports(conn: Connection, reports: Sequence[IncomingReport], *, lifetime: int) -> list[AppliedReport]:
    """Apply reports in arrival order, in one transaction; one answer per report, in the same order.

    One report is simply a batch of one: there is no separate single-report path.
    """
    return await _retrying_races(lambda: _apply_batch(conn, reports, lifetime))


# What a message created by another transaction between our lock and our insert can raise: the insert
# skipping it, its history's event-id index meeting the other batch's row, or (rarely) a deadlock while the
# two inserts wait on each other. None of them leaves anything behind: the transaction is rolled back.
_RACES = (CreatedElsewhere, asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError)
_RACE_ATTEMPTS = 3


async def _retrying_races(attempt: Callable[[], Awaitable[T]]) -> T:
    for _ in range(_RACE_ATTEMPTS - 1):
        try:
            return await attempt()
        except _RACES:
            continue  # rolled back: tried again, the message another batch created is now found and locked
    return await attempt()


async def _apply_batch(conn: Connection, reports: Sequence[IncomingReport], lifetime: int) -> list[AppliedReport]:
    async with conn.transaction():
        reports = await _match_zero_padded(conn, reports)
        first: dict[str, IncomingReport] = {}
        for r in reports:
            first.setdefault(r.message_id, r)
        rows = await _lock(conn, first)
        created = {i for i in first if i not in rows}
        for message_id in created:
            r = first[message_id]
            rows[message_id] = _new_row(
                r.recipient, r.campaign, r.event_time or r.received_at, r.received_at, 1, lifetime
            )
        await _load_seen_events(conn, rows, reports)
        await _load_sequences(conn, rows, reports)

        answers = []
        for r in reports:
            answer = _apply_one(rows[r.message_id], r)
            if r.message_id in created:
                # The report that created the message is news even when it says NEW, the state a new
                # message starts in: it is applied and kept, not taken for a duplicate of nothing.
                created.discard(r.message_id)
                if answer.reason is Reason.DUPLICATE:
                    answer = replace(answer, applied=True, reason=None)
            answers.append(answer)
        history = [
            _report_history(r, a) for r, a in zip(reports, answers, strict=True) if a.reason is not Reason.DUPLICATE
        ]
        await _write_back(conn, rows, history)
    return answers


def _new_row(
    recipient: str | None, campaign: str | None, sent_at: datetime, now: datetime, segments: int, lifetime: int
) -> _Row:
    """A message this transaction creates: its segments at NEW. It is inserted by the write-back."""
    return _Row(
        state=MessageState((Status.NEW,) * segments, Status.NEW),
        segment_updated_at=[now] * segments,
        recipient=recipient,
        campaign=campaign,
        error=None,
        sent_at=sent_at,
        expires_at=sent_at + timedelta(seconds=lifetime),
        final_at=None,
        registered_at=None,
        updated_at=now,
        created_at=now,
    )


async def _match_zero_padded(conn: Connection, reports: Sequence[IncomingReport]) -> Sequence[IncomingReport]:
    """Point zero-padding-tolerant reports at the stored message whose id differs only in leading zeros.

    The id as sent wins when it exists; otherwise the first stored match (ids ordered) takes the report.
    """
    wanted = {r.message_id.lstrip("0") for r in reports if r.match_zero_padded}
    if not wanted:
        return reports
    records = await conn.fetch(
        "SELECT id FROM messages WHERE ltrim(id, '0') = ANY($1::text[]) ORDER BY id", sorted(wanted)
    )
    stored = {rec["id"] for rec in records}
    by_key: dict[str, str] = {}
    for rec in records:
        by_key.setdefault(rec["id"].lstrip("0"), rec["id"])
    return [
        replace(r, message_id=by_key[r.message_id.lstrip("0")])
        if r.match_zero_padded and r.message_id not in stored and r.message_id.lstrip("0") in by_key
        else r
        for r in reports
    ]


async def _load_seen_events(conn: Connection, rows: dict[str, _Row], reports: Sequence[IncomingReport]) -> None:
    with_events = [r for r in reports if r.event_id is not None]
    if not with_events:
        return
    records = await conn.fetch(
        """
        SELECT message_id, source, event_id FROM history
        WHERE message_id = ANY($1::text[]) AND event_id = ANY($2::text[])
        """,
        sorted({r.message_id for r in with_events}),
        sorted({r.event_id for r in with_events if r.event_id is not None}),
    )
    for rec in records:
        rows[rec["message_id"]].seen_events.add((rec["source"], rec["event_id"]))


async def _load_sequences(conn: Connection, rows: dict[str, _Row], reports: Sequence[IncomingReport]) -> None:
    with_sequence = sorted({r.message_id for r in reports if r.sequence is not None})
    if not with_sequence:
        return
    records = await conn.fetch(
        """
        SELECT message_id, source, max(sequence) AS last FROM history
        WHERE message_id = ANY($1::text[]) AND sequence IS NOT NULL GROUP BY message_id, source
        """,
        with_sequence,
    )
    for rec in records:
        rows[rec["message_id"]].last_sequence[rec["source"]] = rec["last"]


def _apply_one(row: _Row, incoming: IncomingReport) -> AppliedReport:
    before = row.state
    if incoming.event_id is not None:
        key = (incoming.source, incoming.event_id)
        if key in row.seen_events:
            return AppliedReport(incoming.message_id, before.status, False, Reason.DUPLICATE, before.status)
        row.seen_events.add(key)
    if incoming.sequence is not None:
        last = row.last_sequence.get(incoming.source)
        if last is not None and incoming.sequence <= last:
            return AppliedReport(incoming.message_id, before.status, False, Reason.STALE, before.status)
        row.last_sequence[incoming.source] = incoming.sequence
    try:
        outcome = _outcome(before, incoming.report)
    except InvalidReport:
        # Dialects validate first; a report the engine still refuses (a segment number past what a
        # registration fixed, say) is kept in the history as stale rather than failing its batch.
        return AppliedReport(incoming.message_id, before.status, False, Reason.STALE, before.status)
    if outcome.applied:
        _take(row, outcome, incoming)
    delivery = None
    if outcome.applied and outcome.state.status is Status.DELIVRD and before.status is not Status.DELIVRD:
        delivery = max(0.0, (incoming.received_at - row.sent_at).total_seconds())
    return AppliedReport(
        incoming.message_id,
        outcome.state.status,
        outcome.applied,
        outcome.reason,
        outcome.message_from,
        outcome.transitions,
        delivery,
    )


# apply_report is pure and its inputs and Outcome are frozen values, while traffic repeats a few patterns
# (a one-part message at NEW taking ACCEPTD, at ACCEPTD taking DELIVRD, ...): remembering the outcomes
# spares the engine's work for almost every report. Bounded: odd segment mixes are computed each time.
_OUTCOMES: dict[tuple[MessageState, Report], Outcome] = {}
_MAX_OUTCOMES = 4096


def _outcome(state: MessageState, report: Report) -> Outcome:
    key = (state, report)
    found = _OUTCOMES.get(key)
    if found is None:
        found = apply_report(state, report)
        if len(_OUTCOMES) < _MAX_OUTCOMES:
            _OUTCOMES[key] = found
    return found


def _take(row: _Row, outcome: Outcome, incoming: IncomingReport) -> None:
    now = incoming.received_at
    state = outcome.state
    stamps = row.segment_updated_at + [now] * (len(state.segments) - len(row.segment_updated_at))
    for segment, _old, _new in outcome.transitions:
        stamps[segment - 1] = now
    row.state = state
    row.segment_updated_at = stamps
    row.recipient = row.recipient or incoming.recipient
    row.campaign = row.campaign or incoming.campaign
    if incoming.error is not None:
        row.error = incoming.error
    if state.status in FINAL and row.final_at is None:
        row.final_at = now
    row.updated_at = now
    row.dirty = True


@dataclass(slots=True)
class _HistoryRow:
    message_id: str
    status: str | None
    raw_status: str | None
    segment: int | None
    event_time: datetime | None
    received_at: datetime
    source: str
    applied: bool
    reason: str | None
    error: str | None
    event_id: str | None
    sequence: int | None = None


def _report_history(r: IncomingReport, a: AppliedReport) -> _HistoryRow:
    return _HistoryRow(
        r.message_id,
        r.report.status,
        r.raw_status,
        r.report.segment,
        r.event_time,
        r.received_at,
        r.source,
        a.applied,
        a.reason,
        r.error,
        r.event_id,
        r.sequence,
    )


async def register_messages(
    conn: Connection, registrations: Sequence[Registration], *, lifetime: int
) -> list[tuple[str, Status, bool]]:
    """Register sent messages: fill in metadata, never touch statuses. Returns (id, status, created)."""
    return await _retrying_races(lambda: _register_batch(conn, registrations, lifetime))


async def _register_batch(
    conn: Connection, registrations: Sequence[Registration], lifetime: int
) -> list[tuple[str, Status, bool]]:
    async with conn.transaction():
        first: dict[str, Registration] = {}
        for reg in registrations:
            first.setdefault(reg.message_id, reg)
        rows = await _lock(conn, first)
        created = {i for i in first if i not in rows}
        for message_id in created:
            reg = first[message_id]
            sent_at = reg.sent_at or reg.received_at
            rows[message_id] = _new_row(
                reg.recipient, reg.campaign, sent_at, reg.received_at, reg.segments or 1, lifetime
            )
        answers = []
        for reg in registrations:
            row = rows[reg.message_id]
            _register(row, reg, lifetime)
            answers.append((reg.message_id, row.state.status, reg.message_id in created))
        await _write_back(conn, rows)
    return answers


def _register(row: _Row, reg: Registration, lifetime: int) -> None:
    if reg.segments is not None and reg.segments > len(row.state.segments):
        grown = grow(row.state, reg.segments)
        if grown != row.state:
            missing = len(grown.segments) - len(row.segment_updated_at)
            row.segment_updated_at = row.segment_updated_at + [reg.received_at] * missing
            row.state = grown
    row.recipient = reg.recipient if reg.recipient is not None else row.recipient
    row.campaign = reg.campaign if reg.campaign is not None else row.campaign
    # The deadline follows the registration's sending time while the message is still open.
    if reg.sent_at is not None and not row.state.final:
        row.sent_at = reg.sent_at
        row.expires_at = reg.sent_at + timedelta(seconds=lifetime)
    row.registered_at = reg.received_at
    row.updated_at = reg.received_at
    row.dirty = True


# -- expiry sweep ---------------------------------------------------------------------------------

SWEEP_SOURCE = "sweep"


_FINALS_SQL = ", ".join(f"'{s.value}'" for s in sorted(FINAL))

# The sweep applies `engine.expire` set-wise, in one statement per batch: at a million overdue messages,
# pulling every row into Python and back costs more than the sweep itself. tests/test_sweep.py checks
# this statement against `engine.expire` for every open state of 1-3 segments.
_SWEEP_SQL = f"""
WITH due AS (
    SELECT id, status FROM messages
    WHERE final_at IS NULL AND expires_at <= $1
    ORDER BY expires_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), resolved AS (
    UPDATE messages AS m SET
        status = CASE
            WHEN m.status = 'PDLIVRD' THEN coalesce(
                (SELECT u.s FROM unnest(m.segment_statuses) WITH ORDINALITY AS u(s, n)
                 WHERE u.s IN ({_FINALS_SQL}) ORDER BY u.n LIMIT 1),
                'DELIVRD')
            ELSE 'EXPIRED' END,
        segment_statuses = ARRAY(
            SELECT CASE WHEN u.s IN ({_FINALS_SQL}) THEN u.s ELSE 'EXPIRED' END
            FROM unnest(m.segment_statuses) WITH ORDINALITY AS u(s, n) ORDER BY u.n),
        segment_updated_at = ARRAY(
            SELECT CASE WHEN u.s IN ({_FINALS_SQL}) THEN u.t ELSE $1 END
            FROM unnest(m.segment_statuses, m.segment_updated_at) WITH ORDINALITY AS u(s, t, n) ORDER BY u.n),
        final_at = $1,
        updated_at = $1
    FROM due
    WHERE m.id = due.id
    RETURNING m.id, due.status AS from_status, m.status AS to_status
), logged AS (
    INSERT INTO history (message_id, status, received_at, source, applied)
    SELECT id, to_status, $1, '{SWEEP_SOURCE}', true FROM resolved
)
SELECT from_status, to_status, count(*) AS n FROM resolved GROUP BY from_status, to_status
"""


async def sweep_batch(conn: Connection, now: datetime, limit: int) -> list[tuple[Status, Status, int]]:
    """Resolve up to `limit` overdue open messages in one transaction: (from, to, how many).

    SKIP LOCKED: the sweeper never waits for a row, so it cannot deadlock with ingest or with other
    sweepers; a row another transaction holds is simply left for the next batch or the next pass.
    """
    records = await conn.fetch(_SWEEP_SQL, now, limit)
    return [(Status(r["from_status"]), Status(r["to_status"]), int(r["n"])) for r in records]


async def count_open(conn: Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM messages WHERE final_at IS NULL"))


# -- reads ---------------------------------------------------------------------------------------

_MESSAGE_COLUMNS = """
    id, status, recipient, campaign, segment_statuses, segment_updated_at, sent_at, updated_at,
    expires_at, final_at, error
"""


async def get_message(conn: Connection, message_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = $1", message_id)


async def get_messages(conn: Connection, ids: Sequence[str]) -> list[asyncpg.Record]:
    return await conn.fetch(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ANY($1::text[])", list(ids))


async def get_history(conn: Connection, message_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        """
        SELECT status, raw_status, segment, event_time, received_at, source, applied, reason, error, event_id
        FROM history WHERE message_id = $1 ORDER BY seq
        """,
        message_id,
    )


@dataclass(frozen=True, slots=True)
class MessageFilter:
    campaign: str | None = None
    status: Status | None = None
    recipient: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_messages(
    conn: Connection, filt: MessageFilter, limit: int, after: tuple[datetime, str] | None
) -> list[asyncpg.Record]:
    """Newest first by (sent_at, id): keyset pagination, so a page costs the same at any depth."""
    clauses, args = [], []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if filt.campaign is not None:
        clauses.append(f"campaign = {arg(filt.campaign)}")
    if filt.status is not None:
        clauses.append(f"status = {arg(filt.status.value)}")
    if filt.recipient is not None:
        clauses.append(f"recipient = {arg(filt.recipient)}")
    if filt.since is not None:
        clauses.append(f"sent_at >= {arg(filt.since)}")
    if filt.until is not None:
        clauses.append(f"sent_at < {arg(filt.until)}")
    if after is not None:
        clauses.append(f"(sent_at, id) < ({arg(after[0])}, {arg(after[1])})")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    return await conn.fetch(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages {where} ORDER BY sent_at DESC, id DESC LIMIT {arg(limit)}",
        *args,
    )


async def campaign_stats(conn: Connection, campaign: str) -> dict[str, Any] | None:
    """Counts by status and delivery-time percentiles, in one pass over the campaign's index entries."""
    records = await conn.fetch(
        """
        SELECT status, count(*) AS n,
               percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (
                   ORDER BY extract(epoch FROM final_at - sent_at)) FILTER (WHERE status = 'DELIVRD') AS p
        FROM messages WHERE campaign = $1 GROUP BY status
        """,
        campaign,
    )
    if not records:
        return None
    by_status = {s.value: 0 for s in Status}
    p = None
    for rec in records:
        by_status[rec["status"]] = rec["n"]
        if rec["status"] == Status.DELIVRD.value:
            p = rec["p"]
    total = sum(by_status.values())
    return {
        "total": total,
        "by_status": by_status,
        "final": sum(by_status[s.value] for s in FINAL),
        "delivered_ratio": by_status[Status.DELIVRD.value] / total,
        "delivery_seconds": {"p50": p[0], "p90": p[1], "p99": p[2]} if p else None,
    }


# -- quarantine ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawRequest:
    """A request as received, enough to parse it again later."""

    dialect: str
    method: str
    content_type: str | None
    query: bytes
    body: bytes


async def quarantine(
    conn: Connection, raw: RawRequest, error: Any, received_at: datetime, message_id: str | None = None
) -> int:
    return int(
        await conn.fetchval(
            """
            INSERT INTO quarantine (message_id, dialect, received_at, method, content_type, query, body, error)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb) RETURNING id
            """,
            message_id,
            raw.dialect,
            received_at,
            raw.method,
            raw.content_type,
            raw.query,
            raw.body,
            json.dumps(error),
        )
    )


async def list_quarantine(
    conn: Connection, dialect: str | None, limit: int, before_id: int | None
) -> list[asyncpg.Record]:
    return await conn.fetch(
        """
        SELECT id, dialect, received_at, method, content_type, query, body, error FROM quarantine
        WHERE ($1::text IS NULL OR dialect = $1) AND ($2::bigint IS NULL OR id < $2)
        ORDER BY id DESC LIMIT $3
        """,
        dialect,
        before_id,
        limit,
    )


async def take_quarantined(conn: Connection, item_id: int) -> asyncpg.Record | None:
    """Lock one quarantined payload for a replay (the caller's transaction decides whether it goes)."""
    return await conn.fetchrow(
        "SELECT id, dialect, method, content_type, query, body FROM quarantine WHERE id = $1 FOR UPDATE",
        item_id,
    )


async def drop_quarantined(conn: Connection, item_id: int) -> None:
    await conn.execute("DELETE FROM quarantine WHERE id = $1", item_id)


async def schema_version(conn: Connection) -> str | None:
    try:
        return await conn.fetchval("SELECT version_num FROM alembic_version LIMIT 1")
    except asyncpg.UndefinedTableError:
        return None
