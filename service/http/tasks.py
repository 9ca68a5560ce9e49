"""Mass operations as background tasks: queue one (code 100, HTTP 202), follow it, download an export's
result, cancel it. The work itself is the `TaskRunner`'s (`service/tasks/`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from service import metrics
from service.auth import require_api_key
from service.errors import NotFound, OperationFailed, database_errors
from service.http import views
from service.http.envelope import EnvelopeResponse, ok
from service.http.messages import path_id
from service.http.requests import numeric_path_id, read_json_body, read_query, state
from service.http.scopes import scope_of
from service.services import Services
from service.store import campaign_pages
from service.store import tasks as store
from service.tasks import model
from service.tasks.model import MEDIA_TYPES, ExportFormat, Kind, State

SENT = 100  # DESIGN §2: sent for background execution


async def export(request: Request) -> Response:
    app = state(request)
    require_api_key(request, app, scope_of(request))
    read_query(request)
    campaign = path_id(request, "campaign", "campaign")
    return await _queue(app, Kind.EXPORT, model.export_params(campaign, await _body(request, app)), campaign)


async def close(request: Request) -> Response:
    app = state(request)
    require_api_key(request, app, scope_of(request))
    read_query(request)
    campaign = path_id(request, "campaign", "campaign")
    return await _queue(app, Kind.CLOSE, model.close_params(campaign, await _body(request, app)), campaign)


async def replay(request: Request) -> Response:
    app = state(request)
    require_api_key(request, app, scope_of(request))
    read_query(request)
    return await _queue(app, Kind.REPLAY, model.replay_params(await _body(request, app)), None)


async def _body(request: Request, app: Services) -> Any:
    """The JSON object a task is asked with; no body is an empty object (JSON `null` is no object)."""
    return await read_json_body(request, app.settings.max_body_bytes, blank_is_empty=True)


async def queue(app: Services, kind: Kind, params: dict[str, Any], campaign: str | None) -> int:
    """Queue a task and wake this process's runner: its id (the API's and the console's way in)."""
    async with database_errors("task"), app.pool.acquire(timeout=app.settings.db_timeout) as conn:
        if campaign is not None and not await campaign_pages.exists(conn, campaign):
            raise NotFound(f"campaign {campaign[:80]!r} not found", {"campaign": campaign[:255]})
        task_id = await store.create(conn, kind.value, params)
    app.tasks.wake()
    return task_id


async def _queue(app: Services, kind: Kind, params: dict[str, Any], campaign: str | None) -> Response:
    task_id = await queue(app, kind, params, campaign)
    return EnvelopeResponse(
        SENT,
        {"task_id": task_id},
        f"sent for background execution: GET /tasks/{task_id}",
        202,
        {"Location": f"/tasks/{task_id}"},
    )


def _task_id(request: Request) -> int:
    return numeric_path_id(request, "task")


async def one(request: Request) -> Response:
    """`GET /tasks/{id}`: its state and progress; `DELETE`: cancel it if it has not finished."""
    app = state(request)
    require_api_key(request, app, scope_of(request))
    read_query(request)
    task_id = _task_id(request)
    operation = "read" if request.method == "GET" else "task"
    async with (
        database_errors(operation),
        app.pool.acquire(timeout=app.settings.db_timeout) as conn,
        conn.transaction(),
    ):
        found = await store.get(conn, task_id)
        if found is None:
            raise NotFound(f"task {task_id} not found", {"id": task_id})
        if request.method == "GET":
            return ok(views.task(found))
        cancelled = await store.cancel(conn, task_id)
    if cancelled is None:
        raise OperationFailed(f"task {task_id} has finished ({found['state']}): nothing to cancel", {"id": task_id})
    metrics.child(metrics.TASKS, cancelled["kind"], State.CANCELLED.value).inc()
    return ok(views.task(cancelled))


async def result(request: Request) -> Response:
    """`GET /tasks/{id}/result`: an export's output, streamed a chunk at a time (a connection is held only
    while a chunk is read, never while the client takes it)."""
    app = state(request)
    require_api_key(request, app, scope_of(request))
    read_query(request)
    task_id = _task_id(request)
    async with database_errors("read"), app.pool.acquire(timeout=app.settings.db_timeout) as conn:
        found = await store.get(conn, task_id)
    if found is None:
        raise NotFound(f"task {task_id} not found", {"id": task_id})
    if found["kind"] != Kind.EXPORT:
        raise NotFound(f"task {task_id} is a {found['kind']}: only an export has a result to download", {"id": task_id})
    if found["state"] != State.DONE:
        raise OperationFailed(
            f"task {task_id} is {found['state']}: its result is ready once it is done", {"id": task_id}
        )
    fmt = ExportFormat(json.loads(found["params"])["format"])

    async def chunks() -> AsyncIterator[bytes]:
        chunk = 0
        while True:
            async with app.pool.acquire(timeout=app.settings.db_timeout) as conn:
                data = await store.read_chunk(conn, task_id, chunk)
            if data is None:
                return
            yield data
            chunk += 1

    filename = f"task-{task_id}.{fmt.value}"
    return StreamingResponse(
        chunks(), media_type=MEDIA_TYPES[fmt], headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )
