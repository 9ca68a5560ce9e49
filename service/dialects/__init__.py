"""The registry of dialects: each sender's format, parsed into canonical reports at the edge.

A dialect is a module of this package that defines `DIALECT = Dialect(name, parse, ...)`, where
`parse(parts, received_at, max_batch) -> Parsed` is pure: no I/O, no clock. A batch of more than
`max_batch` reports raises `BatchTooLarge` before any report is built. Adding a dialect is one new module
(and its tests): the registry finds it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from datetime import datetime

from service.dialects.types import Dialect, ItemError, Parsed
from service.payloads import RequestParts

Parser = Callable[[RequestParts, datetime, int], Parsed]

_NOT_DIALECTS = {"types"}


def _discover() -> dict[str, Dialect]:
    found: dict[str, Dialect] = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name.startswith("_") or module.name in _NOT_DIALECTS:
            continue
        dialect = getattr(importlib.import_module(f"{__name__}.{module.name}"), "DIALECT", None)
        if isinstance(dialect, Dialect):
            if dialect.name in found:
                raise RuntimeError(f"two modules define the dialect {dialect.name!r}")
            found[dialect.name] = dialect
    return found


DIALECTS: dict[str, Dialect] = _discover()

__all__ = ["DIALECTS", "Dialect", "ItemError", "Parsed", "Parser"]
