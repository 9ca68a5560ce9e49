"""The scope each API operation needs, by (method, route): the handlers' checks and /openapi.json both read it.

`HEAD` is answered by a route's `GET` and needs what it needs. Operational endpoints (/healthz, /readyz,
/metrics) and `/dlr/*` (webhook tokens and signatures) take no API key and are not listed.
"""

from __future__ import annotations

from starlette.requests import Request

from service.access import Scope

ROUTE_SCOPES: dict[tuple[str, str], Scope] = {
    ("GET", "/messages"): Scope.READ,
    ("POST", "/messages"): Scope.REGISTER,
    ("GET", "/messages/{id:anything}"): Scope.READ,
    ("GET", "/messages/{id:anything}/history"): Scope.READ,
    ("GET", "/campaigns/{campaign:anything}"): Scope.READ,
    ("GET", "/events"): Scope.READ,
    ("GET", "/quarantine"): Scope.ADMIN,
    ("POST", "/quarantine/{id}/replay"): Scope.ADMIN,
    ("GET", "/subscriptions"): Scope.ADMIN,
    ("POST", "/subscriptions"): Scope.ADMIN,
    ("GET", "/subscriptions/{id}"): Scope.ADMIN,
    ("PATCH", "/subscriptions/{id}"): Scope.ADMIN,
    ("DELETE", "/subscriptions/{id}"): Scope.ADMIN,
    ("POST", "/subscriptions/{id}/rotate-secret"): Scope.ADMIN,
    ("GET", "/subscriptions/{id}/deliveries"): Scope.ADMIN,
    ("POST", "/subscriptions/{id}/replay"): Scope.ADMIN,
    ("POST", "/campaigns/{campaign:anything}/export"): Scope.ADMIN,
    ("POST", "/campaigns/{campaign:anything}/close"): Scope.ADMIN,
    ("POST", "/quarantine/replay"): Scope.ADMIN,
    ("GET", "/tasks/{id}"): Scope.ADMIN,
    ("DELETE", "/tasks/{id}"): Scope.ADMIN,
    ("GET", "/tasks/{id}/result"): Scope.ADMIN,
}

# The console's pages and forms (service/console), each with the API operation it shows or does: it needs that
# operation's scope, so that a key may do in the console exactly what it may do through the API.
CONSOLE_OPERATIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("GET", "/console/"): ("GET", "/messages"),
    ("GET", "/console/messages/{id:anything}"): ("GET", "/messages/{id:anything}/history"),
    ("GET", "/console/campaigns/{campaign:anything}"): ("GET", "/campaigns/{campaign:anything}"),
    ("GET", "/console/quarantine"): ("GET", "/quarantine"),
    ("POST", "/console/quarantine/{id}/replay"): ("POST", "/quarantine/{id}/replay"),
    ("POST", "/console/quarantine/replay"): ("POST", "/quarantine/replay"),
    ("GET", "/console/tasks/{id}"): ("GET", "/tasks/{id}"),
    ("GET", "/console/subscriptions"): ("GET", "/subscriptions/{id}/deliveries"),
}
CONSOLE_SCOPES: dict[tuple[str, str], Scope] = {page: ROUTE_SCOPES[api] for page, api in CONSOLE_OPERATIONS.items()}


def scope_of(request: Request) -> Scope:
    """The scope of the route and method this request was routed to (an API operation or a console page)."""
    method = "GET" if request.method == "HEAD" else request.method
    route = method, request.scope["route"].path
    return ROUTE_SCOPES[route] if route in ROUTE_SCOPES else CONSOLE_SCOPES[route]
