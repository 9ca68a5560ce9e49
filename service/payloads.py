"""Turning request bytes into Python values: form bodies, query strings and JSON, strictly.

Form decoding follows the urlencoded rules (`+` is a space, `%XX` bytes, UTF-8) and PHP's `a[b]`
keys, as the platform's API sends them. Anything ambiguous is refused with a reason instead of being
guessed at: a bad `%` escape, invalid UTF-8, a NUL byte, JSON that is too deep, has NaN or a lone
surrogate (`"\\ud800"` decodes, but can be neither stored nor answered).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from service.errors import BadPayload, BatchTooLarge, MissingFields, RefusedPayload, UnsupportedPayload

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
TEXT = "text/plain"

MAX_JSON_DEPTH = 32
# Charsets a form body may declare -> the codec its percent-decoded bytes are read with: UTF-8 and the
# single-byte ASCII supersets legacy clients send (Java's form encoder declares ISO-8859-1). A fixed table,
# never codecs.lookup(): that caches every name it is asked for, and offers codecs such as
# unicode_escape that would turn `\u0000` into a NUL after the checks.
FORM_CHARSETS = {
    "utf-8": "utf-8", "utf8": "utf-8", "us-ascii": "utf-8", "ascii": "utf-8",
    "iso-8859-1": "latin-1", "iso8859-1": "latin-1", "latin-1": "latin-1", "latin1": "latin-1",
    "windows-1251": "cp1251", "cp1251": "cp1251", "windows-1252": "cp1252", "cp1252": "cp1252",
    "koi8-r": "koi8-r", "koi8-u": "koi8-u",
}  # fmt: skip
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_PHP_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])+)$")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def unsupported_content_type(content_type: str | None) -> UnsupportedPayload:
    return UnsupportedPayload({"content-type": f"{content_type or 'none'} is not supported"})


@dataclass(frozen=True, slots=True)
class RequestParts:
    """The parts of an HTTP request a dialect may look at: what the quarantine keeps to replay it."""

    method: str
    # The media type, lower-cased, no parameters; a form's charset other than UTF-8 stays on it
    # (`...-urlencoded; charset=latin-1`) so that a quarantined body replays decoded the same way.
    content_type: str | None
    query: bytes
    body: bytes
    # Lower-cased names. Only for signature checks and the few dialects that read a header.
    headers: dict[str, str] = field(default_factory=dict)
    # The URL as received (scheme, Host with port, path, query), or under DLR_PUBLIC_URL: what a
    # sender's signature over the URL (Twilio's) was computed on.
    url: str = ""


def media_type(header: str | None) -> str | None:
    if not header:
        return None
    kind, *params = header.split(";")
    kind = kind.strip().lower()
    if kind == FORM:
        for param in params:
            name, _, value = param.partition("=")
            charset = value.strip().strip('"').lower()
            if name.strip().lower() == "charset" and charset and FORM_CHARSETS.get(charset) != "utf-8":
                kind = f"{FORM}; charset={charset}"
                break
    # The quarantine keeps this as text, which cannot hold a NUL; such a header names no format anyway.
    return kind.replace("\x00", "\\x00") or None


def _decode_component(raw: bytes, what: str, charset: str = "utf-8") -> str:
    if b"%" in raw or b"+" in raw:  # most values have neither: nothing to unquote
        if _BAD_ESCAPE.search(raw):
            raise BadPayload({what: "bad percent-encoding (a % not followed by two hex digits)"})
        raw = unquote_to_bytes(raw.replace(b"+", b" "))
    try:
        text = raw.decode(charset)
    except UnicodeDecodeError:
        raise BadPayload({what: "not valid UTF-8" if charset == "utf-8" else f"not valid {charset}"}) from None
    if "\x00" in text:
        raise BadPayload({what: "contains a NUL character"})
    return text


def decode_form(raw: bytes, charset: str = "utf-8") -> dict[str, Any]:
    """Decode `a=1&b[c]=2&d[]=3` into `{"a": "1", "b": {"c": "2"}, "d": ["3"]}`; the last plain key wins."""
    result: dict[str, Any] = {}
    for pair in raw.split(b"&"):
        if not pair:
            continue
        raw_key, _, raw_value = pair.partition(b"=")
        key = _decode_component(raw_key, "field name", charset)
        value = _decode_component(raw_value, key or "field", charset)
        if not key:
            raise BadPayload({"field name": "empty field name"})
        _put(result, key, value)
    return result


def _given_twice(key: str) -> BadPayload:
    # Which one would a sender mean? Keeping the last (as most decoders do) applied `id=a&id=b` to b.
    return BadPayload({key: "given more than once: send each field once"})


def _put(target: dict[str, Any], key: str, value: str) -> None:
    match = _PHP_KEY.match(key) if "[" in key else None
    if not match:
        if key in target:
            raise _given_twice(key)
        target[key] = value
        return
    path = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
    node: Any = target
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            if part != "":
                raise BadPayload({key: "mixes [] and [name] keys"})
            if last:
                node.append(value)
                return
            node.append({})
            node = node[-1]
            continue
        if last:
            if part in node:
                raise _given_twice(key)
            node[part] = value
            return
        nxt = node.get(part)
        want_list = path[i + 1] == ""
        if isinstance(nxt, str):  # `a=1&a[b]=2`: a field and a group of the same name
            raise _given_twice(path[0])
        if nxt is None:
            nxt = [] if want_list else {}
            node[part] = nxt
        elif want_list != isinstance(nxt, list):
            raise BadPayload({key: "mixes [] and [name] keys"})
        node = nxt


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different: `{"id": "a", "id": "b"}` is no report of a or of b."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise _given_twice(key)
            seen.add(key)
    return result


def _reject_constant(name: str) -> Any:
    raise BadPayload({"body": f"{name} is not a JSON number"})


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 is Infinity by another name
        raise BadPayload({"body": f"{text[:40]} is out of range for a number"})
    return value


def decode_json(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadPayload({"body": "not valid UTF-8"}) from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float, object_pairs_hook=_object)
    except RecursionError:
        raise BadPayload({"body": "JSON nested too deeply"}) from None
    except ValueError as exc:  # JSONDecodeError, and ints past Python's digit limit (a refusal is no ValueError)
        raise BadPayload({"body": f"not valid JSON: {exc}"}) from None
    _check_json(value)
    return value


def _check_json(value: Any) -> None:
    """Refuse containers nested deeper than MAX_JSON_DEPTH and strings (keys too) with a lone surrogate.

    Breadth-first, one level at a time, so that the check itself never recurses.
    """
    level, depth = [value], 1  # the containers in `level` are `depth` deep
    while level:
        nxt: list[Any] = []
        for v in level:
            if isinstance(v, dict | list):
                if depth > MAX_JSON_DEPTH:
                    raise BadPayload({"body": f"JSON nested deeper than {MAX_JSON_DEPTH} levels"})
                nxt.extend(v)
                if isinstance(v, dict):
                    nxt.extend(v.values())
            elif isinstance(v, str) and not v.isascii() and _SURROGATE.search(v):
                raise BadPayload({"body": "a string with a lone surrogate (\\ud800-\\udfff) is not text"})
        level, depth = nxt, depth + 1


def decode_request(parts: RequestParts) -> Any:
    """The request's data: the query string of a GET, the body of anything else, by content type."""
    if parts.method in ("GET", "HEAD"):
        return decode_form(parts.query)
    kind, charset = parts.content_type, "utf-8"
    if kind is not None and kind.startswith(f"{FORM};"):
        declared = kind.partition("charset=")[2]
        if declared not in FORM_CHARSETS:
            raise unsupported_content_type(parts.content_type)
        kind, charset = FORM, FORM_CHARSETS[declared]
    if kind is None:
        # Some senders omit the header; the first byte tells JSON from a form unambiguously.
        kind = JSON if parts.body.lstrip()[:1] in (b"{", b"[") else FORM
    if kind == FORM:
        return decode_form(parts.body, charset)
    if kind == JSON or kind.endswith("+json"):
        return decode_json(parts.body)  # UTF-8 whatever charset is declared: RFC 8259 §8.1
    raise unsupported_content_type(parts.content_type)


__all__ = [
    "FORM", "JSON", "TEXT", "BadPayload", "BatchTooLarge", "MissingFields", "RefusedPayload", "RequestParts",
    "decode_form", "decode_json", "decode_request", "media_type", "unsupported_content_type",
]  # fmt: skip
