"""Reading requests safely: bounded bodies, strict query strings, the app's shared state."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from service.errors import BodyTooLarge, ShuttingDown, field_error
from service.payloads import PayloadError, decode_form


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or code 12 (HTTP 413) as soon as it passes `limit` bytes: never buffer more."""
    declared = request.headers.get("content-length")
    # isascii(): headers arrive as latin-1, where "²" is a digit to isdigit() and not to int().
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body larger than {limit} bytes", {"body": f"at most {limit} bytes"})
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body larger than {limit} bytes", {"body": f"at most {limit} bytes"})
        chunks.append(chunk)
    return b"".join(chunks)


def query(request: Request) -> dict[str, Any]:
    try:
        return decode_form(request.scope.get("query_string", b""))
    except PayloadError as exc:
        raise field_error(exc.errors, exc.code) from None


def state(request: Request) -> Any:
    app_state = request.app.state
    if app_state.shutting_down:
        raise ShuttingDown()
    return app_state
