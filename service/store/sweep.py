"""The expiry sweep's SQL: take a batch of overdue open messages, resolve them through the ledger.

The rules are the engine's (`engine.expire`, through `Ledger.expire`): the store only finds, locks and
writes back, with the same write-back as reports.
"""

from __future__ import annotations

from datetime import datetime

from service.ledger import ChangeEvent, Ledger
from service.store.messages import COLUMNS, Connection, record_from_row, write_back


async def sweep_batch(conn: Connection, now: datetime, limit: int) -> list[ChangeEvent]:
    """Resolve up to `limit` overdue open messages in one transaction; their change events.

    SKIP LOCKED: the sweeper never waits for a row, so it cannot deadlock with ingest or with other
    sweepers; a row another transaction holds is simply left for the next batch or the next pass.
    """
    async with conn.transaction():
        rows = await conn.fetch(
            f"""
            SELECT {COLUMNS} FROM messages
            WHERE final_at IS NULL AND expires_at <= $1
            ORDER BY expires_at
            LIMIT $2
            FOR UPDATE SKIP LOCKED
            """,
            now,
            limit,
        )
        ledger = Ledger({row["id"]: record_from_row(row) for row in rows}, lifetime=0)
        events = [e for row in rows if (e := ledger.expire(row["id"], now)) is not None]
        await write_back(conn, ledger)
    return events


async def count_open(conn: Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM messages WHERE final_at IS NULL"))
