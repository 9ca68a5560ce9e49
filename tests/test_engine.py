"""The status engine in three layers: the table's structure, worked examples, and properties against a
naive reference model.

Expectations here are written out independently of ``service.engine``: literal status names, a literal
decision grid and a reference model that knows nothing of the engine's table or helpers.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.engine import (
    SEGMENT_DECISIONS,
    InvalidReport,
    MessageState,
    Outcome,
    Reason,
    Report,
    apply_report,
    derive_status,
    grow,
    new_message,
    segment_decision,
)
from service.statuses import SEGMENT_STATUSES, Status

# The product documentation's vocabulary, spelled out rather than imported.
LADDER = ["NEW", "ENQUEUD", "ACCEPTD", "PDLIVRD"]  # non-finals, lowest first
FINALS = ["DELIVRD", "UNDELIV", "REJECTD", "EXPIRED", "DELETED"]
SEGMENT_ORDER = ["NEW", "ENQUEUD", "ACCEPTD", *FINALS]  # every status a segment can hold
SEGMENT_NONFINALS = ["NEW", "ENQUEUD", "ACCEPTD"]


def ms(segments: str, status: str, partial: bool = False) -> MessageState:
    """A message state written as text: ``ms("NEW UNDELIV", "ACCEPTD")``."""
    return MessageState(tuple(Status(s) for s in segments.split()), Status(status), partial)


def run(state: MessageState, reports: Iterable[Report]) -> MessageState:
    """The state a message ends in after ``reports``, applied one by one."""
    for report in reports:
        state = apply_report(state, report).state
    return state


# ---------------------------------------------------------------------------------------------------------
# Layer 1: the segment table's structure

# Rows: the segment's current status. Columns: the reported status, in SEGMENT_ORDER.
# ok = applied, dup = duplicate, stale = stale, late = after_final.
DECISION_GRID = """
          NEW    ENQUEUD ACCEPTD DELIVRD UNDELIV REJECTD EXPIRED DELETED
