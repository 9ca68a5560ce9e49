"""The campaign page's delivery-time histogram, drawn as inline SVG on the server (no script, no library).

Pure: counts in, bars out. The spans are a person's sense of time (seconds to hours), not equal widths:
delivery times of SMS spread over five orders of magnitude.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

# Where each span starts, in seconds; the last span is everything from 24 h on.
BOUNDS: tuple[float, ...] = (0, 5, 15, 30, 60, 120, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 24 * 3600)

WIDTH, HEIGHT = 640, 220  # the viewBox; the SVG itself scales to its container's width
_TOP, _BOTTOM, _LEFT = 16, 44, 8


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:g}s"
    if seconds < 3600:
        return f"{seconds / 60:g}m"
    return f"{seconds / 3600:g}h"


def labels(bounds: tuple[float, ...] = BOUNDS) -> list[str]:
    """`0-5s`, `5-15s`, ..., `24h+`."""
    spans = [f"{_duration(a)}-{_duration(b)}" for a, b in itertools.pairwise(bounds)]
    return [*spans, f"{_duration(bounds[-1])}+"]


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    count: int
    x: float
    y: float
    width: float
    height: float


def bars(counts: list[int], bounds: tuple[float, ...] = BOUNDS) -> list[Bar]:
    """One bar per span, its height in proportion to the largest count."""
    if len(counts) != len(bounds):
        raise ValueError(f"{len(counts)} counts for {len(bounds)} spans")
    top = max(counts, default=0) or 1
    slot = (WIDTH - 2 * _LEFT) / len(counts)
    usable = HEIGHT - _TOP - _BOTTOM
    out = []
    for index, (label, count) in enumerate(zip(labels(bounds), counts, strict=True)):
        height = usable * count / top
        out.append(Bar(label, count, _LEFT + index * slot + 2, _TOP + usable - height, slot - 4, height))
    return out
