"""Reading requests safely: bounded bodies, strict query strings, the app's shared state."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from service import fields
from service.errors import BadPayload, BodyTooLarge, LimitExceeded, NotFound, ShuttingDown
from service.payloads import JSON, decode_form, decode_json, media_type, unsupported_content_type

if TYPE_CHECKING:
    from service.services import Services


async def read_request_body(request: Request, limit: int) -> bytes:
    return await read_body(request.receive, request.headers.get("content-length"), limit)


async def read_json_body(request: Request, limit: int, *, blank_is_empty: bool = False) -> Any:
    """The request's JSON body (a JSON content type, or none at all); with `blank_is_empty`, a blank body is
    an empty object (else it is no JSON, code 1)."""
    body = await read_request_body(request, limit)
    if blank_is_empty and not body.strip():
        return {}
    kind = media_type(request.headers.get("content-type"))
    if kind is not None and kind != JSON and not kind.endswith("+json"):
        raise unsupported_content_type(kind)
    return decode_json(body)


def numeric_path_id(request: Request, what: str) -> int:
    """The `{id}` path parameter as a whole number, or code 2 naming `what` (an id no row can have is none)."""
    raw = request.path_params["id"]
    try:
        found = fields.count(raw, 2**62)
    except fields.FieldError:
        found = None
    if found is None:
        raise NotFound(f"{what} {raw[:40]!r} not found", {"id": raw[:40]})
    return found


async def read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The whole body, or code 12 (HTTP 413) as soon as it passes `limit` bytes: never buffer more.

    `declared`: the Content-Length header, when sent."""
    # isascii(): headers arrive as latin-1, where "²" is a digit to isdigit() and not to int().
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body larger than {limit} bytes", {"body": f"at most {limit} bytes"})
    # The ASGI messages themselves: Request.stream() adds a generator and bookkeeping to every report.
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body larger than {limit} bytes", {"body": f"at most {limit} bytes"})
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# The API key may come in the query string (service/auth.py): known wherever keys are read.
API_KEY_PARAMETER = "apiKey"


def read_query(request: Request, known: Collection[str] = (), repeatable: Collection[str] = ()) -> dict[str, Any]:
    """The query string of a read endpoint, read whole or refused (code 1, `data` naming each parameter).

    - A parameter the endpoint does not read is refused, as Stripe does: a misspelt filter
      (`updated_since=`) must not answer the unfiltered list as if it were filtered.
    - A parameter given twice is refused, unless `repeatable`: which of two values counts would be a guess.
    - A `repeatable` one (`ids=a&ids=b`, how requests and httpx send a list; `ids[]=a` too) is the list of
      its values, in order.

    Names and values are percent-decoded by the form rules (`decode_form`), one pair at a time: that
    decoder keeps only the last of a repeated key.
    """
    allowed = {*known, *repeatable, API_KEY_PARAMETER}
    values: dict[str, list[str]] = {}
    errors: dict[str, str] = {}
    for pair in request.scope.get("query_string", b"").split(b"&"):
        if not pair:
            continue
        [(name, value)] = decode_form(pair).items()  # or BadPayload (code 1): a bad escape, a NUL, ...
        if isinstance(value, list) and len(value) == 1 and name in repeatable:
            value = value[0]  # `ids[]=a`: PHP and Rails clients' way of sending a list
        if not isinstance(value, str):
            # The key as sent (`a[b]`), decoded as the form decoder just did without complaint.
            as_sent = unquote_to_bytes(pair.partition(b"=")[0].replace(b"+", b" ")).decode()
            errors[as_sent] = "not a parameter of this endpoint: send name=value (no [key] forms)"
        elif name not in allowed:
            errors[name] = f"not a parameter of this endpoint; it reads {', '.join(sorted(allowed))}"
        else:
            values.setdefault(name, []).append(value)
    for name, given in values.items():
        if len(given) > 1 and name not in repeatable:
            errors[name] = f"given {len(given)} times; give it once"
    if errors:
        raise BadPayload(errors)
    return {name: given if name in repeatable else given[0] for name, given in values.items()}


def state(request: Request) -> Services:
    """The application's services, or code 999 once it is shutting down."""
    services: Services = request.app.state.services
    if services.shutting_down:
        raise ShuttingDown()
    return services


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
