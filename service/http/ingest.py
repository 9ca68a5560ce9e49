"""`/dlr/{dialect}`: a sender's callback in, committed, answered.

handler -> token -> signature -> dialect parse -> writer (engine inside the transaction) -> the answer
the sender expects. A payload that cannot be parsed or validated is quarantined with its reason before it
is refused (a sender whose acknowledgement covers refused payloads, Jasmin, is acknowledged all the same: it
would otherwise resend it, and it is kept).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.requests import Request
from starlette.responses import Response

from service import logs, metrics, store
from service.auth import require_webhook_token, verify_callback
from service.dialects import DIALECTS, Dialect, ItemError
from service.dialects.types import Acknowledgement
from service.errors import MethodNotAllowed, RefusedPayload, UnknownModule, database_errors
from service.http.envelope import batch_answer, ok
from service.http.requests import read_body, state
from service.ledger import ReportDecision
from service.payloads import RequestParts, media_type
from service.reports import IncomingReport
from service.services import Services

logger = logging.getLogger("dlr_tracker.ingest")


def dialect_for(name: str) -> Dialect:
    dialect = DIALECTS.get(name)
    if dialect is None:
        raise UnknownModule(f"unknown dialect {name[:64]!r}", {"dialects": sorted(DIALECTS)})
    return dialect


# The methods each sender calls back with: GET only for those whose dialect reads a query string.
ALLOWED = {name: ("GET", "POST") if dialect.takes_get else ("POST",) for name, dialect in DIALECTS.items()}


def _signed_url(request: Request, public_url: str | None) -> str:
    """The URL a sender signed: as received (scheme, Host with its port, path, query), or under
    DLR_PUBLIC_URL when a proxy in front changed the scheme or host."""
    path: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    query: bytes = request.scope.get("query_string", b"")
    tail = path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
    if public_url:
        return public_url + tail
    host = request.headers.get("host", "")
    return f"{request.scope.get('scheme', 'http')}://{host}{tail}"


async def ingest(request: Request) -> Response:
    app = state(request)
    dialect = dialect_for(request.path_params["dialect"])
    allowed = ALLOWED[dialect.name]
    # A HEAD (which Starlette would route with GET) must never store a report.
    if request.method not in allowed:
        raise MethodNotAllowed(
            f"{request.method} is not allowed on /dlr/{dialect.name}: send {' or '.join(allowed)}",
            headers={"Allow": ", ".join(allowed)},
        )
    logs.dialect.set(dialect.name)
    settings = app.settings
    require_webhook_token(request, settings.token_for(dialect.name))
    # Headers and the URL as signed are only read to check a signature: not worth building for every report.
    signed = dialect.name in settings.webhook_secrets or (dialect.verify is None and settings.webhook_secret)
    parts = RequestParts(
        method=request.method,
        content_type=media_type(request.headers.get("content-type")),
        query=request.scope.get("query_string", b""),
        body=await read_body(request, settings.max_body_bytes),
        headers={k.decode("latin-1"): v.decode("latin-1") for k, v in request.scope["headers"]} if signed else {},
        url=_signed_url(request, settings.public_url) if signed else "",
    )
    event_id = verify_callback(dialect, parts, app.settings, time.time())
    return await process(app, dialect, parts, event_id)


async def process(app: Services, dialect: Dialect, parts: RequestParts, event_id: str | None = None) -> Response:
    ack = dialect.ack
    try:
        response = await _process(app, dialect, parts, event_id)
    except RefusedPayload:
        # A payload refused is quarantined, so a sender that resends whatever is not acknowledged is
        # acknowledged for it too. Nothing is acknowledged that is not stored: 503s stay 503s.
        if ack.refused_too:
            return _acknowledge(ack)
        raise
    return response if ack.body is None else _acknowledge(ack)


def _acknowledge(ack: Acknowledgement) -> Response:
    assert ack.body is not None
    return Response(ack.body, 200, media_type=ack.media_type)


async def _process(app: Services, dialect: Dialect, parts: RequestParts, event_id: str | None) -> Response:
    received_at = datetime.now(UTC)
    name = dialect.name
    try:
        parsed = dialect.parse(parts, received_at, app.settings.max_batch)
    except RefusedPayload as exc:  # an oversized batch too: the sender is told to split it, and it is kept
        await _quarantine(app, name, [(parts, exc.errors, None)], received_at)
        raise
    if not parsed.batch and parsed.items[0].message_id is not None:
        logs.message_id.set(parsed.items[0].message_id)
    reports = [item for item in parsed.items if isinstance(item, IncomingReport)]
    if event_id is not None:
        # A signed webhook's id is its idempotency key: a retry of it is a duplicate, whatever it says.
        many = len(parsed.items) > 1
        reports = [
            r if r.event_id is not None else r._replace(event_id=f"{event_id}#{i}" if many else event_id)
            for i, r in enumerate(reports)
        ]
    answers = iter(await app.writer.apply(reports))
    failed = [item for item in parsed.items if isinstance(item, ItemError)]
    if failed:
        await _quarantine(app, name, [(f.parts, f.errors, f.message_id) for f in failed], received_at)

    if not parsed.batch:
        item = parsed.items[0]
        if isinstance(item, ItemError):
            raise item.refusal()
        return ok(_answer(next(answers)))
    results: list[dict[str, Any]] = []
    for index, item in enumerate(parsed.items):
        if isinstance(item, ItemError):
            results.append({"index": index, "code": item.code, "errors": item.errors})
        else:
            results.append({"index": index, "code": 0, **_answer(next(answers))})
    return batch_answer(results)


def _answer(answer: ReportDecision) -> dict[str, Any]:
    return {
        "id": answer.message_id,
        "status": answer.status,  # a StrEnum: json writes its value
        "applied": answer.applied,
        "reason": answer.reason,
    }


def _without_token(query: bytes) -> bytes:
    """The query string minus the webhook token: the quarantine is read by API-key holders, and a replay
    is not authenticated again, so the token has no business being kept."""
    if b"token" not in query:
        return query
    kept = [
        pair for pair in query.split(b"&") if unquote_to_bytes(pair.partition(b"=")[0].replace(b"+", b" ")) != b"token"
    ]
    return b"&".join(kept)


async def _quarantine(
    app: Services, dialect: str, entries: list[tuple[RequestParts, dict[str, str], str | None]], received_at: datetime
) -> None:
    if not entries:
        return
    ids = []
    pool = app.pool
    async with database_errors("quarantine"), pool.acquire(timeout=app.settings.db_timeout) as conn, conn.transaction():
        for parts, errors, message_id in entries:
            query = _without_token(parts.query)
            raw = store.RawRequest(dialect, parts.method, parts.content_type, query, parts.body)
            ids.append(await store.quarantine(conn, raw, errors, received_at, message_id))
    for quarantine_id, (_parts, errors, _id) in zip(ids, entries, strict=True):
        # The reasons name fields and what is wrong with them; never the payload itself.
        logger.info("quarantined payload %d: %s", quarantine_id, "; ".join(f"{k}: {v}" for k, v in errors.items()))
        metrics.QUARANTINED.labels(dialect).inc()
        metrics.REPORTS.labels(dialect, "invalid").inc()
