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
from typing import Any, NamedTuple
from urllib.parse import unquote_to_bytes

from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from service import logs, metrics, store
from service.auth import require_webhook_token, verify_callback
from service.dialects import DIALECTS, Dialect, ItemError
from service.dialects.types import Acknowledgement
from service.errors import MethodNotAllowed, RefusedPayload, ServiceError, ShuttingDown, UnknownModule, database_errors
from service.http.envelope import batch_outcome, envelope_body, unexpected_error_message
from service.http.request_ids import request_id_from
from service.http.requests import read_body
from service.ledger import ReportDecision
from service.payloads import JSON, RequestParts, media_type
from service.reports import IncomingReport
from service.services import Services

logger = logging.getLogger("dlr_tracker.ingest")
access = logging.getLogger("dlr_tracker.access")


def dialect_for(name: str) -> Dialect:
    dialect = DIALECTS.get(name)
    if dialect is None:
        raise UnknownModule(f"unknown dialect {name[:64]!r}", {"dialects": sorted(DIALECTS)})
    return dialect


# The methods each sender calls back with: GET only for those whose dialect reads a query string.
ALLOWED = {name: ("GET", "POST") if dialect.takes_get else ("POST",) for name, dialect in DIALECTS.items()}


class Answer(NamedTuple):
    """A response as sent: status, body, content type, extra headers."""

    status: int
    body: bytes
    media_type: str | None = JSON
    headers: dict[str, str] | None = None


def envelope(
    code: int, data: Any = None, message: str = "", status: int = 200, headers: dict[str, str] | None = None
) -> Answer:
    return Answer(status, envelope_body(code, data, message), JSON, headers)


def error_answer(exc: ServiceError) -> Answer:
    return envelope(exc.code, exc.data, exc.message, exc.status, exc.headers)


class IngestRequest(NamedTuple):
    """What the handler reads of a request, taken from the ASGI scope in one pass over its headers."""

    method: str
    dialect: str
    query: bytes
    content_type: str | None
    content_length: str | None
    authorization: str | None
    scope: Scope

    @classmethod
    def read(cls, scope: Scope, dialect: str) -> IngestRequest:
        content_type = content_length = authorization = None
        # The first of a repeated header, as Starlette's Headers.get() reads it.
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = content_type if content_type is not None else value.decode("latin-1")
            elif name == b"content-length":
                content_length = content_length if content_length is not None else value.decode("latin-1")
            elif name == b"authorization":
                authorization = authorization if authorization is not None else value.decode("latin-1")
        query = scope.get("query_string", b"")
        return cls(scope["method"], dialect, query, content_type, content_length, authorization, scope)

    def all_headers(self) -> dict[str, str]:
        # Only read to check a signature: the last of a repeated header, as before.
        return {k.decode("latin-1"): v.decode("latin-1") for k, v in self.scope["headers"]}

    def signed_url(self, public_url: str | None) -> str:
        """The URL a sender signed: as received (scheme, Host with its port, path, query), or under
        DLR_PUBLIC_URL when a proxy in front changed the scheme or host."""
        scope = self.scope
        path: bytes = scope.get("raw_path") or scope["path"].encode()
        tail = path.decode("latin-1") + ("?" + self.query.decode("latin-1") if self.query else "")
        if public_url:
            return public_url + tail
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        return f"{scope.get('scheme', 'http')}://{host}{tail}"


async def ingest(services: Services, request: IngestRequest, receive: Receive) -> Answer:
    dialect = dialect_for(request.dialect)
    allowed = ALLOWED[dialect.name]
    # A HEAD must never store a report.
    if request.method not in allowed:
        raise MethodNotAllowed(
            f"{request.method} is not allowed on /dlr/{dialect.name}: send {' or '.join(allowed)}",
            headers={"Allow": ", ".join(allowed)},
        )
    logs.dialect.set(dialect.name)
    settings = services.settings
    require_webhook_token(request.authorization, request.query, settings.token_for(dialect.name))
    # Headers and the URL as signed are only read to check a signature: not worth building for every report.
    signed = dialect.name in settings.webhook_secrets or (dialect.verify is None and settings.webhook_secret)
    parts = RequestParts(
        method=request.method,
        content_type=media_type(request.content_type),
        query=request.query,
        body=await read_body(receive, request.content_length, settings.max_body_bytes),
        headers=request.all_headers() if signed else {},
        url=request.signed_url(settings.public_url) if signed else "",
    )
    event_id = verify_callback(dialect, parts, settings, time.time())
    return await process(services, dialect, parts, event_id)


