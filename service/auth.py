"""Who may call: API keys for the read and registration API, shared tokens for the webhooks.

Every comparison is constant-time, and secrets stay wrapped in `Secret` until the moment of comparing.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.requests import Request

from service import metrics
from service.config import Secret
from service.errors import AuthFailed


def _presented(request: Request, query_name: str) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        return credential.strip()
    return request.query_params.get(query_name) or None


def _matches(presented: str, secrets: Iterable[Secret]) -> bool:
    given = presented.encode()
    # Compare against every key, never stopping early, so timing tells nothing about which matched.
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(given, secret.reveal().encode())
    return found


def require_api_key(request: Request, keys: frozenset[Secret]) -> None:
    if not keys:
        return
    presented = _presented(request, "apiKey")
    if presented is None or not _matches(presented, keys):
        metrics.AUTH_FAILURES.labels("api_key").inc()
        raise AuthFailed("missing or wrong API key (Authorization: Bearer KEY or apiKey=KEY)")


def require_webhook_token(request: Request, token: Secret | None) -> None:
    if token is None:
        return
    presented = _presented(request, "token")
    if presented is None or not _matches(presented, (token,)):
        metrics.AUTH_FAILURES.labels("webhook").inc()
        raise AuthFailed("missing or wrong webhook token (token=... or Authorization: Bearer ...)")
