"""`/console`: the pages. Thin like the API's handlers: who is asking (the session, the API's scope rules),
the store's readers, the API's replay and task code, a template.

Errors are pages, never the JSON envelope: each console route carries its own exception handlers (`Page`),
and a path under /console that no page has gets a "not found" page too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import jinja2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from starlette.types import Receive, Send
from starlette.types import Scope as AsgiScope

from service import __version__, fields, store
from service.access import ApiKey, Scope
from service.auth import admit, find_api_key
from service.config import Settings
from service.console import chart
from service.console.session import COOKIE, Session, Sessions
from service.dialects import DIALECTS
from service.errors import AuthFailed, NotFound, ServiceError, database_errors
from service.http import views
from service.http.envelope import unexpected_error_message
from service.http.quarantine import replay_one
from service.http.requests import numeric_path_id, read_request_body, state
from service.http.scopes import CONSOLE_SCOPES, ROUTE_SCOPES, scope_of
from service.http.subscriptions import delivery_view
from service.http.subscriptions import view as subscription_view
from service.http.tasks import queue
from service.ledger import SWEEP
from service.statuses import FINAL, Status
from service.store import campaign_pages
from service.store import subscriptions as subscription_store
from service.store import tasks as task_store
from service.tasks.model import UNFINISHED, Kind, replay_params

logger = logging.getLogger("dlr_tracker.console")

PREFIX = "/console"
FORM_LIMIT = 64 * 1024  # the console's forms are a few fields
SEARCH_PAGE = 50
QUARANTINE_PAGE = 20
PAYLOAD_SHOWN = 4096  # characters of a quarantined body shown; the API has it whole
CAMPAIGN_MESSAGES = 20
SUBSCRIPTIONS_PAGE = 20
DELIVERIES_SHOWN = 5

# What may be done with a quarantined payload: the API's own operations' scopes.
REPLAY_ONE = ROUTE_SCOPES["POST", "/quarantine/{id}/replay"]
REPLAY_ALL = ROUTE_SCOPES["POST", "/quarantine/replay"]

# Defence in depth beside autoescaping: no script but our own file, nothing loaded from elsewhere, never framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # message ids and recipients are in the addresses
    "Cache-Control": "no-store",
}
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


class SignIn(Exception):
    """Not signed in, or signed out since (a key removed or given a new secret): to the sign-in page, and back."""

    def __init__(self, back: str, notice: str | None = None) -> None:
        super().__init__(notice)
        self.back = back
        self.notice = notice


class CsrfRefused(ServiceError):
    code, status = 9, 403
    default_message = "this form was not sent from this console (missing or wrong CSRF token): nothing was changed"


@dataclass(frozen=True, slots=True)
class Visitor:
    """Who is looking: the session and the key it was signed in with (None while the API is open)."""

    session: Session
    key: ApiKey | None
    csrf: str
    fresh: bool  # a new session: its cookie goes with the answer
    open: bool = False  # no DLR_API_KEYS: everyone may do everything, as through the API

    def may(self, scope: Scope) -> bool:
        return self.open or (self.key is not None and self.key.allows(scope))

    @property
    def name(self) -> str | None:
        return None if self.key is None else self.key.name


def _back(request: Request) -> str:
    """Where a sign-in returns to: this page, as a path (never another site); after a form, the start page (a
    form's address is no page to return to)."""
    if request.method != "GET":
        return f"{PREFIX}/"
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def _safe_next(value: str | None) -> str:
    """A `next` address: a path inside the console, else the console's start page (no open redirect)."""
    if not value or not value.startswith(f"{PREFIX}/") or value.startswith("//") or "\\" in value:
        return f"{PREFIX}/"
    parts = urlsplit(value)
    return f"{PREFIX}/" if parts.scheme or parts.netloc else value


def _history_kind(row: dict[str, Any]) -> str:
    """What a history row was, for the timeline: applied, sweep, or why it was not applied."""
    if row["applied"]:
        return "sweep" if row["source"] == SWEEP else "applied"
    if row["reason"]:
        return str(row["reason"])
    return "no status" if row["status"] is None else "not applied"


class Page(Route):
    """A console route: its errors are pages (its own exception handlers), a wrong method too."""

    def __init__(self, path: str, endpoint: Any, console: Console, **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.console = console

    async def handle(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            request = Request(scope, receive)
            response = self.console.error(
                request, 405, "Method not allowed", f"{scope['method']} is not allowed here", {}
            )
            response.headers["Allow"] = ", ".join(sorted(self.methods))
            await response(scope, receive, send)
            return
        # Read by the wrapper Starlette puts around the endpoint: this route's errors are rendered as pages.
        scope["starlette.exception_handlers"] = ({Exception: self.console.exception_page}, {})
        await super().handle(scope, receive, send)


class Console:
    def __init__(self, settings: Settings) -> None:
        self.sessions = Sessions(settings)
        folder = resources.files("service.console")
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("service.console", "templates"),
            autoescape=True,  # every value a sender sent is text: shown, never run
            undefined=jinja2.StrictUndefined,
        )
        env.filters["urlpart"] = lambda value: quote(str(value), safe="")
        env.globals["version"] = __version__
        env.globals["final_statuses"] = {s.value for s in FINAL}
        # The navigation shows a page only to a key with its scope (the same table the pages are checked by).
        env.globals["nav_scopes"] = {
            "quarantine": CONSOLE_SCOPES["GET", f"{PREFIX}/quarantine"],
            "subscriptions": CONSOLE_SCOPES["GET", f"{PREFIX}/subscriptions"],
        }
        env.globals["statuses"] = [s.value for s in Status]
        self.templates = Jinja2Templates(env=env)
        self.static = {
            entry.name: entry.read_bytes()
            for entry in (folder / "static").iterdir()
            if entry.name[-3:] in (".js", "css")
        }

    # --- plumbing ----------------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        def page(path: str, endpoint: Any, methods: tuple[str, ...] = ("GET",)) -> Page:
            return Page(path, endpoint, self, methods=list(methods))

        return [
            page(PREFIX, self.start),
            page(f"{PREFIX}/", self.search),
            page(f"{PREFIX}/login", self.login, ("GET", "POST")),
            page(f"{PREFIX}/logout", self.logout, ("POST",)),
            page(f"{PREFIX}/static/{{name}}", self.static_file),
            page(f"{PREFIX}/messages/{{id:anything}}", self.message),
            page(f"{PREFIX}/campaigns/{{campaign:anything}}", self.campaign),
            page(f"{PREFIX}/quarantine", self.quarantine),
            page(f"{PREFIX}/quarantine/replay", self.replay_all, ("POST",)),
            page(f"{PREFIX}/quarantine/{{id}}/replay", self.replay, ("POST",)),
            page(f"{PREFIX}/tasks/{{id}}", self.task),
            page(f"{PREFIX}/subscriptions", self.subscriptions),
            page(f"{PREFIX}/{{rest:anything}}", self.not_found, ("GET", "POST")),
        ]

    def render(
        self, request: Request, name: str, context: dict[str, Any], visitor: Visitor | None = None, status: int = 200
    ) -> Response:
        response = self.templates.TemplateResponse(
            request, name, {"visitor": visitor, "notice": None, **context}, status_code=status
        )
        response.headers.update(SECURITY_HEADERS)
        if visitor is not None and visitor.fresh:
            self.sessions.set_cookie(response, visitor.session, secure=request.url.scheme == "https")
        return response

    def error(
        self,
        request: Request,
        status: int,
        title: str,
        message: str,
        details: Any,
        headers: dict[str, str] | None = None,
    ) -> Response:
        shown = {str(k): str(v) for k, v in details.items()} if isinstance(details, dict) else {}
        response = self.render(
            request, "error.html", {"title": title, "message": message, "details": shown}, None, status
        )
        response.headers.update(headers or {})
        return response

    async def exception_page(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, SignIn):
            target = f"{PREFIX}/login?next={quote(exc.back, safe='')}"
            if exc.notice:
                target += "&signed_out=1"
            return RedirectResponse(target, 303, headers={"Cache-Control": "no-store"})
        if isinstance(exc, ServiceError):
            titles = {401: "Sign-in failed", 403: "Not allowed", 404: "Not found", 429: "Too many requests"}
            title = titles.get(exc.status, "Refused" if exc.status < 500 else "Unavailable")
            return self.error(request, exc.status, title, exc.message, exc.data, exc.headers)
        if isinstance(exc, HTTPException):
            return self.error(request, exc.status_code, "Error", str(exc.detail), {})
        return self.error(request, 500, "Unexpected error", unexpected_error_message(exc), {})

    def visitor(self, request: Request) -> Visitor:
        """The session, and may its key see this page now? (The API's rule: `admit` with the page's scope.)"""
        app = state(request)
        settings = app.settings
        session = self.sessions.decode(request.cookies.get(COOKIE), time.time())
        fresh = session is None
        if not settings.api_keys:
            # No DLR_API_KEYS: the API is open to anyone with every scope, and so is the console (one rule).
            session = session or self.sessions.new(None, time.time())
            return Visitor(session, None, self.sessions.csrf_token(session), fresh, open=True)
        key = self.sessions.key_of(session, settings) if session is not None and session.key_name else None
        if key is None:
            signed_out = session is not None and session.key_name is not None
            raise SignIn(_back(request), "signed out: that key is no longer configured" if signed_out else None)
        assert session is not None
        admit(key, app, scope_of(request))
        return Visitor(session, key, self.sessions.csrf_token(session), fresh)

    async def form(self, request: Request) -> dict[str, str]:
        """A POSTed form whose CSRF token belongs to the session in its cookie, else code 9 (nothing read further,
        nothing changed)."""
        body = await read_request_body(request, FORM_LIMIT)
        data = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
        session = self.sessions.decode(request.cookies.get(COOKIE), time.time())
        if not self.sessions.csrf_ok(session, data.get("csrf")):
            raise CsrfRefused()
        return data

    # --- sign-in -----------------------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        app = state(request)
        settings = app.settings
        next_page = _safe_next(request.query_params.get("next"))
        if request.method == "GET":
            # A session already there is kept (visiting this page signs no one out); signing in starts a new one.
            session = self.sessions.decode(request.cookies.get(COOKIE), time.time())
            fresh = session is None
            session = session or self.sessions.new(None, time.time())
            key = self.sessions.key_of(session, settings) if session.key_name else None
            csrf = self.sessions.csrf_token(session)
            visitor = Visitor(session, key, csrf, fresh, open=not settings.api_keys)
            notice = "You were signed out: sign in again." if request.query_params.get("signed_out") else None
            return self.render(
                request, "login.html", {"next": next_page, "open": not settings.api_keys, "notice": notice}, visitor
            )
        data = await self.form(request)
        next_page = _safe_next(data.get("next"))
        if not settings.api_keys:
            return RedirectResponse(next_page, 303)
        key = find_api_key(data.get("api_key", "").strip(), settings) if data.get("api_key", "").strip() else None
        if key is None:
            raise AuthFailed("wrong API key: sign in with a key from DLR_API_KEYS that has the read or admin scope")
        admit(key, app, Scope.READ)  # disabled (code 14), or a key that may only register (code 9)
        session = self.sessions.new(key, time.time())
        response = RedirectResponse(next_page, 303, headers={"Cache-Control": "no-store"})
        self.sessions.set_cookie(response, session, secure=request.url.scheme == "https")
        logger.info("console: %s signed in", key.name)
        return response

    async def logout(self, request: Request) -> Response:
        await self.form(request)
        response = RedirectResponse(f"{PREFIX}/login", 303)
        response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="lax")
        return response

    async def start(self, request: Request) -> Response:
        return RedirectResponse(f"{PREFIX}/", 307)

    async def static_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = self.static.get(name)
        if body is None:
            raise NotFound(f"no such file: {name[:80]}")
        return Response(
            body,
            media_type=STATIC_TYPES[name[name.rfind(".") :]],
            headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
        )

    async def not_found(self, request: Request) -> Response:
        raise NotFound(f"no console page at {request.url.path[:200]}")

    # --- pages -------------------------------------------------------------------------------------------

    async def search(self, request: Request) -> Response:
        """Search by message id, recipient or campaign; a message id alone goes straight to its page."""
        visitor = self.visitor(request)
        app = state(request)
        q = request.query_params.get("q", "").strip()
        found: dict[str, Any] = {"message": None, "by_recipient": [], "campaign": False, "more": False}
        if q and "\x00" not in q:
            async with database_errors("read"), app.pool.acquire(timeout=app.settings.db_timeout) as conn:
                message = await store.get_message(conn, q)
                recipients = await store.list_messages(conn, store.MessageFilter(recipient=q), SEARCH_PAGE + 1, None)
                campaign = await campaign_pages.exists(conn, q)
            if message is not None and not recipients and not campaign:
                return RedirectResponse(f"{PREFIX}/messages/{quote(q, safe='')}", 303)
            found = {
                "message": None if message is None else views.message(message),
                "by_recipient": [views.message(r) for r in recipients[:SEARCH_PAGE]],
                "campaign": campaign,
                "more": len(recipients) > SEARCH_PAGE,
            }
        return self.render(request, "search.html", {"q": q, **found}, visitor)

    async def message(self, request: Request) -> Response:
        visitor = self.visitor(request)
        app = state(request)
        message_id: str = request.path_params["id"]
        record, history = None, []
        if "\x00" not in message_id:
            async with database_errors("read"), app.pool.acquire(timeout=app.settings.db_timeout) as conn:
                record = await store.get_message(conn, message_id)
                history = await store.get_history(conn, message_id) if record is not None else []
        if record is None:
            return self.render(request, "missing.html", {"what": "message", "name": message_id}, visitor, 404)
        events = [{**views.history_event(e), "kind": ""} for e in history]
        for event in events:
            event["kind"] = _history_kind(event)
        return self.render(request, "message.html", {"message": views.message(record), "events": events}, visitor)

    async def campaign(self, request: Request) -> Response:
        visitor = self.visitor(request)
        app = state(request)
        campaign: str = request.path_params["campaign"]
        stats = None
        if "\x00" not in campaign:
            async with database_errors("read"):
                stats = await app.campaign_stats.get(campaign)
        if stats is None:
            return self.render(request, "missing.html", {"what": "campaign", "name": campaign}, visitor, 404)
        async with database_errors("read"):
            histogram = await app.campaign_histograms.get(campaign)
        counts: list[int] = histogram["counts"] if histogram else [0] * len(chart.BOUNDS)
        async with database_errors("read"), app.pool.acquire(timeout=app.settings.db_timeout) as conn:
            newest = await store.list_messages(conn, store.MessageFilter(campaign=campaign), CAMPAIGN_MESSAGES, None)
        return self.render(
            request,
            "campaign.html",
            {
                "campaign": campaign,
                "stats": stats,
                "bars": chart.bars(counts),
                "delivered": sum(counts),
                "chart": {"width": chart.WIDTH, "height": chart.HEIGHT},
                "newest": [views.message(r) for r in newest],
            },
            visitor,
        )

    async def quarantine(self, request: Request) -> Response:
        visitor = self.visitor(request)
        app = state(request)
        dialect = request.query_params.get("dialect") or None
        try:
            before = fields.count(request.query_params.get("before"), 2**62)
        except fields.FieldError:
            before = None
        async with database_errors("read"), app.pool.acquire(timeout=app.settings.db_timeout) as conn:
            records = await store.list_quarantine(conn, dialect, QUARANTINE_PAGE + 1, before)
        items = [views.quarantined(r) for r in records[:QUARANTINE_PAGE]]
        return self.render(
            request,
            "quarantine.html",
            {
                "items": items,
                "dialect": dialect,
                "dialects": sorted(DIALECTS),
                "next_before": items[-1]["id"] if len(records) > QUARANTINE_PAGE else None,
                "shown": PAYLOAD_SHOWN,
                "may_replay": visitor.may(REPLAY_ONE),
                "may_replay_all": visitor.may(REPLAY_ALL),
            },
            visitor,
        )

    async def replay(self, request: Request) -> Response:
        """Replay one quarantined payload, as `POST /quarantine/{id}/replay` does."""
        await self.form(request)
        visitor = self.visitor(request)
        item_id = numeric_path_id(request, "quarantined payload")
        answers = await replay_one(state(request), item_id)
        return self.render(request, "replayed.html", {"item_id": item_id, "answers": answers}, visitor)

    async def replay_all(self, request: Request) -> Response:
        """Replay every matching quarantined payload as a task, as `POST /quarantine/replay` does."""
        data = await self.form(request)
        visitor = self.visitor(request)
        wanted = {name: data[name] for name in ("dialect", "since", "until") if data.get(name, "").strip()}
        task_id = await queue(state(request), Kind.REPLAY, replay_params(wanted), None)
        logger.info("console: %s queued replay task %s", visitor.name or "(open)", task_id)
        return RedirectResponse(f"{PREFIX}/tasks/{task_id}", 303)

    async def task(self, request: Request) -> Response:
        visitor = self.visitor(request)
        app = state(request)
        task_id = numeric_path_id(request, "task")
        async with database_errors("read"), app.pool.acquire(timeout=app.settings.db_timeout) as conn:
            found = await task_store.get(conn, task_id)
        if found is None:
            return self.render(request, "missing.html", {"what": "task", "name": str(task_id)}, visitor, 404)
        task = views.task(found)
        return self.render(request, "task.html", {"task": task, "running": task["state"] in UNFINISHED}, visitor)

    async def subscriptions(self, request: Request) -> Response:
        """Each subscription with its latest deliveries and its latest failures."""
        visitor = self.visitor(request)
        app = state(request)
        try:
            after = fields.count(request.query_params.get("after"), 2**62)
        except fields.FieldError:
            after = None
        async with database_errors("read"), app.pool.acquire(timeout=app.settings.db_timeout) as conn:
            rows = await subscription_store.list_page(conn, SUBSCRIPTIONS_PAGE + 1, after)
            ids = [row["id"] for row in rows[:SUBSCRIPTIONS_PAGE]]
            latest = await subscription_store.latest_deliveries(conn, ids, None, DELIVERIES_SHOWN)
            failed = await subscription_store.latest_deliveries(conn, ids, "failed", DELIVERIES_SHOWN)
        shown = [
            {
                **subscription_view(row),
                "latest": [delivery_view(d) for d in latest[row["id"]]],
                "failed": [delivery_view(d) for d in failed[row["id"]]],
            }
            for row in rows[:SUBSCRIPTIONS_PAGE]
        ]
        next_after = shown[-1]["id"] if len(rows) > SUBSCRIPTIONS_PAGE else None
        return self.render(request, "subscriptions.html", {"items": shown, "next_after": next_after}, visitor)
