"""Validation of single field values shared by the dialects and the registration API.

Each reader takes the raw value (a JSON value or a form string) and returns the clean value, or
raises `FieldError` with what is wrong. `FieldErrors` collects them per field, so one answer names
every bad field at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from service.errors import BadPayload, MissingFields, RefusedPayload

T = TypeVar("T")

MAX_ID = 255
MAX_TEXT = 255
MAX_SEGMENTS = 255  # concatenated SMS carry the part count in one byte
# Event times outside this range are typos or garbage, never real deliveries.
MIN_TIME = datetime(2000, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(2100, 1, 1, tzinfo=UTC)
# ASCII digits only: float() also reads other scripts' digits, `_` separators, exponents and "nan".
_UNIX_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


class FieldError(ValueError):
    pass


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise FieldError("contains a NUL character")
    return text


def _as_text(value: Any) -> str:
    """Text as sent; a JSON whole number counts as its decimal digits. JSON does not tell 7 from 7.0 (nor
    does JSON Schema's `integer`), so an integral float is the same whole number."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise FieldError("must be a string")


def message_id(value: Any) -> str:
    """A message id is text kept exactly as sent; a JSON whole number counts as its decimal text."""
    text = _as_text(value)
    if not text.strip():
        raise FieldError("must not be empty")
    if len(text) > MAX_ID:
        raise FieldError(f"longer than {MAX_ID} characters")
    return _no_nul(text)


def text(value: Any, limit: int = MAX_TEXT) -> str | None:
    if value is None or value == "":
        return None
    result = _as_text(value)
    if len(result) > limit:
        raise FieldError(f"longer than {limit} characters")
    return _no_nul(result)


MAX_SHORT = 64


def short(value: Any) -> str | None:
    """A short code or number: a recipient, an operator error code, a raw status word."""
    return text(value, MAX_SHORT)


def count(value: Any, limit: int = MAX_SEGMENTS) -> int | None:
    """A positive whole number, from a JSON integer or a decimal string."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise FieldError("must be a whole number")
    if isinstance(value, str):
        stripped = value.strip()
        digits = stripped.lstrip("0") or "0"
        # No more digits than the limit has, leading zeros dropped: int() of a long string is slow, and
        # past 4300 digits (zeros included) an error.
        if not stripped.isascii() or not stripped.isdigit() or len(digits) > len(str(limit)):
            raise FieldError(f"must be a whole number from 1 to {limit}")
        value = int(digits)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise FieldError("must be a whole number")
    if not 1 <= value <= limit:
        raise FieldError(f"must be from 1 to {limit}")
    return value


def timestamp(value: Any) -> datetime | None:
    """ISO-8601 (no zone means UTC) or unix seconds, as a number or a decimal string."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise FieldError("must be ISO-8601 or unix seconds")
    if isinstance(value, str):
        stripped = value.strip()
        # fromisoformat() ignores a trailing NUL; whatever is not ASCII is no date either.
        if not stripped.isascii() or "\x00" in stripped:
            raise FieldError("must be ISO-8601 or unix seconds")
        if not _UNIX_SECONDS.fullmatch(stripped):
            try:
                parsed = datetime.fromisoformat(stripped.replace("Z", "+00:00") if stripped.endswith("Z") else stripped)
            except ValueError:
                raise FieldError("must be ISO-8601 or unix seconds") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return _in_range(parsed)
        value = float(stripped)
    if isinstance(value, int | float):
        # Compared as numbers first: fromtimestamp() fails (ValueError, OverflowError) far outside the
        # range, and an int past float range cannot even be converted. NaN fails the comparison too.
        if not MIN_TIME.timestamp() <= value < MAX_TIME.timestamp():
            raise FieldError("must be between 2000 and 2100")
        return datetime.fromtimestamp(value, tz=UTC)
    raise FieldError("must be ISO-8601 or unix seconds")


def _in_range(moment: datetime) -> datetime:
    if not MIN_TIME <= moment < MAX_TIME:
        raise FieldError("must be between 2000 and 2100")
    # In UTC from here on: the same instant, and PostgreSQL takes no offset past 15:59 (-20:00 is valid ISO).
    return moment.astimezone(UTC)


def word(value: Any, vocabulary: Mapping[str, T]) -> T:
    """A word of a sender's vocabulary, matched without case. ASCII only: lower-casing look-alike letters
    (a dotted İ, a Kelvin K) must not turn them into a known word."""
    names = ", ".join(vocabulary)
    if not isinstance(value, str) or not value.isascii():
        raise FieldError(f"must be one of {names}")
    key = value.strip().lower()
    if key not in vocabulary:
        raise FieldError(f"unknown value {value[:40]!r}; must be one of {names}")
    return vocabulary[key]


class FieldErrors:
    """Collects per-field problems; a `missing` one makes the refusal MissingFields (code 11), not BadPayload."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}
        self.missing: set[str] = set()

    def read(self, data: dict[str, Any], name: str, reader: Any, *, required: bool = False) -> Any:
        """`reader(data[name])`, or None. An absent optional field is None without asking the reader: every
        reader reads None as absent, and most fields are absent from most reports."""
        value = data.get(name)
        if value is None and not required:
            return None
        if required and (value is None or value == ""):
            self.errors[name] = "required"
            self.missing.add(name)
            return None
        try:
            return reader(value)
        except FieldError as exc:
            self.errors[name] = str(exc)
            return None

    def add(self, name: str, reason: str) -> None:
        self.errors.setdefault(name, reason)

    @property
    def kind(self) -> type[RefusedPayload]:
        return MissingFields if self.missing else BadPayload

    def refusal(self) -> RefusedPayload:
        return self.kind(self.errors)

    def __bool__(self) -> bool:
        return bool(self.errors)
