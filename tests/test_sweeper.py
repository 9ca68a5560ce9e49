"""The sweep's rests (`sweeper.DutyCycle`): only while other transactions write."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from service import store
from service.sweeper import DutyCycle


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# Each step: (next transaction id read before the batch, whether the batch wrote, seconds since the last step).
ALONE = [(100, True, 0.0), (101, True, 0.1), (102, True, 0.1), (103, False, 0.1)]
WITH_INGEST = [(100, True, 0.0), (105, True, 0.1), (112, True, 0.1)]
INGEST_THEN_QUIET = [(100, True, 0.0), (105, True, 0.1), (106, True, 0.5), (107, True, 0.6)]
READS_ONLY_BATCHES = [(100, False, 0.0), (100, False, 0.1), (101, False, 0.1)]


@pytest.mark.parametrize(
    ("steps", "rests"),
    [
        (ALONE, [0.0, 0.0, 0.0, 0.0]),  # only the pass's own batches took ids: never a rest
        (WITH_INGEST, [0.0, 0.54, 0.54]),  # others' ids between batches: rest (1 - 0.65) / 0.65 of 1 s
        (INGEST_THEN_QUIET, [0.0, 0.54, 0.54, 0.0]),  # still resting 0.5 s after the last sighting, not 1.1 s
        (READS_ONLY_BATCHES, [0.0, 0.0, 0.54]),  # an empty batch takes no id: the one more is someone else's
    ],
    ids=["alone", "with-ingest", "ingest-then-quiet", "empty-batches"],
)
def test_rests_only_while_others_write(steps: list[tuple[int, bool, float]], rests: list[float]) -> None:
    """A batch of 1 s is followed by a rest of (1 - duty) / duty seconds while another writer was seen less
    than a second ago, and by none while the pass's own batches were the only writers."""
    clock = Clock()
    cycle = DutyCycle(0.65, quiet=1.0, clock=clock)
    got = []
    for next_id, wrote, elapsed in steps:
        clock.now += elapsed
        cycle.saw(next_id)
        cycle.wrote(wrote)
        got.append(round(cycle.rest(1.0), 2))
    assert got == rests


async def _ids(dsn: str) -> tuple[int, int, int]:
    """The next transaction id: at first, after this session read and wrote nothing, after another session
    wrote."""
    conn, other = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        first = await store.next_transaction_id(conn)
        await conn.fetchval("SELECT count(*) FROM messages")
        after_reading = await store.next_transaction_id(conn)
        await other.execute("CREATE TEMP TABLE written (x int)")
        return first, after_reading, await store.next_transaction_id(conn)
    finally:
        await conn.close()
        await other.close()


def test_next_transaction_id_moves_with_writes_only(db: str) -> None:
    """Reading it and reading rows takes no transaction id; another session's write moves it past the first."""
    first, after_reading, after_writing = asyncio.run(_ids(db))
    assert after_reading == first
    assert after_writing > first
