"""Retention: deleting what is past DLR_RETENTION, a small step at a time, safe across replicas.

Each step is one statement and its own transaction, and takes its rows with SKIP LOCKED: replicas pruning at
once take different rows, and nothing waits on ingest or holds it back for longer than a step.
"""

from __future__ import annotations

from datetime import UTC, datetime

from service.store.messages import Connection


class MessagesPastRetention:
    """Deletes messages final since before `final_before`, with their history and the senders' event ids they
    kept, a step of at most `limit` at a time, oldest first.

    Walked by the index on `(sent_at, id)` (no index by `final_at` is kept: it would cost every message another
    index entry when it becomes final). `sent_before` is `final_before` less the messages' lifetime: a message
    sent before it is final by then, so the walk meets almost only rows it deletes. (Their events are gone
    already: the feed keeps no event longer than DLR_RETENTION.)

    Each step starts after the last row the one before it deleted. Started from the beginning, a step would walk
    the index entries of every row deleted so far, dead until a vacuum passes: measured on a million messages,
    steps grew from 4 to 18 ms over the pass (39 s in all), against a flat 2.5 ms (12 s) walked on. A row passed
    over (locked by a report or another replica's step, or not final long enough) waits for the next pass.
    """

    def __init__(self, final_before: datetime, sent_before: datetime, limit: int) -> None:
        self._final_before = final_before
        self._sent_before = sent_before
        self._limit = limit
        self._after: tuple[datetime, str] = (datetime(1, 1, 1, tzinfo=UTC), "")

    async def step(self, conn: Connection) -> int:
        """Delete the next step's messages; return how many."""
        deleted, sent_at, message_id = await conn.fetchrow(
            """
            WITH doomed AS (
                SELECT id, sent_at FROM messages
                WHERE (sent_at, id) > ($4, $5) AND sent_at < $2 AND final_at < $1
                ORDER BY sent_at, id LIMIT $3
                FOR UPDATE SKIP LOCKED
            ), history_gone AS (
                DELETE FROM history AS h USING doomed AS d WHERE h.message_id = d.id
                RETURNING h.source, h.event_id
            ), sender_events_gone AS (
                DELETE FROM sender_events AS s USING history_gone AS g
                WHERE s.source = g.source AND s.event_id = g.event_id
            ), gone AS (
                DELETE FROM messages AS m USING doomed AS d WHERE m.id = d.id RETURNING 1
            ), last AS (
                SELECT sent_at, id FROM doomed ORDER BY sent_at DESC, id DESC LIMIT 1
            )
            SELECT (SELECT count(*) FROM gone), last.sent_at, last.id FROM (SELECT) AS one LEFT JOIN last ON true
            """,
            self._final_before,
            self._sent_before,
            self._limit,
            *self._after,
        )
        if sent_at is not None:
            self._after = (sent_at, message_id)
        return int(deleted)


class QuarantinePast:
    """Deletes quarantined payloads received before `before`, from the oldest (ids follow arrival), a step of at
    most `limit` at a time, stopping at the first one young enough to keep: the walk never reads past what it
    deletes. Each step starts after the last id the one before deleted, as `MessagesPastRetention` does."""

    def __init__(self, before: datetime, limit: int) -> None:
        self._before = before
        self._limit = limit
        self._after = 0

    async def step(self, conn: Connection) -> int:
        """Delete the next step's payloads; return how many."""
        deleted, last = await conn.fetchrow(
            """
            WITH head AS (
                SELECT id, received_at FROM quarantine WHERE id > $3 ORDER BY id LIMIT $2
            ), kept AS (
                SELECT min(id) AS id FROM head WHERE received_at >= $1
            ), doomed AS (
                SELECT q.id FROM quarantine AS q JOIN head AS h USING (id), kept
                WHERE kept.id IS NULL OR q.id < kept.id
                FOR UPDATE OF q SKIP LOCKED
            ), gone AS (
                DELETE FROM quarantine AS q USING doomed AS d WHERE q.id = d.id RETURNING q.id
            )
            SELECT count(*), max(id) FROM gone
            """,
            self._before,
            self._limit,
            self._after,
        )
        if last is not None:
            self._after = last
        return int(deleted)


async def prune_tasks(conn: Connection, before: datetime, limit: int) -> int:
    """Delete up to `limit` tasks finished before `before` (done, failed or cancelled), with an export's output
    (ON DELETE CASCADE). Tasks are few: the walk by id reads them all at worst."""
    return int(
        await conn.fetchval(
            """
            WITH doomed AS (
                SELECT id FROM tasks
                WHERE state IN ('done', 'failed', 'cancelled') AND finished_at < $1
                ORDER BY id LIMIT $2
                FOR UPDATE SKIP LOCKED
            ), gone AS (
                DELETE FROM tasks AS t USING doomed AS d WHERE t.id = d.id RETURNING 1
            )
            SELECT count(*) FROM gone
            """,
            before,
            limit,
        )
    )
