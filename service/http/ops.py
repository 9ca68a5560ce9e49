"""Liveness, readiness, metrics and the API description."""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from service import store
from service.http.envelope import EnvelopeResponse, ok
from service.http.openapi import spec
from service.metrics import registry
from service.services import Services

READY_TIMEOUT = 2.0


async def healthz(request: Request) -> Response:
    # Never touches the database: a database blip must not get every replica restarted.
    return ok({"status": "alive"})


async def readyz(request: Request) -> Response:
    app: Services = request.app.state.services
    if app.draining:
        return EnvelopeResponse(999, {"ready": False, "reason": "shutting down"}, "shutting down", 503)
    try:
        async with asyncio.timeout(READY_TIMEOUT), app.pool.acquire() as conn:
            version = await store.schema_version(conn)
    except Exception as exc:  # readiness is a yes or no: whatever failed, the answer is no
        return EnvelopeResponse(
            10,
            {"ready": False, "reason": f"database unreachable ({type(exc).__name__})"},
            "database unreachable",
            503,
            {"Retry-After": "5"},
        )
    if version != app.schema_head:
        return EnvelopeResponse(
            10,
            {"ready": False, "reason": f"schema at {version}, expected {app.schema_head}"},
            "schema is behind: run `dlr-tracker migrate`",
            503,
            {"Retry-After": "5"},
        )
    return ok({"ready": True, "schema": version})


async def metrics(request: Request) -> Response:
    return Response(generate_latest(registry()), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    settings = request.app.state.services.settings
    # Per-dialect tokens count too: /dlr/* then asks for a token, from some senders at least.
    token = settings.webhook_token is not None or bool(settings.webhook_tokens)
    body = spec(settings.max_batch, bool(settings.api_keys), token)
    return Response(body, media_type="application/json")