NEW       dup    ok      ok      ok      ok      ok      ok      ok
ENQUEUD   stale  dup     ok      ok      ok      ok      ok      ok
ACCEPTD   stale  stale   dup     ok      ok      ok      ok      ok
DELIVRD   late   late    late    dup     late    late    late    late
UNDELIV   late   late    late    late    dup     late    late    late
REJECTD   late   late    late    late    late    dup     late    late
EXPIRED   late   late    late    late    late    late    dup     late
DELETED   late   late    late    late    late    late    late    dup
"""
GRID_WORDS = {"ok": None, "dup": "duplicate", "stale": "stale", "late": "after_final"}


def grid_cases() -> list[tuple[str, str, str | None]]:
    header, *rows = DECISION_GRID.strip().splitlines()
    columns = header.split()
    cases = []
    for row in rows:
        current, *words = row.split()
        cases += [(current, reported, GRID_WORDS[w]) for reported, w in zip(columns, words, strict=True)]
    return cases


def test_grid_is_complete() -> None:
    """The spelled-out grid itself names every segment status on both axes (guards the test's own data)."""
    pairs = {(c, r) for c, r, _ in grid_cases()}
    assert pairs == set(itertools.product(SEGMENT_ORDER, SEGMENT_ORDER))
    assert set(SEGMENT_ORDER) == {str(s) for s in SEGMENT_STATUSES}


def test_table_covers_every_segment_status_pair() -> None:
    """The engine's table has exactly one entry for each (current, reported) pair of segment statuses."""
    assert set(SEGMENT_DECISIONS) == set(itertools.product(SEGMENT_STATUSES, SEGMENT_STATUSES))


@pytest.mark.parametrize(("current", "reported", "expected"), grid_cases())
def test_segment_decision(current: str, reported: str, expected: str | None) -> None:
    """Each segment decision matches the grid: duplicate first, then after_final, then forward-only."""
    assert segment_decision(Status(current), Status(reported)) == expected
    assert SEGMENT_DECISIONS[Status(current), Status(reported)] == expected


@pytest.mark.parametrize("final", FINALS)
def test_finals_are_absorbing(final: str) -> None:
    """No report moves a final segment: every other status is after_final, the same one a duplicate."""
    for reported in SEGMENT_ORDER:
        decision = segment_decision(Status(final), Status(reported))
        assert decision == (Reason.DUPLICATE if reported == final else Reason.AFTER_FINAL)


@pytest.mark.parametrize(("current", "reported"), [("PDLIVRD", "NEW"), ("NEW", "PDLIVRD")])
def test_pdlivrd_has_no_segment_decision(current: str, reported: str) -> None:
    """PDLIVRD is never a segment status, so asking the table about it is a programming error."""
    with pytest.raises(ValueError, match="PDLIVRD"):
        segment_decision(Status(current), Status(reported))


# ---------------------------------------------------------------------------------------------------------
# Layer 1b: the message status, derived from every combination of segments


def expected_message_status(segments: Sequence[str], partial: bool) -> str:
    """DESIGN §1 "Message status" and decision 7, written out independently of the engine."""
    if all(s in FINALS for s in segments):
        return "DELIVRD" if all(s == "DELIVRD" for s in segments) else segments[0]
    if partial or "DELIVRD" in segments:
        return "PDLIVRD"
    progress = ["ACCEPTD" if s in FINALS else s for s in segments]
    return max(progress, key=LADDER.index)


@pytest.mark.parametrize("partial", [False, True])
@pytest.mark.parametrize("count", [1, 2, 3])
def test_derive_status_exhaustive(count: int, partial: bool) -> None:
    """Every combination of 1-3 segment statuses, with and without a message-level PDLIVRD, derives the
    status the rules give."""
    wrong = [
        (combo, got, want)
        for combo in itertools.product(SEGMENT_ORDER, repeat=count)
        if (got := derive_status([Status(s) for s in combo], partial))
        != (want := expected_message_status(combo, partial))
    ]
    assert wrong == []


def test_derive_status_needs_a_segment() -> None:
    """A message without segments has no status; that is a bug in the caller, not a state."""
    with pytest.raises(ValueError, match="at least one segment"):
        derive_status([], False)


# ---------------------------------------------------------------------------------------------------------
# Layer 2: worked examples

S = Status
# fmt: off
EXAMPLES = [
    # (id, before, report, applied, reason, after, transitions)
    pytest.param(
        ms("ACCEPTD", "ACCEPTD"), Report(S.DELIVRD, 1), True, None, ms("DELIVRD", "DELIVRD"),
        ((1, S.ACCEPTD, S.DELIVRD),), id="single-segment-delivered",
    ),
    pytest.param(
        ms("NEW", "NEW"), Report(S.ENQUEUD), True, None, ms("ENQUEUD", "ENQUEUD"),
        ((1, S.NEW, S.ENQUEUD),), id="message-level-progress",
    ),
    pytest.param(
        ms("ACCEPTD", "ACCEPTD"), Report(S.ENQUEUD, 1), False, Reason.STALE, ms("ACCEPTD", "ACCEPTD"),
        (), id="stale",
    ),
    pytest.param(
        ms("ACCEPTD", "ACCEPTD"), Report(S.ACCEPTD, 1), False, Reason.DUPLICATE, ms("ACCEPTD", "ACCEPTD"),
        (), id="duplicate",
    ),
    pytest.param(
        ms("ACCEPTD ACCEPTD", "ACCEPTD"), Report(S.DELIVRD, 1), True, None, ms("DELIVRD ACCEPTD", "PDLIVRD"),
        ((1, S.ACCEPTD, S.DELIVRD),), id="first-of-two-delivered-is-partial",
    ),
    pytest.param(
        ms("DELIVRD ACCEPTD", "PDLIVRD"), Report(S.DELIVRD, 2), True, None, ms("DELIVRD DELIVRD", "DELIVRD"),
        ((2, S.ACCEPTD, S.DELIVRD),), id="last-of-two-delivered",
    ),
    pytest.param(
        ms("UNDELIV ACCEPTD", "ACCEPTD"), Report(S.DELIVRD, 2), True, None, ms("UNDELIV DELIVRD", "UNDELIV"),
        ((2, S.ACCEPTD, S.DELIVRD),), id="all-final-mixed-takes-segment-1",
    ),
    pytest.param(
        ms("ACCEPTD DELIVRD", "PDLIVRD"), Report(S.ACCEPTD, 2), False, Reason.AFTER_FINAL,
        ms("ACCEPTD DELIVRD", "PDLIVRD"), (), id="after-final-segment-of-open-message",
    ),
    pytest.param(
        ms("NEW REJECTD", "ACCEPTD"), Report(S.ENQUEUD, 1), True, None, ms("ENQUEUD REJECTD", "ACCEPTD"),
        ((1, S.NEW, S.ENQUEUD),), id="final-segment-counts-as-acceptd",
    ),
    pytest.param(
        ms("NEW UNDELIV", "ACCEPTD"), Report(S.DELIVRD), True, None, ms("DELIVRD UNDELIV", "DELIVRD"),
        ((1, S.NEW, S.DELIVRD),), id="message-level-delivrd-on-new-undeliv",
    ),
    pytest.param(
        ms("ENQUEUD DELIVRD", "PDLIVRD"), Report(S.ACCEPTD), True, None, ms("ACCEPTD DELIVRD", "PDLIVRD"),
        ((1, S.ENQUEUD, S.ACCEPTD),), id="message-level-moves-only-what-it-can",
    ),
    pytest.param(
        ms("NEW ACCEPTD", "ACCEPTD"), Report(S.NEW), False, Reason.DUPLICATE, ms("NEW ACCEPTD", "ACCEPTD"),
        (), id="message-level-duplicate-on-some-segment",
    ),
    pytest.param(
        ms("ACCEPTD UNDELIV", "ACCEPTD"), Report(S.ENQUEUD), False, Reason.STALE,
        ms("ACCEPTD UNDELIV", "ACCEPTD"), (), id="message-level-stale",
    ),
    pytest.param(
        ms("ACCEPTD ACCEPTD", "ACCEPTD"), Report(S.PDLIVRD), True, None,
        ms("ACCEPTD ACCEPTD", "PDLIVRD", partial=True), (), id="message-level-pdlivrd",
    ),
    pytest.param(
        ms("ACCEPTD ACCEPTD", "PDLIVRD", partial=True), Report(S.PDLIVRD), False, Reason.DUPLICATE,
        ms("ACCEPTD ACCEPTD", "PDLIVRD", partial=True), (), id="message-level-pdlivrd-again",
    ),
    pytest.param(
        ms("DELIVRD ACCEPTD", "PDLIVRD"), Report(S.PDLIVRD), False, Reason.DUPLICATE,
        ms("DELIVRD ACCEPTD", "PDLIVRD"), (), id="message-level-pdlivrd-when-already-pdlivrd",
    ),
    pytest.param(
        ms("ACCEPTD ACCEPTD", "PDLIVRD", partial=True), Report(S.DELIVRD, 1), True, None,
        ms("DELIVRD ACCEPTD", "PDLIVRD", partial=True), ((1, S.ACCEPTD, S.DELIVRD),),
        id="segment-after-message-level-pdlivrd",
    ),
    pytest.param(
        ms("ACCEPTD", "PDLIVRD", partial=True), Report(S.DELIVRD, 1), True, None,
        ms("DELIVRD", "DELIVRD", partial=True), ((1, S.ACCEPTD, S.DELIVRD),), id="partial-then-all-delivered",
    ),
    pytest.param(
        ms("ACCEPTD", "ACCEPTD"), Report(S.ACCEPTD, 3), True, None, ms("ACCEPTD NEW ACCEPTD", "ACCEPTD"),
        ((3, S.NEW, S.ACCEPTD),), id="grow-to-reported-segment",
    ),
    pytest.param(
        ms("ACCEPTD", "ACCEPTD"), Report(S.DELIVRD, 1, segments=3), True, None,
        ms("DELIVRD NEW NEW", "PDLIVRD"), ((1, S.ACCEPTD, S.DELIVRD),), id="grow-to-announced-count",
    ),
    pytest.param(
        ms("ACCEPTD", "ACCEPTD"), Report(S.DELIVRD, segments=2), True, None, ms("DELIVRD DELIVRD", "DELIVRD"),
        ((1, S.ACCEPTD, S.DELIVRD), (2, S.NEW, S.DELIVRD)), id="message-level-grows-then-applies",
    ),
    pytest.param(
        ms("ACCEPTD", "ACCEPTD"), Report(S.PDLIVRD, segments=2), True, None,
        ms("ACCEPTD NEW", "PDLIVRD", partial=True), (), id="message-level-pdlivrd-grows",
    ),
    pytest.param(
        ms("ACCEPTD", "ACCEPTD"), Report(S.ENQUEUD, 1, segments=3), False, Reason.STALE,
        ms("ACCEPTD", "ACCEPTD"), (), id="rejected-report-does-not-grow",
    ),
    pytest.param(
        ms("ACCEPTD", "ACCEPTD"), Report(S.NEW, 2), False, Reason.DUPLICATE, ms("ACCEPTD", "ACCEPTD"),
        (), id="new-on-unseen-segment-is-duplicate-and-does-not-grow",
    ),
    pytest.param(
        ms("DELIVRD", "DELIVRD"), Report(S.DELIVRD, 1), False, Reason.DUPLICATE, ms("DELIVRD", "DELIVRD"),
        (), id="final-duplicate",
    ),
    pytest.param(
        ms("DELIVRD", "DELIVRD"), Report(S.UNDELIV, 1), False, Reason.AFTER_FINAL, ms("DELIVRD", "DELIVRD"),
        (), id="final-after-final",
    ),
    pytest.param(
        ms("DELIVRD", "DELIVRD"), Report(S.DELIVRD, 2), False, Reason.AFTER_FINAL, ms("DELIVRD", "DELIVRD"),
        (), id="final-message-never-grows",
    ),
    pytest.param(
        ms("DELIVRD", "DELIVRD"), Report(S.ACCEPTD, 1, segments=3), False, Reason.AFTER_FINAL,
        ms("DELIVRD", "DELIVRD"), (), id="final-message-ignores-announced-count",
    ),
    pytest.param(
        ms("UNDELIV DELIVRD", "UNDELIV"), Report(S.DELIVRD), False, Reason.DUPLICATE,
        ms("UNDELIV DELIVRD", "UNDELIV"), (), id="final-message-level-duplicate-of-a-segment",
    ),
    pytest.param(
        ms("EXPIRED EXPIRED", "DELIVRD"), Report(S.DELIVRD), False, Reason.DUPLICATE,
        ms("EXPIRED EXPIRED", "DELIVRD"), (), id="swept-message-level-duplicate-of-message-status",
    ),
    pytest.param(
        ms("DELIVRD DELIVRD", "DELIVRD"), Report(S.REJECTD), False, Reason.AFTER_FINAL,
        ms("DELIVRD DELIVRD", "DELIVRD"), (), id="final-message-level-after-final",
    ),
    pytest.param(
        ms("DELIVRD", "DELIVRD"), Report(S.PDLIVRD), False, Reason.AFTER_FINAL, ms("DELIVRD", "DELIVRD"),
        (), id="final-message-level-pdlivrd",
    ),
    pytest.param(
        ms("ACCEPTD", "ACCEPTD"), Report(None, 3, segments=5), False, Reason.UNMAPPED,
        ms("ACCEPTD", "ACCEPTD"), (), id="unmapped-changes-nothing",
    ),
    pytest.param(
        ms("DELIVRD", "DELIVRD"), Report(None), False, Reason.UNMAPPED, ms("DELIVRD", "DELIVRD"),
        (), id="unmapped-on-final",
    ),
]
# fmt: on


@pytest.mark.parametrize(("before", "report", "applied", "reason", "after", "transitions"), EXAMPLES)
def test_worked_example(
    before: MessageState,
    report: Report,
    applied: bool,
    reason: Reason | None,
    after: MessageState,
    transitions: tuple[tuple[int, Status, Status], ...],
) -> None:
    """Each worked example gives exactly the outcome the rules spell out."""
    outcome = apply_report(before, report)
    assert outcome == Outcome(after, applied, reason, transitions, before.status)
    if not applied:
        assert outcome.state is before


INVALID = [
    pytest.param(Report(S.PDLIVRD, 1), "PDLIVRD", id="pdlivrd-for-a-segment"),
    pytest.param(Report(S.DELIVRD, 0), "segment must be", id="segment-zero"),
    pytest.param(Report(S.DELIVRD, -1), "segment must be", id="segment-negative"),
    pytest.param(Report(S.DELIVRD, segments=0), "segments must be", id="segments-zero"),
    pytest.param(Report(S.DELIVRD, 3, segments=2), "past the 2 segments", id="segment-past-segments"),
    pytest.param(Report(None, 0), "segment must be", id="unmapped-but-malformed"),
]


@pytest.mark.parametrize("state", [ms("ACCEPTD", "ACCEPTD"), ms("DELIVRD", "DELIVRD")], ids=["open", "final"])
@pytest.mark.parametrize(("report", "message"), INVALID)
def test_invalid_report(state: MessageState, report: Report, message: str) -> None:
    """A report of impossible shape raises InvalidReport saying what is wrong, whatever the message state."""
    with pytest.raises(InvalidReport, match=message):
        apply_report(state, report)


def test_message_changed() -> None:
    """message_changed tells whether the message status moved, independently of segment transitions."""
    moved = apply_report(ms("ACCEPTD ACCEPTD", "ACCEPTD"), Report(S.DELIVRD, 1))
    assert moved.message_changed
    segment_only = apply_report(ms("NEW REJECTD", "ACCEPTD"), Report(S.ENQUEUD, 1))
    assert segment_only.applied
    assert not segment_only.message_changed


def test_new_message() -> None:
    """A registered message starts with every segment NEW and a NEW status, not partial, not final."""
    assert new_message() == ms("NEW", "NEW")
    assert new_message(3) == ms("NEW NEW NEW", "NEW")
    assert not new_message(2).final
    with pytest.raises(ValueError, match="at least one segment"):
        new_message(0)


@pytest.mark.parametrize(
    ("before", "count", "after"),
    [
        pytest.param(ms("ACCEPTD", "ACCEPTD"), 3, ms("ACCEPTD NEW NEW", "ACCEPTD"), id="adds-new-segments"),
        pytest.param(ms("DELIVRD", "PDLIVRD"), 2, ms("DELIVRD NEW", "PDLIVRD"), id="rederives"),
        pytest.param(ms("ACCEPTD NEW", "ACCEPTD"), 1, ms("ACCEPTD NEW", "ACCEPTD"), id="never-shrinks"),
        pytest.param(ms("DELIVRD", "DELIVRD"), 3, ms("DELIVRD", "DELIVRD"), id="final-never-grows"),
        pytest.param(
            ms("ACCEPTD", "PDLIVRD", partial=True),
            2,
            ms("ACCEPTD NEW", "PDLIVRD", partial=True),
            id="keeps-partial",
        ),
    ],
)
def test_grow(before: MessageState, count: int, after: MessageState) -> None:
    """grow adds NEW segments up to an announced count, never removes any, never reopens a final message."""
    assert grow(before, count) == after


def test_message_state_rejects_impossible_segments() -> None:
    """A state with no segments or a PDLIVRD segment cannot be built (a corrupt row fails loudly)."""
    with pytest.raises(ValueError, match="at least one segment"):
        MessageState((), S.NEW)
    with pytest.raises(ValueError, match="never a segment"):
        MessageState((S.PDLIVRD,), S.PDLIVRD)


def test_outcome_reason_iff_not_applied() -> None:
    """An Outcome cannot claim both to be applied and to have a rejection reason."""
    with pytest.raises(ValueError, match="contradicts"):
        Outcome(new_message(), True, Reason.STALE, (), S.NEW)


# ---------------------------------------------------------------------------------------------------------
# Known order dependence (a rule question for the lead, pinned so that a rule change shows up here)

A1, D1, A2 = Report(S.ACCEPTD, 1), Report(S.DELIVRD, 1), Report(S.ACCEPTD, 2)
E1_OF_2 = Report(S.ENQUEUD, 1, segments=2)  # segment 1 of 2: announces a second segment
# fmt: off
ORDER_DEPENDENT = [
    pytest.param(
        [D1, A2], ms("DELIVRD", "DELIVRD"), [A2, D1], ms("DELIVRD ACCEPTD", "PDLIVRD"),
        id="segment-past-count-after-final",
    ),
    pytest.param(
        [A1, E1_OF_2, D1], ms("DELIVRD", "DELIVRD"), [E1_OF_2, A1, D1], ms("DELIVRD NEW", "PDLIVRD"),
        id="count-announced-by-stale-report",
    ),
]
# fmt: on


@pytest.mark.parametrize(("one_order", "one_end", "other_order", "other_end"), ORDER_DEPENDENT)
def test_growth_is_order_dependent(
    one_order: list[Report], one_end: MessageState, other_order: list[Report], other_end: MessageState
) -> None:
    """Rules 2, 6 and 8 take in a segment count a report announces only if that report is applied while
    the message is open, so reports that announce more segments than were registered can end differently
    depending on arrival order. Counts fixed at registration (the order-independence property below) are
    unaffected. Pinned as a rule question: if the rule changes, this test changes with it."""
    assert run(new_message(1), one_order) == one_end
    assert run(new_message(1), other_order) == other_end


def test_partial_flag_is_order_dependent_where_unobservable() -> None:
    """A message-level PDLIVRD is a duplicate once a segment is DELIVRD, and after_final on a final message,
    so ``partial`` depends on arrival order -- but only where a DELIVRD segment or finality already fixes
    the status, so the message status does not."""
    reports = [Report(S.DELIVRD, 1), Report(S.PDLIVRD)]
    assert run(new_message(2), reports) == ms("DELIVRD NEW", "PDLIVRD", partial=False)
    assert run(new_message(2), reversed(reports)) == ms("DELIVRD NEW", "PDLIVRD", partial=True)
    assert run(new_message(1), reports) == ms("DELIVRD", "DELIVRD", partial=False)
    assert run(new_message(1), reversed(reports)) == ms("DELIVRD", "DELIVRD", partial=True)


# ---------------------------------------------------------------------------------------------------------
# Layer 3: properties against a naive reference model


def reference(count: int, reports: Sequence[Report]) -> tuple[tuple[str, ...], str, bool]:
    """Where a message with ``count`` registered segments ends up, whatever the order of ``reports``:
    each segment keeps the one final it received, else the highest non-final it received; ``partial``
    records any message-level PDLIVRD."""
    segments = []
    for n in range(1, count + 1):
        addressed = [r.status for r in reports if r.segment in (n, None)]
        received = [str(s) for s in addressed if s not in (None, "PDLIVRD")]
        finals = {s for s in received if s in FINALS}
        assert len(finals) <= 1, "the strategy gives each segment at most one distinct final"
        segments.append(finals.pop() if finals else max(["NEW", *received], key=LADDER.index))
    partial = any(r.status == "PDLIVRD" for r in reports)
    return tuple(segments), expected_message_status(segments, partial), partial


Observed = tuple[tuple[str, ...], str, bool | None]


def observable(segments: Sequence[str], status: str, partial: bool) -> Observed:
    """A state with ``partial`` blanked where it can no longer matter: once a segment is DELIVRD or the
    message is final, the status is fixed without it (see the order-dependence test above)."""
    settled = status in FINALS or "DELIVRD" in segments
    return tuple(segments), status, None if settled else partial


def rank(status: Status) -> int:
    """Progress of a message status, finals above every non-final."""
    return len(LADDER) if status in FINALS else LADDER.index(status)


@st.composite
def consistent_reports(draw: st.DrawFn) -> tuple[int, list[Report]]:
    """A registered segment count and a set of distinct reports within it, where each segment receives
    at most one distinct final (a message-level final counts as a final for every segment)."""
    count = draw(st.integers(1, 3))
    message_final = draw(st.none() | st.sampled_from(FINALS))
    allowed_finals = [message_final] if message_final else FINALS
    segment_finals = [draw(st.none() | st.sampled_from(allowed_finals)) for _ in range(count)]

    def for_segment(n: int) -> st.SearchStrategy[Report]:
        statuses = [*SEGMENT_NONFINALS, None] + ([segment_finals[n - 1]] if segment_finals[n - 1] else [])
        return st.builds(
            Report,
            st.sampled_from([Status(s) if s else None for s in statuses]),
            st.just(n),
            st.none() | st.integers(n, count),
        )

    message_statuses = [*SEGMENT_NONFINALS, "PDLIVRD", None] + ([message_final] if message_final else [])
    message_level = st.builds(
        Report,
        st.sampled_from([Status(s) if s else None for s in message_statuses]),
        st.none(),
        st.none() | st.integers(1, count),
    )
    segment_level = st.integers(1, count).flatmap(for_segment)
    reports = draw(st.lists(segment_level | message_level, min_size=1, max_size=8, unique=True))
    return count, reports


@settings(max_examples=400, deadline=None)
@given(case=consistent_reports(), data=st.data())
def test_any_order_any_duplication_ends_in_the_reference_state(
    case: tuple[int, list[Report]], data: st.DataObject
) -> None:
    """For reports within the registered segment count, any permutation with any duplication ends in the
    same state, the one the reference model gives (``partial`` compared where it can still matter)."""
    count, reports = case
    copies = data.draw(st.lists(st.integers(1, 3), min_size=len(reports), max_size=len(reports)))
    sequence = data.draw(st.permutations([r for r, k in zip(reports, copies, strict=True) for _ in range(k)]))
    expected = observable(*reference(count, reports))
    for order in (reports, sequence):
        state = run(new_message(count), order)
        assert observable([str(s) for s in state.segments], str(state.status), state.partial) == expected


def any_report(max_segment: int = 4) -> st.SearchStrategy[Report]:
    """Any valid report, including finals that disagree and segments past the registered count."""
    segment_level = st.integers(1, max_segment).flatmap(
        lambda n: st.builds(
            Report,
            st.none() | st.sampled_from([s for s in Status if s != Status.PDLIVRD]),
            st.just(n),
            st.none() | st.integers(n, max_segment),
        )
    )
    message_level = st.builds(
        Report, st.none() | st.sampled_from(list(Status)), st.none(), st.none() | st.integers(1, max_segment)
    )
    return segment_level | message_level


@settings(max_examples=400, deadline=None)
@given(count=st.integers(1, 3), reports=st.lists(any_report(), max_size=12))
def test_invariants_along_any_sequence(count: int, reports: list[Report]) -> None:
    """Along any sequence of reports: the message status never moves backwards and a final one never
    changes; segments never shrink or move backwards; a rejected report changes nothing; transitions
    list exactly the segments that moved; and the same report again right away is a duplicate."""
    state = new_message(count)
    for report in reports:
        outcome = apply_report(state, report)
        after = outcome.state
        assert outcome.applied == (outcome.reason is None)
        assert outcome.message_from == state.status
        assert rank(after.status) >= rank(state.status)
        if state.final:
            assert after == state
        if not outcome.applied:
            assert after is state
            assert outcome.transitions == ()
        assert len(after.segments) >= len(state.segments)
        padded = state.segments + (Status.NEW,) * (len(after.segments) - len(state.segments))
        pairs = zip(padded, after.segments, strict=True)
        moved = {(n, old, new) for n, (old, new) in enumerate(pairs, start=1) if old != new}
        assert set(outcome.transitions) == moved
        for _, old, new in moved:
            assert old not in FINALS
            assert new in FINALS or LADDER.index(new) > LADDER.index(old)
        if outcome.applied:
            assert after.status == derive_status(after.segments, after.partial)
            again = apply_report(after, report)
            assert (again.applied, again.reason) == (False, Reason.DUPLICATE)
        state = after
