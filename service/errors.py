"""The one error tree of the service, each error carrying its envelope code and HTTP status.

Handlers raise these; `service.http.envelope` turns every one into `{code, data, message}` in one
place. Database trouble becomes `Unavailable` (code 10, 503 + Retry-After) so that senders retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import asyncpg

from service import metrics


class ServiceError(Exception):
    code: ClassVar[int] = 3
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "unexpected application error"

    def __init__(self, message: str | None = None, data: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.data = data
        self.headers = headers or {}


class BadValue(ServiceError):
    code, status, default_message = 1, 400, "a field has a bad value"


class NotFound(ServiceError):
    code, status, default_message = 2, 404, "not found"


class UnknownModule(ServiceError):
    code, status, default_message = 4, 404, "unknown module"


class MethodNotAllowed(ServiceError):
    code, status, default_message = 5, 405, "method not allowed"


class UnsupportedFormat(ServiceError):
    code, status, default_message = 6, 415, "unsupported format"


class AuthFailed(ServiceError):
    code, status, default_message = 8, 401, "authentication failed"


class NotAllowed(ServiceError):
    """Code 9: a valid API key without the scope this operation needs."""

    code, status, default_message = 9, 403, "this API key may not do this"


class KeyDisabled(ServiceError):
    """Code 14: an API key listed in DLR_API_KEYS_DISABLED."""

    code, status, default_message = 14, 403, "this API key is disabled"


class RateLimited(ServiceError):
    """Code 30: past DLR_RATE_LIMIT for this key; `Retry-After` says when the next request may go."""

    code, status, default_message = 30, 429, "rate limit exceeded"

    def __init__(self, retry_after: float, message: str | None = None) -> None:
        # Whole seconds, rounded up: a client waiting this long finds a token in the bucket.
        seconds = max(1, int(-(-retry_after // 1)))
        super().__init__(message, {"retry_after": seconds}, {"Retry-After": str(seconds)})


class Unavailable(ServiceError):
    code, status, default_message = 10, 503, "could not save: the database is unavailable, retry later"
    retry_after = 5

    def __init__(self, message: str | None = None, data: Any = None) -> None:
        super().__init__(message, data, {"Retry-After": str(self.retry_after)})


class MissingParameter(ServiceError):
    code, status, default_message = 11, 400, "a required parameter is missing"


class LimitExceeded(ServiceError):
    code, status, default_message = 12, 400, "a parameter breaks a limit"


class BodyTooLarge(LimitExceeded):
    status = 413


class OperationFailed(ServiceError):
    """Code 15: an operation unrelated to data failed (a task's result asked before it is ready, a finished
    task cancelled); `message` says why."""

    code, status, default_message = 15, 409, "the operation failed"


class ShuttingDown(ServiceError):
    code, status, default_message = 999, 503, "the service is shutting down"


class RefusedPayload(ServiceError):
    """What a request carries, refused as sent: `errors` (the envelope's `data`) maps each field to what is
    wrong. Never raised itself: each kind below is also the error of its envelope code, so handlers and the
    envelope see a BadValue, MissingParameter, UnsupportedFormat or LimitExceeded, and a policy about refused
    payloads (acknowledge them to a sender that would otherwise resend, as they are quarantined) asks for
    this class alone."""

    def __init__(self, errors: dict[str, str], message: str | None = None) -> None:
        if not isinstance(self, BadValue | MissingParameter | UnsupportedFormat | LimitExceeded):
            raise TypeError(f"{type(self).__name__} must also be the error of its envelope code")
        super().__init__(message or self.summary(errors), errors)
        self.errors = errors

    @classmethod
    def summary(cls, errors: dict[str, str]) -> str:
        return f"bad fields: {', '.join(errors)}"


class BadPayload(RefusedPayload, BadValue):
    """Code 1: a field has a bad value (or the payload cannot be read at all)."""


class MissingFields(RefusedPayload, MissingParameter):
    """Code 11: a required field is missing (other fields may be bad too)."""

    @classmethod
    def summary(cls, errors: dict[str, str]) -> str:
        return f"missing or bad fields: {', '.join(errors)}"


class UnsupportedPayload(RefusedPayload, UnsupportedFormat):
    """Code 6: a content type (or body kind) the reader does not take."""

    @classmethod
    def summary(cls, errors: dict[str, str]) -> str:
        return next(iter(errors.values()))


class PayloadLimit(RefusedPayload, LimitExceeded):
    """Code 12: the payload breaks a limit."""

    @classmethod
    def summary(cls, errors: dict[str, str]) -> str:
        return f"limits broken: {', '.join(errors)}"


class BatchTooLarge(PayloadLimit):
    """More items than the batch limit: refused before any item is built (a megabyte of tiny items would
    otherwise cost seconds to validate). Quarantined whole like any refused payload, so that it can be
    replayed once DLR_MAX_BATCH allows it; the body size limit still bounds what is kept."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__({"batch": f"{count} items; at most {limit}"}, f"batch too large: at most {limit} items")
        self.limit = limit


# SQLSTATE classes that mean "the database cannot take this now": connection exceptions (08),
# insufficient resources (53), object not in prerequisite state (55: a database not accepting
# connections, a lock not available), operator intervention (57: shutdown, cancelled statement),
# system errors (58) and transaction rollbacks (40: serialization failures, deadlocks).
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "55", "57", "58"})


def is_unavailable(exc: BaseException) -> bool:
    """Whether an exception means the database is unreachable or refusing, so the caller should retry."""
    # InternalClientError: asyncpg's protocol state is out of step with the socket, which is what a
    # pooled connection whose session the server ended (restart, failover, pg_terminate_backend)
    # raises on its next use (MagicStack/asyncpg#784, #1069). The pool drops such a connection on
    # release, so a retry gets a fresh one.
    if isinstance(exc, OSError | asyncio.TimeoutError | asyncpg.InterfaceError | asyncpg.InternalClientError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return (getattr(exc, "sqlstate", None) or "")[:2] in UNAVAILABLE_SQLSTATE_CLASSES
    return False


# What the caller is told, by operation where "could not save" (the default) would be false: a read saves
# nothing. Code, HTTP status and Retry-After are the same.
UNAVAILABLE_MESSAGES = {"read": "database unavailable, retry later"}


@asynccontextmanager
async def database_errors(operation: str = "request") -> AsyncIterator[None]:
    """Turn "the database is away" into code 10 (503, Retry-After) and count it by operation (`read`,
    `register`, `ingest`, ...)."""
    try:
        yield
    except Exception as exc:
        if is_unavailable(exc):
            metrics.DB_ERRORS.labels(operation).inc()
            raise Unavailable(UNAVAILABLE_MESSAGES.get(operation), {"reason": type(exc).__name__}) from exc
        raise
