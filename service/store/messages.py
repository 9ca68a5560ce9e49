"""The messages table: reading rows as `MessageRecord`s, and writing back what a `Ledger` changed.

A batch is applied in two round trips and no explicit transaction: read the messages it names (`read`),
let the ledger decide, write back in one statement (`write_back`). That statement updates a message only if
its row version (`xmin`) is still the one read, and fails whole (serialization_failure) when another
transaction changed one in between; a message another transaction created meanwhile fails it on the primary
key. Either way nothing of the batch stays, and it is decided again on what is there now (`retrying_races`),
the last time with its messages locked first (`read(..., lock=True)` inside a transaction, in one stable
order, ids sorted: concurrent writers then wait for each other and never deadlock), so that a message
changing all the time cannot starve a batch. Every change is thus applied against the state it was decided on.

The write-back inserts the messages the batch creates (in their state after the batch), updates the changed
ones, appends the history, keeps the senders' event ids and writes the event feed's rows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NamedTuple, TypeAlias, TypeVar

import asyncpg
import orjson

from service.engine import MessageState
from service.ledger import HistoryEntry, Ledger, MessageRecord, SenderEvent
from service.statuses import Status

T = TypeVar("T")

# What pool.acquire() hands out, or a plain connection: both speak the same API.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"

# Every column of a message and its SQL type, in the order of `MessageRecord`'s fields, with the record's
# `state` spelt out as the three columns it is stored in: the one list that the reads, the lock, the
# write-back and the record come from.
COLUMN_TYPES: dict[str, str] = {
    "id": "text",
    "status": "text",  # state.status
    "partial": "boolean",  # state.partial
    "segment_statuses": "text[]",  # state.segments
    "segment_updated_at": "timestamptz[]",
    "sent_at": "timestamptz",
    "expires_at": "timestamptz",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
    "recipient": "text",
    "campaign": "text",
    "error": "text",
    "text": "text",
    "final_at": "timestamptz",
    "registered_at": "timestamptz",
    "delivery_seconds": "double precision",
    "version": "bigint",
}
assert tuple(COLUMN_TYPES)[4:] == MessageRecord._fields[2:], "the columns follow the record's fields"
COLUMNS = ", ".join(COLUMN_TYPES)
_RECORD_TYPES = ", ".join(f"{name} {kind}" for name, kind in COLUMN_TYPES.items())
_NEVER_UPDATED = ("id", "created_at")
_KEYS = tuple(COLUMN_TYPES)

# A dict lookup: calling Status(value) goes through the enum machinery, a microsecond per segment.
STATUS_BY_VALUE: dict[str, Status] = {s.value: s for s in Status}


def record_from_row(row: asyncpg.Record) -> MessageRecord:
    """A row selected as `COLUMNS` (by position: this runs for every message a batch locks)."""
    state = MessageState(tuple(map(STATUS_BY_VALUE.__getitem__, row[3])), STATUS_BY_VALUE[row[1]], row[2])
    return MessageRecord(row[0], state, tuple(row[4]), *row[5:17])


class Found(NamedTuple):
    """The stored messages a batch names, and the row version (`xmin`) each was read at."""

    records: dict[str, MessageRecord]
    versions: dict[str, str]


async def read(conn: Connection, ids: Iterable[str], *, lock: bool = False) -> Found:
    """The messages stored under `ids`; with `lock`, locked in id order (inside a transaction)."""
    locking = " ORDER BY id FOR UPDATE" if lock else ""
    rows = await conn.fetch(
        f"SELECT {COLUMNS}, xmin::text FROM messages WHERE id = ANY($1::text[]){locking}", sorted(set(ids))
    )
    return Found({r[0]: record_from_row(r) for r in rows}, {r[0]: r[17] for r in rows})


# What a change event adds to the message it leaves behind: who made the change, and from which status (when:
# the message's `updated_at`, which every change stamps). Each row written back carries its message's last
# change in the batch (null: a row changed without one).
_CHANGE_TYPES = "source text, previous_status text"

# `m.id = ANY($5)` as well as the join: the planner takes a function's rows for 100, and against a table of
# a few thousand messages it then hashed the whole table for every batch (a sequential scan per commit); the
# ids let it find the rows by the primary key whatever the table's size.
# `m.xmin = u.xmin`: only the row version the batch decided on (see the module's docstring).
_UPDATE = f"""
    UPDATE messages AS m SET {", ".join(f"{c} = u.{c}" for c in COLUMN_TYPES if c not in _NEVER_UPDATED)}
    FROM json_to_recordset($1::json) AS u({_RECORD_TYPES}, xmin xid, {_CHANGE_TYPES})
    WHERE m.id = u.id AND m.id = ANY($5::text[]) AND m.xmin = u.xmin
    RETURNING {", ".join(f"m.{c}" for c in COLUMN_TYPES)}, u.source, u.previous_status
