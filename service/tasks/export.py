"""An export: every message of a campaign as CSV or NDJSON, one page per batch, each page's bytes one chunk of
the task's output. The chunk and the position after it commit together, so a resumed export writes each row
once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service.config import Settings
from service.store import campaign_pages
from service.store import tasks as store
from service.store.messages import Connection
from service.tasks import formats
from service.tasks.model import MEDIA_TYPES, Batch, ExportFormat


def key_from(position: Any) -> campaign_pages.Key | None:
    """A page key as kept in a task's JSON position: [sent_at as ISO-8601, id]."""
    return None if position is None else (datetime.fromisoformat(position[0]), position[1])


def key_to(key: campaign_pages.Key | None) -> list[str] | None:
    return None if key is None else [key[0].isoformat(), key[1]]


async def begin(conn: Connection, params: dict[str, Any], now: datetime) -> tuple[int, dict[str, Any]]:
    total = await campaign_pages.count(conn, params["campaign"])
    return total, {"after": None, "chunk": 0, "rows": 0, "bytes": 0}


async def step(
    conn: Connection, task_id: int, params: dict[str, Any], position: dict[str, Any], limit: int, settings: Settings
) -> Batch:
    fmt = ExportFormat(params["format"])
    records = await campaign_pages.page(conn, params["campaign"], key_from(position["after"]), limit)
    data = formats.rows(records, fmt)
    if position["chunk"] == 0:
        data = formats.header(fmt) + data
    if data:
        await store.write_chunk(conn, task_id, position["chunk"], data)
    after = (records[-1].sent_at, records[-1].id) if records else key_from(position["after"])
    return Batch(
        {
            "after": key_to(after),
            "chunk": position["chunk"] + (1 if data else 0),
            "rows": position["rows"] + len(records),
            "bytes": position["bytes"] + len(data),
        },
        len(records),
        finished=len(records) < limit,
    )


def result(task_id: int, params: dict[str, Any], position: dict[str, Any]) -> dict[str, Any]:
    fmt = ExportFormat(params["format"])
    return {
        "format": fmt.value,
        "media_type": MEDIA_TYPES[fmt],
        "rows": position["rows"],
        "bytes": position["bytes"],
        "download": f"/tasks/{task_id}/result",
    }
