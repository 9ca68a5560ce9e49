"""The registry of dialects: each sender's format, parsed into canonical reports at the edge.

A dialect is a module with a `parse(parts, received_at, max_batch) -> Parsed` function, pure: no I/O, no
clock. A batch of more than `max_batch` reports raises `BatchTooLarge` before any report is built.
Adding a dialect is one new module and one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from service.dialects import generic
from service.dialects.types import Dialect, ItemError, Parsed
from service.payloads import RequestParts

Parser = Callable[[RequestParts, datetime, int], Parsed]

DIALECTS: dict[str, Dialect] = {d.name: d for d in (generic.DIALECT,)}

__all__ = ["DIALECTS", "Dialect", "ItemError", "Parsed", "Parser"]
