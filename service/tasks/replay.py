"""A mass replay: every quarantined payload matching a dialect and a time range, oldest first, each replayed
as `POST /quarantine/{id}/replay` replays it (`replay.replay_quarantined`), in a savepoint of the batch's
transaction: what now parses is applied and leaves the quarantine, what still fails stays as it was.

The position is the last payload id gone through, committed with the batch's effects: a resumed replay
starts after it, and a payload replayed once is no longer in the quarantine to be replayed again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service import metrics
from service.config import Settings
from service.errors import RefusedPayload
from service.ledger import ReportDecision
from service.replay import replay_quarantined
from service.store.messages import Connection
from service.store.quarantine import count_matching, matching_ids
from service.tasks.model import Batch
from service.writer import record

# Payloads per batch, as a share of DLR_TASK_BATCH: each may hold a batch of reports of its own.
PAYLOADS_PER_ROW = 10


def _moment(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _filter(params: dict[str, Any]) -> tuple[str | None, datetime | None, datetime | None]:
    return params.get("dialect"), _moment(params.get("since")), _moment(params.get("until"))


async def begin(conn: Connection, params: dict[str, Any], now: datetime) -> tuple[int, dict[str, Any]]:
    total = await count_matching(conn, *_filter(params))
    return total, {"after": 0, "replayed": 0, "failed": 0, "gone": 0}


async def step(
    conn: Connection, task_id: int, params: dict[str, Any], position: dict[str, Any], limit: int, settings: Settings
) -> Batch:
    size = max(1, limit // PAYLOADS_PER_ROW)
    ids = await matching_ids(conn, *_filter(params), position["after"], size)
    replayed = failed = gone = 0
    decisions: list[ReportDecision] = []
    for item_id in ids:
        try:
            # A savepoint: a payload that still fails leaves nothing behind, and the batch goes on.
            async with conn.transaction():
                found = await replay_quarantined(
                    conn, item_id, lifetime=settings.lifetime, max_batch=settings.max_batch
                )
        except RefusedPayload:
            failed += 1
            continue
        if found is None:
            gone += 1  # replayed by someone else meanwhile (`POST /quarantine/{id}/replay`)
            continue
        replayed += 1
        decisions += found

    def count() -> None:
        record(decisions)
        metrics.REPLAYED.inc(replayed)

    return Batch(
        {
            "after": ids[-1] if ids else position["after"],
            "replayed": position["replayed"] + replayed,
            "failed": position["failed"] + failed,
            "gone": position["gone"] + gone,
        },
        len(ids),
        finished=len(ids) < size,
        count=count,
        changed=any(d.change is not None for d in decisions),
    )


def result(task_id: int, params: dict[str, Any], position: dict[str, Any]) -> dict[str, Any]:
    return {"replayed": position["replayed"], "failed": position["failed"], "gone": position["gone"]}
