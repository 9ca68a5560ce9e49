"""`/quarantine`: payloads that could not be parsed or validated, and their replay."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from service import fields, metrics, store
from service.auth import require_api_key
from service.errors import LimitExceeded, NotFound, database_errors
from service.http import views
from service.http.envelope import ok
from service.http.requests import page_limit, read_query, state
from service.http.scopes import scope_of
from service.ledger import ReportDecision
from service.replay import replay_quarantined
from service.services import Services
from service.writer import record

DEFAULT_PAGE = 50
MAX_PAGE = 1000


async def list_quarantine(request: Request) -> Response:
    app = state(request)
    require_api_key(request, app, scope_of(request))
    params = read_query(request, ("dialect", "limit", "cursor"))
    f = fields.FieldErrors()
    dialect = f.read(params, "dialect", fields.text)
    if f:
        raise f.refusal()
    limit = page_limit(params, DEFAULT_PAGE, MAX_PAGE)
    try:
        cursor = fields.count(params.get("cursor"), 2**62)
    except fields.FieldError:
        raise LimitExceeded(
            "bad cursor: pass next_cursor from the previous page unchanged", {"cursor": "bad cursor"}
        ) from None
    async with database_errors("read"), app.pool.acquire(timeout=app.settings.db_timeout) as conn:
        records = await store.list_quarantine(conn, dialect, limit + 1, cursor)
    more = len(records) > limit
    records = records[:limit]
    return ok(
        {
            "items": [views.quarantined(r) for r in records],
            "next_cursor": str(records[-1]["id"]) if more else None,
        }
    )


async def replay_one(app: Services, item_id: int) -> list[ReportDecision]:
    """Replay one quarantined payload in its own transaction (the API's and the console's replay): its
    decisions; code 2 when it is not (or no longer) in the quarantine; its refusal when it still fails."""
    async with database_errors("replay"), app.pool.acquire(timeout=app.settings.db_timeout) as conn, conn.transaction():
        answers = await replay_quarantined(
            conn, item_id, lifetime=app.settings.lifetime, max_batch=app.settings.max_batch
        )
    if answers is None:
        raise NotFound(f"quarantined payload {item_id} not found", {"id": item_id})
    record(answers)
    metrics.REPLAYED.inc()
    return answers


async def replay(request: Request) -> Response:
    """Parse a quarantined payload again; when every report in it is valid, apply them and let it go
    (`replay.replay_quarantined`)."""
    app = state(request)
    require_api_key(request, app, scope_of(request))
    read_query(request)
    raw_id = request.path_params["id"]
    try:
        item_id = fields.count(raw_id, 2**62)
    except fields.FieldError:
        item_id = None
    if item_id is None:
        raise NotFound(f"quarantined payload {raw_id[:40]!r} not found")
    answers = await replay_one(app, item_id)
    return ok(
        {
            "id": item_id,
            "items": [
                {
                    "id": a.message_id,
                    "status": a.status,
                    "applied": a.applied,
                    "reason": a.reason,
                }
                for a in answers
            ],
        }
    )