"""
# The messages the batch creates, read once for both the insert and their events.
_NEW = f"SELECT * FROM json_to_recordset($2::json) AS c({_RECORD_TYPES}, {_CHANGE_TYPES})"
# A plain insert: a message another transaction created since the read fails it on the primary key (and
# the batch is applied again). ON CONFLICT DO NOTHING would catch that too, at the price of a speculative
# insertion and one more WAL record for every message created.
_INSERT = f"INSERT INTO messages ({COLUMNS}) SELECT {COLUMNS} FROM new ORDER BY id"
# History rows from a JSON document (`{param}`: the statement's parameter holding it).
HISTORY_INSERT = """
    INSERT INTO history (message_id, status, raw_status, segment, event_time, received_at, source,
                         applied, reason, error, event_id, sequence)
    SELECT message_id, status, raw_status, segment, event_time, received_at, source, applied, reason, error,
           event_id, sequence
    FROM json_to_recordset({param}::json) AS h(
        message_id text, status text, raw_status text, segment int, event_time timestamptz,
        received_at timestamptz, source text, applied boolean, reason text, error text, event_id text,
        sequence bigint)
"""
# A plain insert, no ON CONFLICT: an event id another transaction is committing right now makes this one
# fail and apply its batch again, when the event is found and answered as a duplicate.
_SENDER_EVENTS = """
    INSERT INTO sender_events (source, event_id, message_id, received_at)
    SELECT source, event_id, message_id, received_at
    FROM json_to_recordset($4::json) AS e(source text, event_id text, message_id text, received_at timestamptz)
"""
# The event feed's rows: the message after the change, and what the change was. A message's last change in
# the batch (nearly always its only one) comes with the row that inserts or updates it; an earlier change of
# the same message in the batch carries its whole row then (`$6`). One JSON object per message, parsed once:
# the changes as a document of their own, joined to the rows by id, and their sort, were a third of what the
# feed cost PostgreSQL per report (bench.write_path: 4.6 against 3.0 us). A message's events take their
# positions in the order they happened: with earlier changes in the batch the rows are sorted by (id, version);
# without, each message has one event and no order is needed. The event's time is the message's `updated_at`.
EVENT_COLUMNS = f"source, previous_status, at, {COLUMNS}"
_EVENT_VALUES = f"source, previous_status, updated_at, {COLUMNS}"
_EVENTS = f"""
    INSERT INTO events ({EVENT_COLUMNS})
    SELECT * FROM (
        SELECT {_EVENT_VALUES} FROM new WHERE source IS NOT NULL
        UNION ALL
        SELECT {_EVENT_VALUES} FROM updated WHERE source IS NOT NULL
        UNION ALL
        SELECT {_EVENT_VALUES} FROM json_to_recordset($6::json) AS e({_RECORD_TYPES}, {_CHANGE_TYPES})
    ) AS fed
