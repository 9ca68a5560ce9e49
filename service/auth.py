"""Who may call: API keys for the read and registration API; shared tokens and signatures for the webhooks.

Every comparison is constant-time, and secrets stay wrapped in `Secret` until the moment of comparing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from starlette.datastructures import QueryParams
from starlette.requests import Request

from service import logs, metrics
from service.access import ApiKey, Scope
from service.config import Secret
from service.errors import AuthFailed, KeyDisabled, NotAllowed, RateLimited

if TYPE_CHECKING:
    from service.config import Settings
    from service.dialects.types import Dialect
    from service.payloads import RequestParts
    from service.services import Services


def _presented(authorization: str | None, query: bytes, query_name: str) -> str | None:
    """A bearer credential, else the query parameter `query_name` (the last one, as Starlette reads it)."""
    scheme, _, credential = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        return credential.strip()
    if not query:
        return None
    return QueryParams(query).get(query_name) or None


def _matches(presented: str, secrets: Iterable[Secret]) -> bool:
    given = presented.encode()
    # Compare against every key, never stopping early, so timing tells nothing about which matched.
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(given, secret.reveal().encode())
    return found


def require_api_key(request: Request, services: Services, scope: Scope) -> ApiKey | None:
    """The API key presented, if it may do `scope` now; None when the API is open (no DLR_API_KEYS).

    Code 8: no key or a wrong one. Code 14: a disabled key. Code 9: a key without the scope. Code 30: past
    DLR_RATE_LIMIT for this key (in this process)."""
    settings = services.settings
    if not settings.api_keys:
        return None
    presented = _presented(request.headers.get("authorization"), request.scope.get("query_string", b""), "apiKey")
    key = None if presented is None else _find(presented, settings.api_keys)
    if key is None:
        metrics.AUTH_FAILURES.labels("api_key").inc()
        raise AuthFailed("missing or wrong API key (Authorization: Bearer KEY or apiKey=KEY)")
    admit(key, services, scope)
    return key


def find_api_key(presented: str, settings: Settings) -> ApiKey | None:
    """The configured key whose secret is `presented` (compared in constant time), if any."""
    return _find(presented, settings.api_keys)


def admit(key: ApiKey, services: Services, scope: Scope) -> None:
    """May this (valid) key do `scope` now? Code 14: disabled. Code 9: without the scope. Code 30: past the rate
    limit. The API's and the console's one rule."""
    settings = services.settings
    logs.api_key.set(key.name)
    if key.name in settings.api_keys_disabled:
        metrics.AUTH_FAILURES.labels("disabled").inc()
        raise KeyDisabled(f"API key {key.name} is disabled")
    if not key.allows(scope):
        metrics.AUTH_FAILURES.labels("scope").inc()
        raise NotAllowed(
            f"API key {key.name} may not do this: it needs the {scope} scope "
            f"(the key has {', '.join(sorted(key.scopes))})",
            {"scope": str(scope)},
        )
    buckets = services.rate_limits
    if buckets is not None:
        wait = buckets.take(key.name, time.monotonic())
        if wait > 0:
            metrics.child(metrics.RATE_LIMITED, key.name).inc()
            limit = settings.rate_limit.text if settings.rate_limit is not None else ""
            raise RateLimited(wait, f"API key {key.name} is past its rate limit ({limit})")
    metrics.child(metrics.API_REQUESTS, key.name).inc()


def _find(presented: str, keys: tuple[ApiKey, ...]) -> ApiKey | None:
    given = presented.encode()
    # Compare against every key, never stopping early, so timing tells nothing about which matched.
    found = None
    for key in keys:
        if hmac.compare_digest(given, key.key.reveal().encode()):
            found = key
    return found


def require_webhook_token(authorization: str | None, query: bytes, token: Secret | None) -> None:
    """The shared webhook token, from `Authorization: Bearer` or `token=` in the query string."""
    if token is None:
        return
    presented = _presented(authorization, query, "token")
    if presented is None or not _matches(presented, (token,)):
        metrics.AUTH_FAILURES.labels("webhook").inc()
        raise AuthFailed("missing or wrong webhook token (token=... or Authorization: Bearer ...)")


# Standard Webhooks: the reference libraries accept timestamps this far from now, either way.
WEBHOOK_TOLERANCE_SECONDS = 300


def whsec_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (`whsec_` + base64). Raises ValueError when malformed."""
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a Standard Webhooks secret is whsec_ followed by base64") from None
    if not key:
        raise ValueError("a Standard Webhooks secret is whsec_ followed by base64")
    return key


def standard_webhook_signature(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def verify_standard_webhook(headers: dict[str, str], body: bytes, secret: str, now: float) -> str:
    """Check `webhook-signature` over `{id}.{timestamp}.{body}`; return the `webhook-id` (the event id)."""
    webhook_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not (webhook_id and timestamp and signatures):
        raise _refused("missing webhook-id, webhook-timestamp or webhook-signature")
    if not (timestamp.isascii() and timestamp.isdigit()) or abs(now - int(timestamp)) > WEBHOOK_TOLERANCE_SECONDS:
        raise _refused("webhook-timestamp is outside the 5-minute window")
    expected = standard_webhook_signature(whsec_key(secret), webhook_id, timestamp, body).encode()
    # Several signatures may be listed (key rotation); unknown versions are skipped, never trusted.
    valid = False
    for entry in signatures.split():
        version, _, signature = entry.partition(",")
        if version == "v1":
            valid |= hmac.compare_digest(signature.encode(), expected)
    if not valid:
        raise _refused("webhook-signature does not match")
    return webhook_id


def verify_callback(dialect: Dialect, parts: RequestParts, settings: Settings, now: float) -> str | None:
    """Check a callback's signature when one is configured; return the Standard Webhooks event id, if any.

    A sender with its own scheme (Twilio, Vonage, Mobizon) is checked by it when DLR_WEBHOOK_SECRET_<NAME>
    is set. Every other dialect needs a Standard Webhooks signature when DLR_WEBHOOK_SECRET_<NAME> or
    DLR_WEBHOOK_SECRET is set.
    """
    own = settings.webhook_secrets.get(dialect.name)
    if dialect.verify is not None:
        if own is not None and not dialect.verify(parts, own.reveal()):
            raise _refused(f"{dialect.name} signature does not match")
        return None
    secret = own or settings.webhook_secret
    if secret is None:
        return None
    return verify_standard_webhook(parts.headers, parts.body, secret.reveal(), now)


def _refused(reason: str) -> AuthFailed:
    metrics.AUTH_FAILURES.labels("signature").inc()
    return AuthFailed(f"authentication failed: {reason}")
