"""`create_app(settings)`: routes, error mapping, middleware, and one lifespan for the pool."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any
from urllib.parse import unquote

import prometheus_client
from starlette.applications import Starlette
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import database, logs, metrics, store
from service.access import TokenBuckets
from service.campaign_cache import CampaignStatsCache
from service.config import Settings
from service.console import chart
from service.console.routes import Console
from service.errors import ServiceError
from service.feed import ChangeSignal
from service.http import campaigns, events, ingest, messages, ops, quarantine, subscriptions, tasks
from service.http.envelope import http_error, service_error, unexpected_error
from service.http.request_ids import request_id_from
from service.services import Services
from service.subscriptions.dispatch import SubscriptionDispatcher
from service.sweeper import ExpirySweeper
from service.tasks.runner import TaskRunner
from service.writer import ReportWriter

logger = logging.getLogger("dlr_tracker")
access = logging.getLogger("dlr_tracker.access")


class RequestIdMiddleware:
    """Takes `X-Request-ID` (when it is sane) or makes one, puts it on every log line and the response,
    and writes one access line per request at debug level (`LOG_LEVEL=debug`): method, path (never the
    query: tokens travel there), status and duration. Off by default: at thousands of reports a second
    it would cost more than the status engine. (`/dlr/*` does the same in `IngestEndpoint`.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_from(scope["headers"])
        token = logs.request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            # The route template, never the raw path: label values must stay bounded.
            route = getattr(scope.get("route"), "path", "unmatched")
            metrics.child(metrics.HTTP_REQUESTS, route, scope["method"], str(status)).inc()
            metrics.child(metrics.HTTP_SECONDS, route, scope["method"]).observe(elapsed)
            access.debug("%s %s %d %.1fms", scope["method"], scope["path"][:200], status, elapsed * 1000)
            logs.request_id.reset(token)


class DlrTracker(Starlette):
    """The application: Starlette, except that `/dlr/{dialect}` goes straight to its endpoint, before the
    middleware stack and the router (`IngestEndpoint` says why and what it does in their place)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ingest = ingest.IngestEndpoint()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            dialect = ingest.IngestEndpoint.dialect_of(scope["path"])
            if dialect is not None:
                scope["app"] = self
                await self.ingest(scope, receive, send, dialect)
                return
        await super().__call__(scope, receive, send)


def _mark_draining_on_signals(services: Services) -> None:
    """Make /readyz fail from the moment SIGTERM or SIGINT arrives, not only once the requests are done.

    uvicorn has installed its own handlers by the time the lifespan starts; ours runs first, then its.
    Signal handlers can only be set from the main thread (a test client runs the app elsewhere).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue

        def handler(received: int, frame: FrameType | None, previous: Callable[..., Any] = previous) -> None:
            services.draining = True
            previous(received, frame)

        signal.signal(signum, handler)


class AnythingConvertor(PathConvertor):
    """Like `path`, but line feeds too: Starlette's `.*` stops at one, and ids may hold any character."""

    regex = r"[\s\S]*"


class LastSegmentRoute(Route):
    """A route whose path ends in a fixed segment (`/history`) that must be a segment as sent.

    Routing reads the decoded path, where `/messages/x%2Fhistory` (message `x/history`) and
    `/messages/x/history` (the history of `x`) are one string. The raw path still tells them apart: an
    encoded slash is part of the id, so the last raw segment, decoded, must be the route's own.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.last_segment = path.rsplit("/", 1)[-1]

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        raw = scope.get("raw_path")
        if match is not Match.NONE and raw is not None:
            last = unquote(raw.rsplit(b"/", 1)[-1].decode("latin-1"))
            if last != self.last_segment:
                return Match.NONE, {}
        return match, child


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")


def freeze_startup_objects() -> None:
    """Leave what the start made (modules, routes, the schema's objects) out of every later garbage collection:
    a full collection walked all of it each time, and a page of 1000 events at p99 took 214-228 ms with it and
    86-100 ms without it (docs/PERFORMANCE.md). Objects made later are collected as usual."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings) -> Starlette:
    if settings.database_url is None:
        raise ValueError("create_app needs settings.database_url (the CLI starts the embedded server first)")
    dsn = settings.database_url.reveal()
    # `_created` series double the scrape for nothing the dashboards or alerts use.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = await database.create_pool(
            dsn, settings.db_pool_size, settings.db_timeout, prepared_statements=settings.db_prepared_statements
        )
        writers_pool = None
        if settings.group_commit:
            writers_pool = await database.create_pool(
                dsn,
                settings.writers,
                settings.db_timeout,
                prepared_statements=settings.db_prepared_statements,
                writers=True,
            )
        changes = ChangeSignal()
        writer = ReportWriter(
            pool,
            writers_pool=writers_pool,
            lifetime=settings.lifetime,
            timeout=settings.db_timeout,
            batching=settings.group_commit,
            max_batch=settings.max_batch,
            writers=settings.writers,
            changes=changes,
        )

        async def load_campaign(campaign: str) -> dict[str, Any] | None:
            async with pool.acquire(timeout=settings.db_timeout) as conn:
                return await store.campaign_stats(conn, campaign)

        async def load_histogram(campaign: str) -> dict[str, Any] | None:
            async with pool.acquire(timeout=settings.db_timeout) as conn:
                return {"counts": await store.delivery_histogram(conn, campaign, chart.BOUNDS)}

        runner = TaskRunner(pool, settings, changes)
        services = Services(
            settings=settings,
            pool=pool,
            writer=writer,
            campaign_stats=CampaignStatsCache(load_campaign, settings.campaign_stats_ttl),
            campaign_histograms=CampaignStatsCache(load_histogram, settings.campaign_stats_ttl),
            schema_head=database.head_revision(),
            changes=changes,
            rate_limits=TokenBuckets(settings.rate_limit) if settings.rate_limit is not None else None,
            tasks=runner,
        )
        app.state.services = services
        assert isinstance(app, DlrTracker)
        app.ingest.services = services
        _mark_draining_on_signals(services)
        writer.start()
        sweeper = ExpirySweeper(
            pool,
            interval=settings.sweep_interval,
            batch_size=settings.sweep_batch,
            duty=settings.sweep_duty,
            timeout=settings.db_timeout,
            event_retention=settings.event_retention,
            retention=settings.retention,
            lifetime=settings.lifetime,
            changes=changes,
        )
        sweeper.start()
        dispatcher = SubscriptionDispatcher(pool, settings)
        if settings.subscription_dispatch == "on":
            dispatcher.start()
        runner.start()
        freeze_startup_objects()
        pool_watch = asyncio.create_task(database.watch_pool(pool), name="pool-metrics")
        if not settings.api_keys:
            logger.warning("DLR_API_KEYS is not set: the read and registration API is open to anyone")
        if settings.webhook_token is None:
            logger.warning("DLR_WEBHOOK_TOKEN is not set: /dlr/* accepts reports from anyone")
        try:
            yield
        finally:
            # uvicorn has finished the in-flight requests by now (their reports are committed): stop the
            # writers, then the sweeper and the task runner after their current batches, then the pool.
            services.draining = services.shutting_down = True
            await writer.stop()
            if writers_pool is not None:
                await writers_pool.close()
            await sweeper.stop()
            await dispatcher.stop()
            await runner.stop()
            pool_watch.cancel()
            await pool.close()
            metrics.worker_stopped()

    register_url_convertor("anything", AnythingConvertor())
    routes = [
        Route("/messages", messages.collection, methods=["GET", "POST"]),
        LastSegmentRoute("/messages/{id:anything}/history", messages.history, methods=["GET"]),
        Route("/messages/{id:anything}", messages.get_one, methods=["GET"]),
        LastSegmentRoute("/campaigns/{campaign:anything}/export", tasks.export, methods=["POST"]),
        LastSegmentRoute("/campaigns/{campaign:anything}/close", tasks.close, methods=["POST"]),
        Route("/campaigns/{campaign:anything}", campaigns.get_campaign, methods=["GET"]),
        Route("/events", events.list_events, methods=["GET"]),
        Route("/quarantine", quarantine.list_quarantine, methods=["GET"]),
        Route("/quarantine/replay", tasks.replay, methods=["POST"]),
        Route("/quarantine/{id}/replay", quarantine.replay, methods=["POST"]),
        Route("/subscriptions", subscriptions.collection, methods=["GET", "POST"]),
        Route("/subscriptions/{id}", subscriptions.one, methods=["GET", "PATCH", "DELETE"]),
        Route("/subscriptions/{id}/rotate-secret", subscriptions.rotate_secret, methods=["POST"]),
        Route("/subscriptions/{id}/deliveries", subscriptions.deliveries, methods=["GET"]),
        Route("/subscriptions/{id}/replay", subscriptions.replay, methods=["POST"]),
        LastSegmentRoute("/tasks/{id}/result", tasks.result, methods=["GET"]),
        Route("/tasks/{id}", tasks.one, methods=["GET", "DELETE"]),
        Route("/healthz", ops.healthz, methods=["GET"]),
        Route("/readyz", ops.readyz, methods=["GET"]),
        Route("/metrics", ops.metrics, methods=["GET"]),
        Route("/openapi.json", ops.openapi, methods=["GET"]),
        *Console(settings).routes(),  # /console/...: pages for people
    ]
    app = DlrTracker(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ServiceError: service_error,
            HTTPException: http_error,
            Exception: unexpected_error,
        },
    )
    app.add_middleware(RequestIdMiddleware)
    return app


def app_from_env() -> Starlette:
    """The factory uvicorn's workers call (`--factory`): settings from the environment."""
    settings = Settings.from_env()
    logs.configure(settings.log_level, settings.log_format)
    return create_app(settings)
