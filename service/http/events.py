"""`/events`: every committed change of a message, gap-free, in commit order, with long polling."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from service import fields, metrics
from service.auth import require_api_key
from service.errors import LimitExceeded, database_errors
from service.feed import POLL_SECONDS
from service.http import views
from service.http.envelope import ok
from service.http.requests import page_limit, read_query, state
from service.http.scopes import scope_of
from service.services import Services
from service.store import Connection
from service.store import events as feed
from service.store.events import Cursor, CursorExpired, Page

DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_WAIT = 30
PARAMETERS = ("after", "limit", "campaign", "final", "wait")
LATEST = "latest"


def _flag(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    if value not in ("true", "false"):
        raise fields.FieldError("must be true or false")
    return bool(value == "true")


def _wait(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.isascii() or not value.replace(".", "", 1).isdigit() or len(value) > 8:
        raise fields.FieldError(f"must be seconds from 0 to {MAX_WAIT}")
    seconds = float(value)
    if seconds > MAX_WAIT:
        raise fields.FieldError(f"must be seconds from 0 to {MAX_WAIT}")
    return seconds


async def list_events(request: Request) -> Response:
    app = state(request)
    require_api_key(request, app, scope_of(request))
    params = read_query(request, PARAMETERS)
    f = fields.FieldErrors()
    campaign = f.read(params, "campaign", fields.text)
    final = f.read(params, "final", _flag)
    wait = f.read(params, "wait", _wait) or 0.0
    if f:
        raise f.refusal()
    limit = page_limit(params, DEFAULT_PAGE, MAX_PAGE)
    deadline = time.monotonic() + wait
    page = await _read(app, params.get("after"), None, limit, campaign, final)
    # Long poll: look again when this process commits a change, and every POLL_SECONDS for the others'
    # (no connection is held while waiting).
    while not page.events and (left := deadline - time.monotonic()) > 0:
        await app.changes.wait(min(POLL_SECONDS, left))
        page = await _read(app, None, page.next_cursor, limit, campaign, final)
    return ok({"items": [views.event(e) for e in page.events], "next_cursor": str(page.next_cursor)})


async def _read(
    app: Services, given: Any, after: Cursor | None, limit: int, campaign: str | None, final: bool | None
) -> Page:
    started = time.perf_counter()
    async with database_errors("read"), app.pool.acquire(timeout=app.settings.db_timeout) as conn:
        if after is None:
            after = await _cursor(conn, given)
        try:
            page = await feed.read_page(conn, after, limit, campaign=campaign, final=final)
        except CursorExpired as exc:
            raise LimitExceeded(
                f"cursor {after} is older than the oldest event kept ({exc.oldest}): start again from there",
                {"after": "older than the oldest event kept", "oldest": str(exc.oldest)},
            ) from None
    metrics.EVENT_READ_SECONDS.observe(time.perf_counter() - started)
    return page


async def _cursor(conn: Connection, given: Any) -> Cursor:
    """No `after`: the oldest event kept. `latest`: the present. Otherwise a cursor this feed handed out."""
    if given is None or given == "":
        return await feed.oldest(conn)
    if given == LATEST:
        return await feed.present(conn)
    cursor = Cursor.parse(given) if isinstance(given, str) else None
    if cursor is None:
        raise LimitExceeded(
            "bad cursor: pass next_cursor (or an event's id) unchanged, or latest",
            {"after": "bad cursor"},
        )
    return cursor
