"""The tasks table and an export's output chunks.

One runner at a time per task: `claim` takes a queued task, or a running one whose lease lapsed (its runner
died), with SKIP LOCKED so that runners never wait for each other, and gives it a new claim token. Every batch
then starts with `lock_for_batch` (the row locked, the token checked) and ends with `advance` or `finish` in
the same transaction as its effect: the effect, the progress and the resume position commit together, and a
runner whose claim was taken over (or whose task was cancelled) stops before applying anything.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg

from service.store.messages import Connection

_SHOWN = "id, kind, params, state, done, total, result, error, created_at, started_at, finished_at"


async def create(conn: Connection, kind: str, params: dict[str, Any]) -> int:
    return int(
        await conn.fetchval(
            "INSERT INTO tasks (kind, params) VALUES ($1, $2::jsonb) RETURNING id", kind, json.dumps(params)
        )
    )


async def get(conn: Connection, task_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {_SHOWN} FROM tasks WHERE id = $1", task_id)


async def claim(conn: Connection, token: uuid.UUID, lease: float) -> asyncpg.Record | None:
    """Take the oldest task that is queued or whose runner's lease lapsed, for `lease` seconds."""
    return await conn.fetchrow(
        """
        UPDATE tasks SET state = 'running', claim = $1, lease_until = now() + make_interval(secs => $2),
                         started_at = coalesce(started_at, now()), attempts = attempts + 1
        WHERE id = (
            SELECT id FROM tasks
            WHERE state = 'queued' OR (state = 'running' AND lease_until < now())
            ORDER BY id LIMIT 1
            FOR UPDATE SKIP LOCKED
        )
        RETURNING id, kind, params, position, done, total, attempts
        """,
        token,
        lease,
    )


async def lock_for_batch(conn: Connection, task_id: int, token: uuid.UUID) -> asyncpg.Record | None:
    """The task locked for one batch, with its resume position, if it is still running under this claim."""
    return await conn.fetchrow(
        "SELECT position, done, total FROM tasks WHERE id = $1 AND claim = $2 AND state = 'running' FOR UPDATE",
        task_id,
        token,
    )


async def advance(
    conn: Connection, task_id: int, position: dict[str, Any], done: int, total: int | None, lease: float
) -> None:
    """A batch's progress and resume position (inside its transaction), and the claim's lease renewed."""
    await conn.execute(
        """
        UPDATE tasks SET position = $2::jsonb, done = $3, total = coalesce($4, total),
                         lease_until = now() + make_interval(secs => $5)
        WHERE id = $1
        """,
        task_id,
        json.dumps(position),
        done,
        total,
        lease,
    )


async def finish(
    conn: Connection, task_id: int, state: str, result: dict[str, Any] | None = None, error: str | None = None
) -> None:
    await conn.execute(
        """
        UPDATE tasks SET state = $2, result = $3::jsonb, error = $4, finished_at = now(), claim = NULL,
                         lease_until = NULL
        WHERE id = $1
        """,
        task_id,
        state,
        None if result is None else json.dumps(result),
        error,
    )


async def cancel(conn: Connection, task_id: int) -> asyncpg.Record | None:
    """Cancel a task that has not finished (waiting for a batch in progress to commit: batches are short);
    None if there is no such task or it has finished. An export's partial output goes with it."""
    row = await conn.fetchrow(
        f"""
        UPDATE tasks SET state = 'cancelled', finished_at = now(), claim = NULL, lease_until = NULL
        WHERE id = $1 AND state IN ('queued', 'running')
        RETURNING {_SHOWN}
        """,
        task_id,
    )
    if row is not None:
        await conn.execute("DELETE FROM task_output WHERE task_id = $1", task_id)
    return row


async def write_chunk(conn: Connection, task_id: int, chunk: int, data: bytes) -> None:
    # A plain insert: a chunk written twice would be a bug, and the primary key says so.
    await conn.execute("INSERT INTO task_output (task_id, chunk, data) VALUES ($1, $2, $3)", task_id, chunk, data)


async def read_chunk(conn: Connection, task_id: int, chunk: int) -> bytes | None:
    data = await conn.fetchval("SELECT data FROM task_output WHERE task_id = $1 AND chunk = $2", task_id, chunk)
    return None if data is None else bytes(data)


async def release(conn: Connection, task_id: int, token: uuid.UUID) -> None:
    """End a claim's lease now (its runner is stopping): the next runner to look takes the task over."""
    await conn.execute(
        "UPDATE tasks SET lease_until = now() - interval '1 second' WHERE id = $1 AND claim = $2 AND state = 'running'",
        task_id,
        token,
    )
