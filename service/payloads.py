"""Turning request bytes into Python values: form bodies, query strings and JSON, strictly.

Form decoding follows the urlencoded rules (`+` is a space, `%XX` bytes, UTF-8) and PHP's `a[b]`
keys, as the platform's API sends them. Anything ambiguous is refused with a reason instead of being
guessed at: a bad `%` escape, invalid UTF-8, a NUL byte, JSON that is too deep or has NaN.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
TEXT = "text/plain"

MAX_JSON_DEPTH = 32
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_PHP_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])+)$")


class PayloadError(ValueError):
    """The request as a whole cannot be read. `code` is the envelope code, `errors` maps field -> reason."""

    def __init__(self, errors: dict[str, str], code: int = 1) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors
        self.code = code


class UnsupportedFormat(PayloadError):
    def __init__(self, content_type: str | None) -> None:
        super().__init__({"content-type": f"{content_type or 'none'} is not supported"}, code=6)


@dataclass(frozen=True, slots=True)
class RequestParts:
    """The parts of an HTTP request a dialect may look at: what the quarantine keeps to replay it."""

    method: str
    content_type: str | None  # media type only, lower-cased, no parameters
    query: bytes
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def media_type(header: str | None) -> str | None:
    if not header:
        return None
    return header.split(";", 1)[0].strip().lower() or None


def _decode_component(raw: bytes, what: str) -> str:
    if _BAD_ESCAPE.search(raw):
        raise PayloadError({what: "bad percent-encoding (a % not followed by two hex digits)"})
    try:
        text = unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError({what: "not valid UTF-8"}) from None
    if "\x00" in text:
        raise PayloadError({what: "contains a NUL character"})
    return text


def decode_form(raw: bytes) -> dict[str, Any]:
    """Decode `a=1&b[c]=2&d[]=3` into `{"a": "1", "b": {"c": "2"}, "d": ["3"]}`; the last plain key wins."""
    result: dict[str, Any] = {}
    for pair in raw.split(b"&"):
        if not pair:
            continue
        raw_key, _, raw_value = pair.partition(b"=")
        key = _decode_component(raw_key, "field name")
        value = _decode_component(raw_value, key or "field")
        if not key:
            raise PayloadError({"field name": "empty field name"})
        _put(result, key, value)
    return result


def _put(target: dict[str, Any], key: str, value: str) -> None:
    match = _PHP_KEY.match(key)
    if not match:
        target[key] = value
        return
    path = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
    node: Any = target
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            if part != "":
                raise PayloadError({key: "mixes [] and [name] keys"})
            if last:
                node.append(value)
                return
            node.append({})
            node = node[-1]
            continue
        if last:
            node[part] = value
            return
        nxt = node.get(part)
        want_list = path[i + 1] == ""
        if nxt is None or isinstance(nxt, str):
            nxt = [] if want_list else {}
            node[part] = nxt
        elif want_list != isinstance(nxt, list):
            raise PayloadError({key: "mixes [] and [name] keys"})
        node = nxt


def _reject_constant(name: str) -> Any:
    raise PayloadError({"body": f"{name} is not a JSON number"})


def decode_json(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError({"body": "not valid UTF-8"}) from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise PayloadError({"body": "JSON nested too deeply"}) from None
    except ValueError as exc:  # JSONDecodeError, and ints past Python's digit limit
        if isinstance(exc, PayloadError):
            raise
        raise PayloadError({"body": f"not valid JSON: {exc}"}) from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise PayloadError({"body": f"JSON nested deeper than {MAX_JSON_DEPTH} levels"})
    return value


def _depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        nxt: list[Any] = []
        for v in level:
            if isinstance(v, dict):
                nxt.extend(v.values())
            elif isinstance(v, list):
                nxt.extend(v)
        level = nxt
        if depth > MAX_JSON_DEPTH:
            break
    return depth - 1 if depth else 0


def decode_request(parts: RequestParts) -> Any:
    """The request's data: the query string of a GET, the body of anything else, by content type."""
    if parts.method in ("GET", "HEAD"):
        return decode_form(parts.query)
    kind = parts.content_type
    if kind is None:
        # Some senders omit the header; the first byte tells JSON from a form unambiguously.
        kind = JSON if parts.body.lstrip()[:1] in (b"{", b"[") else FORM
    if kind == FORM:
        return decode_form(parts.body)
    if kind == JSON or kind.endswith("+json"):
        return decode_json(parts.body)
    raise UnsupportedFormat(parts.content_type)