"""
# The batch travels as JSON documents rather than dozens of typed arrays: one orjson call, where asyncpg
# would encode every element of every array in Python.
_WRITE_BACK = f"""
WITH new AS MATERIALIZED ({_NEW}), created AS ({_INSERT}), updated AS ({_UPDATE}),
     logged AS ({HISTORY_INSERT.format(param="$3")}), kept AS ({_SENDER_EVENTS}), fed AS ({{events}})
SELECT messages_changed_meanwhile((SELECT count(*) FROM updated), $7)
"""
_WRITE_BACK_ONE_EACH = _WRITE_BACK.format(events=_EVENTS)
_WRITE_BACK_SORTED = _WRITE_BACK.format(events=f"{_EVENTS} ORDER BY id, version")


def json_rows(rows: list[Any]) -> str:
    # orjson writes datetimes (ISO-8601 with their offset) and StrEnum members itself, in C.
    return orjson.dumps(rows).decode()


def _record_json(r: MessageRecord) -> dict[str, Any]:
    # StrEnum members are str: orjson writes them as their values (`.value` is a slow descriptor).
    state = r.state
    return dict(zip(_KEYS, (r.id, state.status, state.partial, state.segments, *r[2:]), strict=True))


def history_json(h: HistoryEntry) -> dict[str, Any]:
    return {
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


def _sender_event_json(e: SenderEvent) -> dict[str, Any]:
    return {"source": e.source, "event_id": e.event_id, "message_id": e.message_id, "received_at": e.received_at}


async def write_back(conn: Connection, ledger: Ledger, versions: dict[str, str]) -> None:
    """Write what the ledger did, in one statement; `versions`: each stored message's row version as read.
    Raises SerializationError when one of them changed since, UniqueViolationError when a message or sender
    event id the batch takes for new was stored meanwhile: nothing is written then."""
    if not (ledger.created or ledger.changed or ledger.history or ledger.sender_events):
        return
    records = ledger.records
    # A message's last change in the batch (the one that left it as the batch leaves it) rides on its row;
    # an earlier one carries a row of its own.
    latest: dict[str, dict[str, Any]] = {}
    earlier: list[dict[str, Any]] = []
    for e in ledger.events:
        change = {"source": e.source, "previous_status": e.previous_status}
        message = e.message
        if records[message.id] is message and message.id not in latest:
            latest[message.id] = change
        else:
            earlier.append({**_record_json(message), **change})

    def row(message_id: str) -> dict[str, Any]:
        found = _record_json(records[message_id])
        found.update(latest.get(message_id, ()))
        return found

    created = [row(i) for i in sorted(ledger.created)]
    changed = [row(i) for i in sorted(ledger.changed - ledger.created)]
    for r in changed:
        r["xmin"] = versions[r["id"]]
    await conn.fetchval(
        _WRITE_BACK_SORTED if earlier else _WRITE_BACK_ONE_EACH,
        json_rows(changed),
        json_rows(created),
        json_rows([history_json(h) for h in ledger.history]),
        json_rows([_sender_event_json(e) for e in ledger.sender_events]),
        [r["id"] for r in changed],
        json_rows(earlier),
        len(changed),
    )


# What another transaction writing the same messages meanwhile can make a write-back raise: a message
# changed since it was read, a message or sender event id created since, or (rarely) a deadlock while two
# inserts wait on each other. None of them leaves anything behind: the statement or transaction is undone.
_RACES = (asyncpg.SerializationError, asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError)
_RACE_ATTEMPTS = 3


async def retrying_races(conn: Connection, attempt: Callable[[bool], Awaitable[T]]) -> T:
    """`attempt(lock)` until it is not undone by a race: unlocked first, locked the last time (and always
    inside a caller's own transaction, where a failed statement would abort the whole transaction: the
    locked attempt runs in a savepoint)."""
    if not conn.is_in_transaction():
        for _ in range(_RACE_ATTEMPTS - 1):
            try:
                return await attempt(False)
            except _RACES:
                continue  # undone: decided again on what is there now
    for _ in range(_RACE_ATTEMPTS - 1):
        try:
            return await attempt(True)
        except _RACES:
            continue
    return await attempt(True)
