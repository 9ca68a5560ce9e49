"""What a dispatcher holding a subscription's fan-out lease keeps of it: the events it has read and handed to
attempts, page by page, and how far the subscription's cursor may move. Pure: the dispatcher does the I/O.

The cursor moves past a page once every delivery the page handed out is written (its first attempt recorded),
never past one still being attempted: a dispatcher that dies leaves those to be read again by the next holder of
the lease (at least once), and nothing before the cursor is unwritten.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from uuid import UUID

from service.store.events import Cursor
from service.store.subscriptions import FanoutLease


@dataclass(eq=False)
class ReadPage:
    """Events read in one go: the cursor after them, and how many of their deliveries are not written yet."""

    next_cursor: Cursor
    unwritten: int


@dataclass(eq=False)
class HeldFanout:
    """A fan-out lease this process holds on one subscription."""

    subscription_id: int
    token: UUID  # new for each take of the lease
    read_to: Cursor  # where the next page starts
    written: Cursor  # the subscription's cursor as this process last wrote it (or found it)
    renewed: float  # when the lease was last taken or renewed (time.monotonic())
    pages: deque[ReadPage] = field(default_factory=deque)

    def read(self, next_cursor: Cursor, handed: int) -> ReadPage:
        """A page read: `handed` of its events became attempts."""
        page = ReadPage(next_cursor, handed)
        self.pages.append(page)
        self.read_to = next_cursor
        return page

    def done(self, writing: Mapping[ReadPage, int] | None = None) -> Cursor:
        """How far the cursor may move, once the deliveries being written now (`writing`: how many per page) are:
        past every page, from the first on, whose deliveries are all written."""
        cursor = self.written
        for page in self.pages:
            if page.unwritten - (writing or {}).get(page, 0) > 0:
                break
            cursor = max(cursor, page.next_cursor)
        return cursor

    def lease(self, writing: Mapping[ReadPage, int] | None = None) -> FanoutLease:
        return FanoutLease(self.subscription_id, self.token, self.done(writing))

    def settle(self, cursor: Cursor) -> None:
        """The cursor was written as `cursor`: the pages it has passed are forgotten."""
        self.written = max(self.written, cursor)
        while self.pages and self.pages[0].unwritten <= 0 and self.pages[0].next_cursor <= self.written:
            self.pages.popleft()


def written(pages: Mapping[ReadPage, int]) -> None:
    """These deliveries (how many per page) are written."""
    for page, count in pages.items():
        page.unwritten -= count
