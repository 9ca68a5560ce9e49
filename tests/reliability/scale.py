"""How big the reliability tests run: short in the default test run (and CI), full for `make reliability`.

`DLR_RELIABILITY=full` selects the full sizes (the figures in docs/RELIABILITY.md come from those).
"""

from __future__ import annotations

import os

FULL = os.environ.get("DLR_RELIABILITY", "").lower() == "full"


def pick(short: int | float, full: int | float) -> int | float:
    return full if FULL else short
