"""A campaign's messages a page at a time, for its export and its close.

Keyset pages in the campaign index's order (campaign, sent_at, id): a page costs the same at any depth, and a
task resumes after the last (sent_at, id) it committed.
"""

from __future__ import annotations

from datetime import datetime

from service.ledger import MessageRecord
from service.store.messages import COLUMNS, Connection, record_from_row

Key = tuple[datetime, str]  # (sent_at, id): where a page ends and the next begins


async def exists(conn: Connection, campaign: str) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM messages WHERE campaign = $1)", campaign))


async def count(conn: Connection, campaign: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM messages WHERE campaign = $1", campaign))


async def page(conn: Connection, campaign: str, after: Key | None, limit: int) -> list[MessageRecord]:
    rows = await conn.fetch(
        f"""
        SELECT {COLUMNS} FROM messages
        WHERE campaign = $1 AND ($2::timestamptz IS NULL OR (sent_at, id) > ($2, $3::text))
        ORDER BY sent_at, id LIMIT $4
        """,
        campaign,
        None if after is None else after[0],
        None if after is None else after[1],
        limit,
    )
    return [record_from_row(r) for r in rows]


async def page_keys(conn: Connection, campaign: str, after: Key | None, limit: int) -> list[Key]:
    """The next page's keys only: what a close needs to pick the open ones (index-only where it can)."""
    rows = await conn.fetch(
        """
        SELECT sent_at, id FROM messages
        WHERE campaign = $1 AND ($2::timestamptz IS NULL OR (sent_at, id) > ($2, $3::text))
        ORDER BY sent_at, id LIMIT $4
        """,
        campaign,
        None if after is None else after[0],
        None if after is None else after[1],
        limit,
    )
    return [(r["sent_at"], r["id"]) for r in rows]


async def open_ids(conn: Connection, campaign: str, created_before: datetime, limit: int) -> list[str]:
    """Open messages of the campaign that existed at `created_before`, wherever they sort: those whose sent_at
    moved behind a close's position while it walked the campaign."""
    rows = await conn.fetch(
        "SELECT id FROM messages WHERE campaign = $1 AND final_at IS NULL AND created_at <= $2 LIMIT $3",
        campaign,
        created_before,
        limit,
    )
    return [r["id"] for r in rows]
