"""`/messages`: register sent messages, read statuses one, many or a page at a time."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from service import fields, metrics, store
from service.auth import require_api_key
from service.errors import BadPayload, LimitExceeded, MissingFields, NotFound, RefusedPayload, database_errors
from service.http import views
from service.http.envelope import batch_answer, ok
from service.http.requests import page_limit, read_query, read_request_body, state
from service.http.scopes import scope_of
from service.ledger import REGISTRATION, RegistrationDecision
from service.payloads import JSON, RequestParts, decode_request, media_type, unsupported_content_type
from service.reports import Registration
from service.services import Services
from service.statuses import Status

MAX_IDS = 100
MAX_TEXT = 10_000  # a registered message's text, kept for whoever looks the message up
# What filters and pages a listing; meaningless next to `ids`, so refused there rather than ignored.
PAGE_PARAMETERS = ("campaign", "to", "status", "since", "until", "limit", "cursor")
DEFAULT_PAGE = 50
MAX_PAGE = 1000


async def register(request: Request) -> Response:
    app = state(request)
    require_api_key(request, app, scope_of(request))
    read_query(request)  # the body says it all: a query parameter would be ignored, so it is refused
    parts = RequestParts(
        "POST",
        media_type(request.headers.get("content-type")),
        b"",
        await read_request_body(request, app.settings.max_body_bytes),
    )
    if not _is_json(parts):
        raise unsupported_content_type(parts.content_type)
    data = decode_request(parts)
    batch = isinstance(data, list)
    entries = data if batch else [data]
    if not isinstance(data, dict | list) or not entries:
        raise BadPayload({"body": "must be a JSON object or a non-empty array of objects"})
    if len(entries) > app.settings.max_batch:
        raise LimitExceeded(
            f"batch of {len(entries)} items; at most {app.settings.max_batch}",
            {"batch": f"at most {app.settings.max_batch} items"},
        )
    now = datetime.now(UTC)
    parsed = [_registration(entry, now) for entry in entries]
    valid = [p for p in parsed if isinstance(p, Registration)]
    results: list[RegistrationDecision] = []
    if valid:
        async with database_errors("register"), app.pool.acquire(timeout=app.settings.db_timeout) as conn:
            results = await store.register_messages(conn, valid, lifetime=app.settings.lifetime)
        created = sum(1 for r in results if r.created)
        if created:  # each creation is a change event on the feed
            metrics.EVENTS.labels(REGISTRATION).inc(created)
            app.changes.notify()
    answers = iter(results)
    if not batch:
        if not isinstance(parsed[0], Registration):
            raise parsed[0]
        return ok(_registered(next(answers)))
    items: list[dict[str, Any]] = []
    for index, p in enumerate(parsed):
        if isinstance(p, Registration):
            items.append({"index": index, "code": 0, **_registered(next(answers))})
        else:
            items.append({"index": index, "code": p.code, "errors": p.errors})
    return batch_answer(items)


def _registered(decision: RegistrationDecision) -> dict[str, Any]:
    return {"id": decision.message_id, "status": decision.status, "created": decision.created}


def _is_json(parts: RequestParts) -> bool:
    """Registration is JSON (an object or an array), as /openapi.json says. A form body would be read as
    one message with every value as text, a batch it cannot express: refused (code 6) rather than half-read.
    Without a Content-Type, a body starting `{` or `[` is JSON, as ingest reads it."""
    kind = parts.content_type
    if kind is None:
        return parts.body.lstrip()[:1] in (b"{", b"[")
    return kind == JSON or kind.endswith("+json")


def _registration(entry: Any, now: datetime) -> Registration | RefusedPayload:
    if not isinstance(entry, dict):
        return BadPayload({"item": "must be a JSON object"})
    f = fields.FieldErrors()
    message_id = f.read(entry, "id", fields.message_id, required=True)
    recipient = f.read(entry, "to", fields.short)
    campaign = f.read(entry, "campaign", fields.text)
    segments = f.read(entry, "segments", fields.count)
    sent_at = f.read(entry, "sent_at", fields.timestamp)
    text = f.read(entry, "text", lambda v: fields.text(v, MAX_TEXT))
    if f:
        return f.refusal()
    return Registration(message_id, now, recipient, campaign, segments, sent_at, text)


async def collection(request: Request) -> Response:
    """`/messages`: one route for both methods, so that a 405 names them both in `Allow`."""
    if request.method == "POST":
        return await register(request)
    return await list_or_many(request)


def path_id(request: Request, name: str, what: str) -> str:
    """An id from the path. PostgreSQL text cannot hold NUL, so no stored id has one: not found."""
    value: str = request.path_params[name]
    if "\x00" in value:
        raise NotFound(f"{what} not found", {name: value.replace("\x00", "\\0")[:255]})
    return value


async def get_one(request: Request) -> Response:
    app = state(request)
    require_api_key(request, app, scope_of(request))
    read_query(request)
    message_id = path_id(request, "id", "message")
    async with database_errors("read"), app.pool.acquire(timeout=app.settings.db_timeout) as conn:
        record = await store.get_message(conn, message_id)
    if record is None:
        raise NotFound(f"message {message_id[:80]!r} not found", {"id": message_id[:255]})
    return ok(views.message(record))


async def history(request: Request) -> Response:
    app = state(request)
    require_api_key(request, app, scope_of(request))
    read_query(request)
    message_id = path_id(request, "id", "message")
    async with database_errors("read"), app.pool.acquire(timeout=app.settings.db_timeout) as conn:
        exists = await store.get_message(conn, message_id)
        events = await store.get_history(conn, message_id) if exists else []
    if exists is None:
        raise NotFound(f"message {message_id[:80]!r} not found", {"id": message_id[:255]})
    return ok({"items": [views.history_event(e) for e in events]})


async def list_or_many(request: Request) -> Response:
    app = state(request)
    require_api_key(request, app, scope_of(request))
    params = read_query(request, PAGE_PARAMETERS, repeatable=("ids",))
    if "ids" in params:
        mixed = [name for name in PAGE_PARAMETERS if params.get(name, "") != ""]
        if mixed:
            raise BadPayload({name: "cannot be combined with ids" for name in mixed})
        return await _many(app, params["ids"])
    return await _page(app, params)


async def _many(app: Services, values: list[str]) -> Response:
    # `ids=a,b`, `ids=a&ids=b` (requests, httpx) and both at once: the ids in order, each once.
    ids = list(dict.fromkeys(i for v in values for i in v.split(",") if i))
    if not ids:
        raise MissingFields({"ids": "required"})
    if len(ids) > MAX_IDS:
        raise LimitExceeded(f"{len(ids)} ids; at most {MAX_IDS}", {"ids": f"at most {MAX_IDS} ids"})
    async with database_errors("read"), app.pool.acquire(timeout=app.settings.db_timeout) as conn:
        records = await store.get_messages(conn, ids)
    found = {r.id: r for r in records}
    return ok(
        {
            "items": [views.message(found[i]) for i in ids if i in found],
            "not_found": [i for i in ids if i not in found],
        }
    )


async def _page(app: Services, params: dict[str, Any]) -> Response:
    f = fields.FieldErrors()
    campaign = f.read(params, "campaign", fields.text)
    recipient = f.read(params, "to", fields.short)
    status = f.read(params, "status", _status)
    since = f.read(params, "since", fields.timestamp)
    until = f.read(params, "until", fields.timestamp)
    if f:
        raise f.refusal()
    limit = page_limit(params, DEFAULT_PAGE, MAX_PAGE)
    if since is not None and until is not None and since >= until:
        raise LimitExceeded("since must be before until", {"since": "must be before until"})
    after = _decode_cursor(params.get("cursor"))
    filt = store.MessageFilter(campaign, status, recipient, since, until)
    async with database_errors("read"), app.pool.acquire(timeout=app.settings.db_timeout) as conn:
        records = await store.list_messages(conn, filt, limit + 1, after)
    more = len(records) > limit
    records = records[:limit]
    next_cursor = _encode_cursor(records[-1].sent_at, records[-1].id) if more else None
    return ok({"items": [views.message(r) for r in records], "next_cursor": next_cursor})


def _status(value: Any) -> Status | None:
    if value is None or value == "":
        return None
    # ASCII only: Unicode upper-casing would turn a dotless "ı" into an I.
    if not isinstance(value, str) or not value.isascii() or value.upper() not in Status.__members__:
        raise fields.FieldError(f"must be one of {', '.join(s.value for s in Status)}")
    return Status(value.upper())


def _encode_cursor(sent_at: datetime, message_id: str) -> str:
    raw = json.dumps([sent_at.isoformat(), message_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(value: Any) -> tuple[datetime, str] | None:
    if value is None or value == "":
        return None
    bad = LimitExceeded("bad cursor: pass next_cursor from the previous page unchanged", {"cursor": "bad cursor"})
    if not isinstance(value, str) or len(value) > 2000:
        raise bad
    try:
        sent_at, message_id = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        moment = datetime.fromisoformat(sent_at)
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise bad from None
    if not isinstance(message_id, str) or moment.tzinfo is None or "\x00" in message_id:
        raise bad
    try:
        message_id.encode()
    except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape: PostgreSQL could not take it
        raise bad from None
    if not fields.MIN_TIME <= moment < fields.MAX_TIME:
        raise bad
    return moment, message_id
