"""Campaign statistics served from memory, at most a few seconds old.

Counting a large campaign reads every one of its index entries (a 100,000-message campaign takes a few
hundred milliseconds on two busy cores); a dashboard polling it from many places would keep the
database doing nothing else. So each process keeps the last answer per campaign for `ttl` seconds,
refreshes it in the background once it is older (callers get the previous answer meanwhile, as long as
it is less than 2 * ttl old), and lets concurrent callers of a missing campaign share one query.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

Stats = dict[str, Any] | None


class CampaignStatsCache:
    def __init__(self, load: Callable[[str], Awaitable[Stats]], ttl: float, size: int = 1024) -> None:
        self._load = load
        self._ttl = ttl
        self._size = size
        self._entries: OrderedDict[str, tuple[float, Stats]] = OrderedDict()
        self._loading: dict[str, asyncio.Task[Stats]] = {}

    async def get(self, campaign: str) -> Stats:
        if self._ttl <= 0:
            return await self._load(campaign)
        entry = self._entries.get(campaign)
        age = time.monotonic() - entry[0] if entry else None
        if entry is not None and age is not None:
            if age < self._ttl:
                return entry[1]
            if age < 2 * self._ttl:
                self._refresh(campaign)
                return entry[1]
        # Shielded: one caller giving up must not cancel the query the others are waiting for.
        return await asyncio.shield(self._refresh(campaign))

    def _refresh(self, campaign: str) -> asyncio.Task[Stats]:
        task = self._loading.get(campaign)
        if task is None:
            task = asyncio.create_task(self._fetch(campaign))
            self._loading[campaign] = task
        return task

    async def _fetch(self, campaign: str) -> Stats:
        try:
            value = await self._load(campaign)
        finally:
            self._loading.pop(campaign, None)
        self._entries[campaign] = (time.monotonic(), value)
        self._entries.move_to_end(campaign)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return value
