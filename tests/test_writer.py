"""Group commit (`ReportWriter`): batches from concurrent callers answer exactly as one-by-one would."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from service import database
from service.engine import Report, apply_report, new_message
from service.reports import IncomingReport
from service.statuses import Status
from service.writer import ReportWriter
from tests.conftest import fetch

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def incoming(message_id: str, status: str, segment: int | None = None, segments: int | None = None) -> IncomingReport:
    return IncomingReport(message_id, Report(Status(status), segment, segments), "generic", NOW)


SEQUENCE = [
    incoming("a", "ACCEPTD"),
    incoming("a", "ACCEPTD"),  # the same message twice in one batch: a duplicate
    incoming("b", "DELIVRD", 1, 2),
    incoming("a", "ENQUEUD"),  # stale
    incoming("b", "DELIVRD", 2),
    incoming("a", "DELIVRD"),
    incoming("a", "UNDELIV"),  # after_final
    incoming("b", "DELIVRD", 1),  # duplicate
]


def one_by_one(reports: list[IncomingReport]) -> list[tuple[str, str, bool, str | None]]:
    """The reference: the pure engine applied to each report in arrival order."""
    states: dict[str, object] = {}
    answers = []
    for r in reports:
        state = states.get(r.message_id) or new_message(1)
        outcome = apply_report(state, r.report)  # type: ignore[arg-type]
        states[r.message_id] = outcome.state
        answers.append(
            (
                r.message_id,
                outcome.state.status.value,
                outcome.applied,
                outcome.reason.value if outcome.reason else None,
            )
        )
    return answers


@pytest.mark.parametrize("batching", [True, False])
def test_concurrent_callers_get_the_one_by_one_answers(db: str, batching: bool) -> None:
    """Callers queued together are committed together, in arrival order: each answer is what applying
    the reports one at a time gives, duplicates within the batch included. With batching off, calls are
    independent transactions, so they are made one after another to have an order at all."""

    async def run() -> list[tuple[str, str, bool, str | None]]:
        pool = await database.create_pool(db, 4, 10)
        writer = ReportWriter(pool, lifetime=86400, timeout=10, batching=batching)
        writer.start()
        try:
            if batching:
                results = await asyncio.gather(*(writer.apply([r]) for r in SEQUENCE))
            else:
                results = [await writer.apply([r]) for r in SEQUENCE]
        finally:
            await writer.stop()
            await pool.close()
        return [(a.message_id, a.status.value, a.applied, a.reason.value if a.reason else None) for [a] in results]

    assert asyncio.run(run()) == one_by_one(SEQUENCE)
    history = fetch(db, "SELECT count(*) AS n FROM history")[0]["n"]
    assert history == len(SEQUENCE) - 2  # the two duplicates are not stored


def test_one_bad_report_fails_only_its_caller(db: str) -> None:
    """A report the database refuses (here a NUL in the id, which validation normally stops) fails its
    own caller; the callers batched with it are committed and answered."""

    async def run() -> list[object]:
        pool = await database.create_pool(db, 4, 10)
        writer = ReportWriter(pool, lifetime=86400, timeout=10, writers=1)
        writer.start()
        try:
            calls = [writer.apply([incoming(f"ok{i}", "DELIVRD")]) for i in range(5)]
            calls.insert(2, writer.apply([incoming("bad\x00id", "DELIVRD")]))
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await writer.stop()
            await pool.close()

    results = asyncio.run(run())
    assert isinstance(results[2], asyncpg.PostgresError | asyncpg.DataError | ValueError)
    assert all(isinstance(r, list) and r[0].applied for i, r in enumerate(results) if i != 2)
    assert {r["id"] for r in fetch(db, "SELECT id FROM messages")} == {f"ok{i}" for i in range(5)}


def test_a_lower_sequence_than_one_seen_is_stale(db: str) -> None:
    """A sender's own ordering (Plivo's Sequence): a callback numbered below one already seen for the
    message is stale, and one with the same number is that callback resent (a duplicate); neither changes
    anything, even when its status would otherwise move the message."""

    async def run() -> list[tuple[bool, str | None, str]]:
        pool = await database.create_pool(db, 2, 10)
        writer = ReportWriter(pool, lifetime=86400, timeout=10, batching=False)
        try:
            out = []
            for status, seq in (("ENQUEUD", 3), ("ACCEPTD", 2), ("DELIVRD", 3), ("DELIVRD", 4)):
                [a] = await writer.apply([incoming("p", status)._replace(sequence=seq)])
                out.append((a.applied, a.reason.value if a.reason else None, a.status.value))
            return out
        finally:
            await pool.close()

    assert asyncio.run(run()) == [
        (True, None, "ENQUEUD"),
        (False, "stale", "ENQUEUD"),
        (False, "duplicate", "ENQUEUD"),
        (True, None, "DELIVRD"),
    ]
    # the resent 3 is a duplicate: not stored twice
    assert [r["sequence"] for r in fetch(db, "SELECT sequence FROM history ORDER BY seq")] == [3, 2, 4]


@pytest.mark.parametrize(("registered", "reported"), [("12345678", "0000000012345678"), ("0012345678", "12345678")])
def test_zero_padding_tolerant_reports_find_the_registered_message(db: str, registered: str, reported: str) -> None:
    """A report that may be zero-padded differently (an SMPP receipt id) updates the registered message
    instead of creating another; an id that matches nothing creates the message as sent."""

    async def run() -> list[str]:
        pool = await database.create_pool(db, 2, 10)
        writer = ReportWriter(pool, lifetime=86400, timeout=10, batching=False)
        try:
            await writer.apply([incoming(registered, "ACCEPTD")])
            [a] = await writer.apply([incoming(reported, "DELIVRD")._replace(match_zero_padded=True)])
            [b] = await writer.apply([incoming("000999", "DELIVRD")._replace(match_zero_padded=True)])
            return [a.message_id, a.status.value, b.message_id]
        finally:
            await pool.close()

    assert asyncio.run(run()) == [registered, "DELIVRD", "000999"]
    assert {r["id"] for r in fetch(db, "SELECT id FROM messages")} == {registered, "000999"}
