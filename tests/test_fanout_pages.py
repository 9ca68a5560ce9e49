"""The fan-out's pages (service/subscriptions/fanout.py): how far a subscription's cursor may move while the events
it read are being attempted. The rule: past every page, from the first on, whose deliveries are all written; never
past one still being attempted (a dispatcher that dies then leaves it to be read again, not lost)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.store.events import Cursor
from service.subscriptions.fanout import HeldFanout, written

START = Cursor(10, 0)


def held() -> HeldFanout:
    return HeldFanout(7, uuid.uuid4(), START, START, 0.0)


@pytest.mark.parametrize(
    ("handed", "writing", "done"),
    [
        ([], {}, START),  # nothing read: where it was
        ([0], {}, Cursor(11, 5)),  # a page its filter matched none of: passed at once
        ([2], {}, START),  # a page being attempted
        ([2], {0: 1}, START),  # half of it written
        ([2], {0: 2}, Cursor(11, 5)),  # all of it
        ([1, 1], {1: 1}, START),  # the second written before the first: not past the first
        ([1, 1], {0: 1}, Cursor(11, 5)),  # the first: up to it
        ([1, 0, 1], {0: 1}, Cursor(11, 10)),  # and past an empty one after it
        ([1, 0, 1], {0: 1, 2: 1}, Cursor(11, 15)),
    ],
)
def test_the_cursor_moves_past_the_pages_written_from_the_first_on(
    handed: list[int], writing: dict[int, int], done: Cursor
) -> None:
    fanout = held()
    pages = [fanout.read(Cursor(11, 5 * (n + 1)), count) for n, count in enumerate(handed)]
    by_page = {pages[n]: count for n, count in writing.items()}
    assert fanout.done(by_page) == done
    assert fanout.lease(by_page).cursor == done
    written(by_page)
    assert fanout.done() == done  # once written, without being told
    fanout.settle(done)
    assert fanout.written == done
    assert all(page.unwritten > 0 for page in list(fanout.pages)[:1])  # what is left starts at a page not written


# A run: pages read (how many deliveries each hands out), and deliveries written one at a time in any order.
runs = st.lists(st.integers(0, 3), max_size=8).flatmap(
    lambda handed: st.tuples(
        st.just(handed),
        st.permutations([n for n, count in enumerate(handed) for _ in range(count)]),
        st.lists(st.booleans(), min_size=sum(handed), max_size=sum(handed)),
    )
)


@given(runs)
def test_the_cursor_is_never_past_a_delivery_not_written(run: tuple[list[int], list[int], list[bool]]) -> None:
    """Against a simple model: the cursor after k writes is the end of the longest run of pages, from the first,
    all of whose deliveries are among those k. Settling (writing the cursor) at any moment changes nothing of it."""
    handed, order, settle_after = run
    fanout = held()
    ends = [fanout.read(Cursor(20, 10 * (n + 1)), count) for n, count in enumerate(handed)]
    left = list(handed)
    for page_index, settle in zip(order, settle_after, strict=True):
        written({ends[page_index]: 1})
        left[page_index] -= 1
        expected = START
        for n, count in enumerate(left):
            if count:
                break
            expected = ends[n].next_cursor
        # The model's pages with nothing to write come at once: a leading run of empty pages is passed too.
        assert fanout.done() == expected
        if settle:
            fanout.settle(fanout.done())
            assert fanout.written == expected
    assert fanout.done() == (ends[-1].next_cursor if ends else START)
