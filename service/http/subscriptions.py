"""`/subscriptions`: register, read, change, delete and rotate subscriptions; list and replay deliveries.

The secret is in two answers only: the creation's and the rotation's. Every other answer, log line and metric
leaves it out.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from service import fields
from service.auth import require_api_key
from service.errors import BadPayload, LimitExceeded, MissingFields, NotFound, database_errors
from service.http.envelope import EnvelopeResponse, ok
from service.http.requests import numeric_path_id, page_limit, read_json_body, read_query, state
from service.http.scopes import scope_of
from service.services import Services
from service.store import subscriptions as store
from service.subscriptions import address_guard, signing
from service.subscriptions.model import read_filter
from service.subscriptions.policy import STATES
from service.subscriptions.sealing import seal

MAX_DESCRIPTION = 1000
MAX_EVENT_IDS = 100
DEFAULT_PAGE, MAX_PAGE = 50, 1000
CREATE_FIELDS = ("url", "description", "filter", "secret")
PATCH_FIELDS = ("url", "description", "filter", "enabled")


def view(row: Any) -> dict[str, Any]:
    """A subscription as answered: never its secret."""
    return {
        "id": row["id"],
        "url": row["url"],
        "description": row["description"],
        "filter": orjson.loads(row["filter"]),
        "enabled": row["enabled"],
        "disabled_reason": row["disabled_reason"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "failing_since": row["failing_since"],
    }


def delivery_view(row: Any) -> dict[str, Any]:
    return {
        "event_id": row["event_id"],
        "event_at": row["event_at"],
        "state": row["state"],
        "attempts": orjson.loads(row["attempts"]),
        "next_attempt_at": row["next_attempt_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


async def _body(request: Request, app: Services, allowed: tuple[str, ...], *, empty_ok: bool = False) -> dict[str, Any]:
    """The JSON object a request carries, with no field this endpoint does not read."""
    data = await read_json_body(request, app.settings.max_body_bytes, blank_is_empty=empty_ok)
    if not isinstance(data, dict):
        raise BadPayload({"body": "must be a JSON object"})
    unknown = {
        name: f"not a field of this request; it reads {', '.join(allowed)}" for name in data if name not in allowed
    }
    if unknown:
        raise BadPayload(unknown)
    return data


def _description(value: Any) -> str | None:
    return fields.text(value, MAX_DESCRIPTION)


async def _url(f: fields.FieldErrors, data: dict[str, Any], app: Services, *, required: bool) -> str | None:
    value = data.get("url")
    if value is None and not required:
        return None
    if value is None or value == "":
        f.errors["url"] = "required"
        f.missing.add("url")
        return None
    if not isinstance(value, str):
        f.add("url", "must be a string")
        return None
    try:
        return await address_guard.check_url(value, app.settings.subscription_allow_private)
    except address_guard.AddressRefused as exc:
        f.add("url", str(exc))
        return None


def _subscription_id(request: Request) -> int:
    return numeric_path_id(request, "subscription")


def _not_found(subscription_id: int) -> NotFound:
    return NotFound(f"subscription {subscription_id} not found", {"id": subscription_id})


async def collection(request: Request) -> Response:
    """`/subscriptions`: one route for both methods, so that a 405 names them both in `Allow`."""
    if request.method == "POST":
        return await create(request)
    return await list_subscriptions(request)


async def create(request: Request) -> Response:
    app = state(request)
    require_api_key(request, app, scope_of(request))
    read_query(request)
    data = await _body(request, app, CREATE_FIELDS)
    f = fields.FieldErrors()
    url = await _url(f, data, app, required=True)
    description = f.read(data, "description", _description)
    wanted = f.read(data, "filter", read_filter)
    secret = data.get("secret")
    if secret is not None:
        problem = signing.secret_problem(secret) if isinstance(secret, str) else "must be a string"
        if problem is not None:
            f.add("secret", problem)
    if f:
        raise f.refusal()
    secret = secret or signing.new_secret()
    filter_json = wanted.to_json() if wanted is not None else {}
    async with (
        database_errors("subscribe"),
        app.pool.acquire(timeout=app.settings.db_timeout) as conn,
        conn.transaction(),
    ):
        subscription_id = await store.new_id(conn)
        row = await store.create(
            conn,
            subscription_id,
            url,  # type: ignore[arg-type]  # refused above when None
            description,
            filter_json,
            seal(secret, subscription_id, app.settings.subscription_key),
        )
    return EnvelopeResponse(0, {**view(row), "secret": secret}, status_code=201)


async def list_subscriptions(request: Request) -> Response:
    app = state(request)
    require_api_key(request, app, scope_of(request))
    params = read_query(request, ("limit", "cursor"))
    limit = page_limit(params, DEFAULT_PAGE, MAX_PAGE)
    after = _cursor(params)
    async with database_errors("read"), app.pool.acquire(timeout=app.settings.db_timeout) as conn:
        rows = await store.list_page(conn, limit + 1, after)
    more = len(rows) > limit
    rows = rows[:limit]
    return ok({"items": [view(r) for r in rows], "next_cursor": str(rows[-1]["id"]) if more else None})


def _cursor(params: dict[str, Any]) -> int | None:
    try:
        return fields.count(params.get("cursor"), 2**62)
    except fields.FieldError:
        raise LimitExceeded(
            "bad cursor: pass next_cursor from the previous page unchanged", {"cursor": "bad cursor"}
        ) from None


async def one(request: Request) -> Response:
    """`/subscriptions/{id}`: GET, PATCH and DELETE on one route, so that a 405 names all three."""
    if request.method == "PATCH":
        return await change(request)
    if request.method == "DELETE":
        return await remove(request)
    app = state(request)
    require_api_key(request, app, scope_of(request))
    read_query(request)
    subscription_id = _subscription_id(request)
    async with database_errors("read"), app.pool.acquire(timeout=app.settings.db_timeout) as conn:
        row = await store.get(conn, subscription_id)
    if row is None:
        raise _not_found(subscription_id)
    return ok(view(row))


def _enabled(value: Any) -> bool:
    if not isinstance(value, bool):
        raise fields.FieldError("must be true or false")
    return value


async def change(request: Request) -> Response:
    app = state(request)
    require_api_key(request, app, scope_of(request))
    read_query(request)
    subscription_id = _subscription_id(request)
    data = await _body(request, app, PATCH_FIELDS)
    f = fields.FieldErrors()
    changes: dict[str, Any] = {}
    if "url" in data:
        changes["url"] = await _url(f, data, app, required=True)
    if "description" in data:
        changes["description"] = f.read(data, "description", _description)
    if "filter" in data:
        wanted = f.read(data, "filter", read_filter)
        changes["filter"] = wanted.to_json() if wanted is not None else {}
    if "enabled" in data:
        changes["enabled"] = f.read(data, "enabled", _enabled, required=True)
    if f:
        raise f.refusal()
    if not changes:
        raise MissingFields({name: "give at least one" for name in PATCH_FIELDS}, "nothing to change")
    async with database_errors("subscribe"), app.pool.acquire(timeout=app.settings.db_timeout) as conn:
        row = await store.update(conn, subscription_id, changes)
    if row is None:
        raise _not_found(subscription_id)
    return ok(view(row))


async def remove(request: Request) -> Response:
    app = state(request)
    require_api_key(request, app, scope_of(request))
    read_query(request)
    subscription_id = _subscription_id(request)
    async with database_errors("subscribe"), app.pool.acquire(timeout=app.settings.db_timeout) as conn:
        deleted = await store.delete(conn, subscription_id)
    if not deleted:
        raise _not_found(subscription_id)
    return ok({"id": subscription_id, "deleted": True})


async def rotate_secret(request: Request) -> Response:
    """A new secret (generated, or `{"secret"}`); the old one goes on signing beside it for 24 hours."""
    app = state(request)
    require_api_key(request, app, scope_of(request))
    read_query(request)
    subscription_id = _subscription_id(request)
    data = await _body(request, app, ("secret",), empty_ok=True)
    secret = data.get("secret")
    if secret is not None:
        problem = signing.secret_problem(secret) if isinstance(secret, str) else "must be a string"
        if problem is not None:
            raise BadPayload({"secret": problem})
    secret = secret or signing.new_secret()
    until = datetime.now(UTC) + timedelta(seconds=signing.ROTATION_GRACE_SECONDS)
    sealed = seal(secret, subscription_id, app.settings.subscription_key)
    async with database_errors("subscribe"), app.pool.acquire(timeout=app.settings.db_timeout) as conn:
        row = await store.rotate(conn, subscription_id, sealed, until)
    if row is None:
        raise _not_found(subscription_id)
    return ok({**view(row), "secret": secret, "previous_secret_expires_at": until})


def _state(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if value not in STATES:
        raise fields.FieldError(f"must be one of {', '.join(STATES)}")
    return str(value)


async def deliveries(request: Request) -> Response:
    """Each event's delivery with its attempts, newest first."""
    app = state(request)
    require_api_key(request, app, scope_of(request))
    params = read_query(request, ("state", "cursor", "limit"))
    subscription_id = _subscription_id(request)
    f = fields.FieldErrors()
    wanted = f.read(params, "state", _state)
    if f:
        raise f.refusal()
    limit = page_limit(params, DEFAULT_PAGE, MAX_PAGE)
    before = _cursor(params)
    async with database_errors("read"), app.pool.acquire(timeout=app.settings.db_timeout) as conn:
        if await store.get(conn, subscription_id) is None:
            raise _not_found(subscription_id)
        rows = await store.list_deliveries(conn, subscription_id, wanted, limit + 1, before)
    more = len(rows) > limit
    rows = rows[:limit]
    return ok({"items": [delivery_view(r) for r in rows], "next_cursor": str(rows[-1]["id"]) if more else None})


