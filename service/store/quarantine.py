"""The quarantine: payloads that could not be parsed or validated, kept to be inspected and replayed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from service.store.messages import Connection


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


_MATCHING = """
    FROM quarantine
    WHERE ($1::text IS NULL OR dialect = $1) AND ($2::timestamptz IS NULL OR received_at >= $2)
      AND ($3::timestamptz IS NULL OR received_at <= $3)
"""


async def count_matching(conn: Connection, dialect: str | None, since: datetime | None, until: datetime | None) -> int:
    return int(await conn.fetchval(f"SELECT count(*) {_MATCHING}", dialect, since, until))


async def matching_ids(
    conn: Connection, dialect: str | None, since: datetime | None, until: datetime | None, after: int, limit: int
) -> list[int]:
    """Quarantined payloads of a dialect received in [since, until], oldest first, after the id `after`."""
    rows = await conn.fetch(
        f"SELECT id {_MATCHING} AND id > $4 ORDER BY id LIMIT $5", dialect, since, until, after, limit
    )
    return [r["id"] for r in rows]
