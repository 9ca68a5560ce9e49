"""Many concurrent reports for the same messages through one app and its connection pool."""

from __future__ import annotations

import asyncio
import random

import httpx2

from service.app import create_app
from service.config import Settings
from tests.test_processes import check_final_states, reports_for


def test_concurrent_reports_for_the_same_messages(settings: Settings, db: str) -> None:
    """Hundreds of shuffled, duplicated reports for a few messages, 48 at a time: each message ends
    DELIVRD on both parts, each status is applied once, and no request fails (row locks, no deadlock)."""
    ids = [f"c{i}" for i in range(12)]
    reports = reports_for(ids)
    random.Random(3).shuffle(reports)
    app = create_app(settings)

    async def run() -> list[int]:
        async with app.router.lifespan_context(app):
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
                gate = asyncio.Semaphore(48)

                async def one(report: dict[str, str]) -> int:
                    async with gate:
                        return (await client.post("/dlr/generic", data=report)).status_code

                return await asyncio.gather(*(one(r) for r in reports))

    statuses = asyncio.run(run())
    assert set(statuses) == {200}
    check_final_states(db, ids)
