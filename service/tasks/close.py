"""A campaign's close: every open message resolved now to EXPIRED or DELETED, as the sweep resolves (the
sweep's own statement, `store.close_batch`: each change a history row and an event-feed row, in the batch's
transaction).

The close walks the campaign a page at a time and resolves the page's open messages; then it resolves any
still open that existed when it began wherever they sort (a message whose sent_at moved behind the walk).
A resolved message is final, so a batch repeated after a crash would find nothing open to change: the
position only saves walking the campaign again.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from service import metrics
from service.config import Settings
from service.ledger import CLOSE
from service.statuses import Status
from service.store import campaign_pages, close_batch
from service.store.messages import Connection
from service.store.sweep import Resolved
from service.tasks.export import key_from, key_to
from service.tasks.model import Batch


async def begin(conn: Connection, params: dict[str, Any], now: datetime) -> tuple[int, dict[str, Any]]:
    total = await campaign_pages.count(conn, params["campaign"])
    return total, {"after": None, "walked": False, "since": now.isoformat(), "resolved": {}}


async def step(
    conn: Connection, task_id: int, params: dict[str, Any], position: dict[str, Any], limit: int, settings: Settings
) -> Batch:
    campaign, target = params["campaign"], Status(params["status"])
    now = datetime.now(UTC)
    after, walked, walked_now = key_from(position["after"]), position["walked"], 0
    ids: list[str] = []
    if not walked:
        keys = await campaign_pages.page_keys(conn, campaign, after, limit)
        ids, walked_now = [k[1] for k in keys], len(keys)
        after = keys[-1] if keys else after
        walked = not keys
    if walked:
        ids = await campaign_pages.open_ids(conn, campaign, datetime.fromisoformat(position["since"]), limit)
    resolved = await close_batch(conn, now, target, ids) if ids else []
    totals = Counter(position["resolved"])
    for r in resolved:
        totals[r.status.value] += r.n
    return Batch(
        {"after": key_to(after), "walked": walked, "since": position["since"], "resolved": dict(totals)},
        walked_now,
        finished=walked and not ids,
        count=lambda: _count(resolved),
        changed=bool(resolved),
    )


def _count(resolved: list[Resolved]) -> None:
    for r in resolved:
        metrics.child(metrics.TRANSITIONS, r.previous, r.status).inc(r.n)
        metrics.child(metrics.EVENTS, CLOSE).inc(r.n)  # each resolution is a change event


def result(task_id: int, params: dict[str, Any], position: dict[str, Any]) -> dict[str, Any]:
    resolved: dict[str, int] = position["resolved"]
    return {"status": params["status"], "resolved": sum(resolved.values()), "by_status": resolved}
