"""Retention: deleting what is past DLR_RETENTION, a small step at a time, safe across replicas.

Each step is one statement and its own transaction, and takes its rows with SKIP LOCKED: replicas pruning at
once take different rows, and nothing waits on ingest or holds it back for longer than a step.
"""

from __future__ import annotations

from datetime import datetime

from service.store.messages import Connection


async def prune_messages(conn: Connection, final_before: datetime, sent_before: datetime, limit: int) -> int:
    """Delete up to `limit` messages final since before `final_before`, with their history and the senders'
    event ids they kept; return how many.

    Walked oldest first by the index on `sent_at` (no index by `final_at` is kept: it would cost every message
    another index entry when it becomes final). `sent_before` is `final_before` less the messages' lifetime:
    a message sent before it is final by then, so the walk meets almost only rows it deletes. (Their events
    are gone already: the feed keeps no event longer than DLR_RETENTION.)
    """
    return int(
        await conn.fetchval(
            """
            WITH doomed AS (
                SELECT id FROM messages
                WHERE sent_at < $2 AND final_at < $1
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
            )
            SELECT count(*) FROM gone
            """,
            final_before,
            sent_before,
            limit,
        )
    )


async def prune_quarantine(conn: Connection, before: datetime, limit: int) -> int:
    """Delete quarantined payloads received before `before`, from the oldest (ids follow arrival), at most
    `limit`, stopping at the first one young enough to keep: the walk never reads past what it deletes."""
    return int(
        await conn.fetchval(
            """
            WITH head AS (
                SELECT id, received_at FROM quarantine ORDER BY id LIMIT $2
            ), kept AS (
                SELECT min(id) AS id FROM head WHERE received_at >= $1
            ), doomed AS (
                SELECT q.id FROM quarantine AS q JOIN head AS h USING (id), kept
                WHERE kept.id IS NULL OR q.id < kept.id
                FOR UPDATE OF q SKIP LOCKED
            ), gone AS (
                DELETE FROM quarantine AS q USING doomed AS d WHERE q.id = d.id RETURNING 1
            )
            SELECT count(*) FROM gone
            """,
            before,
            limit,
        )
    )


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