def _event_ids(value: Any) -> list[str]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_EVENT_IDS:
        raise fields.FieldError(f"must be a list of 1 to {MAX_EVENT_IDS} event ids")
    if not all(isinstance(v, str) and 0 < len(v) <= 64 and "\x00" not in v for v in value):
        raise fields.FieldError("each must be an event id as the feed and webhook-id give it")
    return list(dict.fromkeys(value))


async def replay(request: Request) -> Response:
    """Queue deliveries again: every delivered or failed one of an event from `since` on, or those of
    `event_ids`. Only events this subscription had a delivery of (it matched, after its creation)."""
    app = state(request)
    require_api_key(request, app, scope_of(request))
    read_query(request)
    subscription_id = _subscription_id(request)
    data = await _body(request, app, ("since", "event_ids"))
    f = fields.FieldErrors()
    since = f.read(data, "since", fields.timestamp)
    event_ids = f.read(data, "event_ids", _event_ids)
    if f:
        raise f.refusal()
    if since is None and event_ids is None:
        raise MissingFields({"since": "give since or event_ids", "event_ids": "or this"})
    if since is not None and event_ids is not None:
        raise BadPayload({"event_ids": "give since or event_ids, not both"})
    async with (
        database_errors("replay"),
        app.pool.acquire(timeout=app.settings.db_timeout) as conn,
        conn.transaction(),
    ):
        if await store.get(conn, subscription_id) is None:
            raise _not_found(subscription_id)
        not_found: list[str] = []
        if since is not None:
            queued = await store.replay_since(conn, subscription_id, since)
        else:
            queued, not_found = await store.replay_events(conn, subscription_id, event_ids)
    return ok({"queued": queued, "not_found": not_found})
