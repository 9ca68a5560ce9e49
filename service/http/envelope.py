"""The `{code, data, message}` envelope: success answers and the mapping of every error onto it."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from service.errors import MethodNotAllowed, ServiceError, UnknownModule

logger = logging.getLogger("dlr_tracker.http")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


# orjson first (a tenth of the cost on every answer); this one for what orjson refuses.
_ENCODER = json.JSONEncoder(default=_default, ensure_ascii=False, separators=(",", ":"))


class EnvelopeResponse(Response):
    media_type = "application/json"

    def __init__(
        self,
        code: int,
        data: Any = None,
        message: str = "",
        status_code: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(envelope_body(code, data, message), status_code=status_code, headers=headers)


def envelope_body(code: int, data: Any = None, message: str = "") -> bytes:
    envelope = {"code": code, "data": data, "message": message}
    try:
        return orjson.dumps(envelope)
    except TypeError:  # an integer past 64 bits, say: the standard library writes anything JSON can hold
        return _ENCODER.encode(envelope).encode()


def ok(data: Any = None, message: str = "") -> EnvelopeResponse:
    return EnvelopeResponse(0, data, message)


def batch_outcome(items: list[dict[str, Any]]) -> tuple[int, str, int]:
    """Per-item results' (code, message, HTTP status): 0 when all succeeded, 98 (207) when some did, 99 (400)
    when none did."""
    failed = sum(1 for item in items if item["code"] != 0)
    if failed == 0:
        return 0, "", 200
    if failed == len(items):
        return 99, "no item of the batch was processed", 400
    return 98, f"{failed} of {len(items)} items failed", 207


def batch_answer(items: list[dict[str, Any]]) -> EnvelopeResponse:
    code, message, status = batch_outcome(items)
    return EnvelopeResponse(code, {"items": items}, message, status)


async def service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return EnvelopeResponse(exc.code, exc.data, exc.message, exc.status, exc.headers)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405 (unknown route, wrong method) in the envelope."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        err: ServiceError = MethodNotAllowed(f"{request.method} is not allowed on {request.scope['path'][:200]}")
        headers = dict(exc.headers or {})
    elif exc.status_code == 404:
        err, headers = UnknownModule(f"no such endpoint: {request.scope['path'][:200]}"), {}
    else:
        return EnvelopeResponse(3, None, str(exc.detail), exc.status_code, dict(exc.headers or {}))
    return EnvelopeResponse(err.code, None, err.message, err.status, headers)


def unexpected_error_message(exc: Exception) -> str:
    """Log an error nothing else handled, under a reference the answer gives (never the error itself)."""
    reference = uuid.uuid4().hex[:12]
    logger.error("unhandled error, reference %s", reference, exc_info=exc)
    return f"unexpected application error (reference {reference})"


async def unexpected_error(request: Request, exc: Exception) -> Response:
    return EnvelopeResponse(3, None, unexpected_error_message(exc), 500)