async def process(app: Services, dialect: Dialect, parts: RequestParts, event_id: str | None = None) -> Answer:
    ack = dialect.ack
    try:
        answer = await _process(app, dialect, parts, event_id)
    except RefusedPayload:
        # A payload refused is quarantined, so a sender that resends whatever is not acknowledged is
        # acknowledged for it too. Nothing is acknowledged that is not stored: 503s stay 503s.
        if ack.refused_too:
            return _acknowledge(ack)
        raise
    return answer if ack.body is None else _acknowledge(ack)


def _acknowledge(ack: Acknowledgement) -> Answer:
    assert ack.body is not None
    return Answer(200, ack.body, ack.media_type)


async def _process(app: Services, dialect: Dialect, parts: RequestParts, event_id: str | None) -> Answer:
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
        return envelope(0, _answer(next(answers)))
    results: list[dict[str, Any]] = []
    for index, item in enumerate(parsed.items):
        if isinstance(item, ItemError):
            results.append({"index": index, "code": item.code, "errors": item.errors})
        else:
            results.append({"index": index, "code": 0, **_answer(next(answers))})
    code, message, status = batch_outcome(results)
    return envelope(code, {"items": results}, message, status)


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


class IngestEndpoint:
    """`/dlr/{dialect}` as a bare ASGI app, reached before Starlette's middleware, router and request and
    response objects: at thousands of reports a second those layers cost more than the status engine.

    It does itself what they do for every other route, with the same outcome: the request id (taken from
    `X-Request-ID` or made) on the log lines and the response, the HTTP metrics and access line, a
    ServiceError as its envelope, anything else as a 500 envelope with a reference.
    """

    ROUTE = "/dlr/{dialect}"

    def __init__(self) -> None:
        self.services: Services | None = None  # set by the app's lifespan, once the pool is up

    @staticmethod
    def dialect_of(path: str) -> str | None:
        """The dialect a path names, or None when it is not `/dlr/<one segment>` (Starlette's `{dialect}`)."""
        if not path.startswith("/dlr/"):
            return None
        name = path[5:]
        return name if name and "/" not in name else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send, dialect: str) -> None:
        started = time.perf_counter()
        rid = request_id_from(scope["headers"])
        token = logs.request_id.set(rid)
        method = scope["method"]
        status = 499  # the client went away before it could be answered (nginx's code for it)
        try:
            try:
                services = self.services
                if services is None or services.shutting_down:
                    raise ShuttingDown()
                answer = await ingest(services, IngestRequest.read(scope, dialect), receive)
            except ServiceError as exc:
                answer = error_answer(exc)
            except ClientDisconnect:
                return
            except Exception as exc:
                answer = envelope(3, None, unexpected_error_message(exc), 500)
            status = answer.status
            await send({"type": "http.response.start", "status": status, "headers": _headers(answer, rid)})
            await send({"type": "http.response.body", "body": answer.body})
        finally:
            elapsed = time.perf_counter() - started
            metrics.child(metrics.HTTP_REQUESTS, self.ROUTE, method, str(status)).inc()
            metrics.child(metrics.HTTP_SECONDS, self.ROUTE, method).observe(elapsed)
            access.debug("%s %s %d %.1fms", method, scope["path"][:200], status, elapsed * 1000)
            logs.request_id.reset(token)


def _headers(answer: Answer, rid: str) -> list[tuple[bytes, bytes]]:
    # What Starlette's Response would send: the length, the type (text with its charset), then the rest.
    headers = [(b"content-length", str(len(answer.body)).encode())]
    kind = answer.media_type
    if kind is not None:
        if kind.startswith("text/") and "charset=" not in kind.lower():
            kind += "; charset=utf-8"
        headers.append((b"content-type", kind.encode("latin-1")))
    if answer.headers:
        headers.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items())
    headers.append((b"x-request-id", rid.encode()))
    return headers
