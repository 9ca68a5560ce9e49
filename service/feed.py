"""Waking long-polling readers of the event feed (`GET /events?wait=`).

The feed itself is the `events` table, read gap-free (service/store/events.py); this only says "look again".
A reader is woken at once when this process commits a change, and looks again every `POLL_SECONDS` anyway,
for what other processes commit (and for changes that become readable once an older transaction ends).
A missed wake-up costs at most one poll interval, never an event.
"""

from __future__ import annotations

import asyncio

POLL_SECONDS = 0.1


class ChangeSignal:
    """Commit -> every reader waiting in this process looks again."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()

    def notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait(self, seconds: float) -> None:
        """Until the next notify, or `seconds` have passed."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.add(waiter)
        timer = loop.call_later(seconds, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiters.discard(waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
