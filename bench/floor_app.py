"""The floor of durable ingest on this stack: the bare endpoint plus the least a 2xx-means-committed service
must do, and nothing of dlr-tracker's.

Each request's form is parsed as in bench/bare_app.py, queued, written by group commit (as many writer tasks as
dlr-tracker runs by default, each taking whatever is waiting, no linger, as dlr-tracker does) as one row of an
unindexed table in one statement per batch through asyncpg, and answered only after the commit. No validation,
no status engine, no message rows, no history, no middleware. Whatever dlr-tracker does beyond this costs on top
of it; what this server cannot reach, no design on Python, uvicorn and asyncpg with one worker reaches.

    DATABASE_URL=postgresql://... uvicorn bench.floor_app:app
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.config import DEFAULT_WRITERS

WRITERS = DEFAULT_WRITERS
MAX_BATCH = 1000


class GroupCommit:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.queue: deque[tuple[str, str, asyncio.Future[None]]] = deque()
        self.arrived = asyncio.Event()

    async def write(self, message_id: str, status: str) -> None:
        done = asyncio.get_running_loop().create_future()
        self.queue.append((message_id, status, done))
        self.arrived.set()
        await done

    async def run(self) -> None:
        while True:
            if not self.queue:
                self.arrived.clear()
                await self.arrived.wait()
                continue
            batch = [self.queue.popleft() for _ in range(min(len(self.queue), MAX_BATCH))]
            async with self.pool.acquire() as conn:
                await conn.execute(
                    "INSERT INTO floor_reports (id, status) SELECT * FROM unnest($1::text[], $2::text[])",
                    [b[0] for b in batch],
                    [b[1] for b in batch],
                )
            for _, _, done in batch:
                done.set_result(None)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=WRITERS, max_size=WRITERS + 1)
    async with pool.acquire() as conn:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS floor_reports (id text, status text, at timestamptz DEFAULT now())"
        )
    app.state.commit = GroupCommit(pool)
    writers = [asyncio.create_task(app.state.commit.run()) for _ in range(WRITERS)]
    yield
    for task in writers:
        task.cancel()
    await pool.close()


async def ingest(request: Request) -> Response:
    form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
    await request.app.state.commit.write(form.get("id", ""), form.get("status", ""))
    return JSONResponse(
        {
            "code": 0,
            "data": {"id": form.get("id"), "status": form.get("status"), "applied": True, "reason": None},
            "message": "",
        }
    )


async def ready(request: Request) -> Response:
    return JSONResponse({"code": 0, "data": {"ready": True}, "message": ""})


app = Starlette(routes=[Route("/dlr/{dialect}", ingest, methods=["POST"]), Route("/readyz", ready)], lifespan=lifespan)
