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


class ShuttingDown(ServiceError):
    code, status, default_message = 999, 503, "the service is shutting down"


def field_error(errors: dict[str, str], code: int) -> ServiceError:
    """Code 11 when a required field is missing, else code 1; `data` maps each field to its problem."""
    names = ", ".join(errors)
    if code == 11:
        return MissingParameter(f"missing or bad fields: {names}", errors)
    if code == 6:
        return UnsupportedFormat(next(iter(errors.values())), errors)
    if code == 12:
        return LimitExceeded(f"limits broken: {names}", errors)
    return BadValue(f"bad fields: {names}", errors)


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
