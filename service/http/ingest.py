"""`/dlr/{dialect}`: a sender's callback in, committed, answered.

handler -> token -> dialect parse -> writer (engine inside the transaction) -> envelope. A payload that
cannot be parsed or validated is quarantined with its reason before it is refused.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from service import logs, metrics, store
from service.auth import require_webhook_token
from service.dialects import DIALECTS, ItemError, Parser
from service.errors import LimitExceeded, MethodNotAllowed, UnknownModule, database_errors, field_error
from service.http.envelope import batch_answer, ok
from service.http.requests import read_body, state
from service.payloads import BatchTooLarge, PayloadError, RequestParts, media_type
from service.store import AppliedReport, IncomingReport

logger = logging.getLogger("dlr_tracker.ingest")


def parser_for(dialect: str) -> Parser:
    parser = DIALECTS.get(dialect)
    if parser is None:
        raise UnknownModule(f"unknown dialect {dialect[:64]!r}", {"dialects": sorted(DIALECTS)})
    return parser


async def ingest(request: Request) -> Response:
    app = state(request)
    if request.method == "HEAD":
        # Starlette answers HEAD on every GET route; a HEAD must never store a report.
        raise MethodNotAllowed("HEAD is not allowed on /dlr/*: send GET or POST", headers={"Allow": "GET, POST"})
    dialect = request.path_params["dialect"]
    parser = parser_for(dialect)
    logs.dialect.set(dialect)
    require_webhook_token(request, app.settings.token_for(dialect))
    parts = RequestParts(
        method=request.method,
        content_type=media_type(request.headers.get("content-type")),
        query=request.scope.get("query_string", b""),
        body=await read_body(request, app.settings.max_body_bytes),
    )
    return await process(app, dialect, parser, parts)


async def process(app: Any, dialect: str, parser: Parser, parts: RequestParts) -> Response:
    received_at = datetime.now(UTC)
    try:
        parsed = parser(parts, received_at, app.settings.max_batch)
    except BatchTooLarge as exc:
        raise LimitExceeded(f"batch too large: at most {exc.limit} items", exc.errors) from None
    except PayloadError as exc:
        await _quarantine(app, dialect, [(parts, exc.errors, None)], received_at)
        raise field_error(exc.errors, exc.code) from None
    if not parsed.batch and parsed.items[0].message_id is not None:
        logs.message_id.set(parsed.items[0].message_id)
    reports = [item for item in parsed.items if isinstance(item, IncomingReport)]
    answers = iter(await app.writer.apply(reports))
    failed = [item for item in parsed.items if isinstance(item, ItemError)]
    await _quarantine(app, dialect, [(f.parts, f.errors, f.message_id) for f in failed], received_at)

    if not parsed.batch:
        item = parsed.items[0]
        if isinstance(item, ItemError):
            raise field_error(item.errors, item.code)
        return ok(_answer(next(answers)))
    results: list[dict[str, Any]] = []
    for index, item in enumerate(parsed.items):
        if isinstance(item, ItemError):
            results.append({"index": index, "code": item.code, "errors": item.errors})
        else:
            results.append({"index": index, "code": 0, **_answer(next(answers))})
    return batch_answer(results)


def _answer(answer: AppliedReport) -> dict[str, Any]:
    return {
        "id": answer.message_id,
        "status": answer.status.value,
        "applied": answer.applied,
        "reason": answer.reason.value if answer.reason else None,
    }


async def _quarantine(
    app: Any, dialect: str, entries: list[tuple[RequestParts, dict[str, str], str | None]], received_at: datetime
) -> None:
    if not entries:
        return
    ids = []
    pool = app.pool
    async with database_errors("quarantine"), pool.acquire(timeout=app.settings.db_timeout) as conn, conn.transaction():
        for parts, errors, message_id in entries:
            raw = store.RawRequest(dialect, parts.method, parts.content_type, parts.query, parts.body)
            ids.append(await store.quarantine(conn, raw, errors, received_at, message_id))
    for quarantine_id, (_parts, errors, _id) in zip(ids, entries, strict=True):
        # The reasons name fields and what is wrong with them; never the payload itself.
        logger.info("quarantined payload %d: %s", quarantine_id, "; ".join(f"{k}: {v}" for k, v in errors.items()))
        metrics.QUARANTINED.labels(dialect).inc()
        metrics.REPORTS.labels(dialect, "invalid").inc()
