"""Reading requests safely: bounded bodies, strict query strings, the app's shared state."""

from __future__ import annotations

from typing import Any

from starlette.requests import ClientDisconnect, Request

from service.errors import BadPayload, BodyTooLarge, LimitExceeded, ShuttingDown
from service.payloads import decode_form


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or code 12 (HTTP 413) as soon as it passes `limit` bytes: never buffer more."""
    declared = request.headers.get("content-length")
    # isascii(): headers arrive as latin-1, where "²" is a digit to isdigit() and not to int().
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body larger than {limit} bytes", {"body": f"at most {limit} bytes"})
    # The ASGI messages themselves: Request.stream() adds a generator and bookkeeping to every report.
    chunks, size = [], 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body larger than {limit} bytes", {"body": f"at most {limit} bytes"})
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def query(request: Request) -> dict[str, Any]:
    return decode_form(request.scope.get("query_string", b""))  # or BadPayload (code 1)


def state(request: Request) -> Any:
    app_state = request.app.state
    if app_state.shutting_down:
        raise ShuttingDown()
    return app_state


def page_limit(params: dict[str, Any], default: int, maximum: int) -> int:
    """`limit`: a whole number from 1; past `maximum`, however far, it breaks the page-size limit (code 12)."""
    raw = params.get("limit")
    if raw is None or raw == "":
        return default
    digits = raw.lstrip("0") if isinstance(raw, str) and raw.isascii() and raw.isdigit() else None
    if not digits:
        raise BadPayload({"limit": f"must be a whole number from 1 to {maximum}"})
    if len(digits) > len(str(maximum)) or int(digits) > maximum:
        raise LimitExceeded(f"limit {raw[:20]}; at most {maximum}", {"limit": f"at most {maximum}"})
    return int(digits)
