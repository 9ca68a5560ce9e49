"""The expiry sweep's resolution rule, pure (`engine.expire`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.engine import MessageState, Reason, Report, apply_report, expire, new_message
from service.statuses import FINAL, SEGMENT_STATUSES, Status

D, U, R, A, N, E = Status.DELIVRD, Status.UNDELIV, Status.REJECTD, Status.ACCEPTD, Status.NEW, Status.EXPIRED


@pytest.mark.parametrize(
    ("segments", "status", "partial", "resolved", "after"),
    [
        ((N,), N, False, E, (E,)),
        ((A,), A, False, E, (E,)),
        ((A, U), A, False, E, (E, U)),
        ((D, A), Status.PDLIVRD, False, D, (D, E)),
        ((A, D, A), Status.PDLIVRD, False, D, (E, D, E)),
        ((U, D, A), Status.PDLIVRD, False, U, (U, D, E)),
        ((A, R, D), Status.PDLIVRD, False, R, (E, R, D)),
        ((A, A), Status.PDLIVRD, True, D, (E, E)),
        ((A,), Status.PDLIVRD, True, D, (E,)),
    ],
)
def test_expire_resolves_open_messages(segments, status, partial, resolved, after) -> None:  # type: ignore[no-untyped-def]
    """PDLIVRD takes its lowest operator-final segment's status (DELIVRD with no segment detail);
    anything else open becomes EXPIRED; open segments become EXPIRED."""
    outcome = expire(MessageState(segments, status, partial))
    assert outcome.applied
    assert outcome.state.status == resolved
    assert outcome.state.segments == after
    assert outcome.transitions == tuple((n, s, E) for n, s in enumerate(segments, 1) if s not in FINAL)
    assert outcome.message_from == status


def test_expire_leaves_final_messages_alone() -> None:
    """A final message is not the sweep's business: nothing changes."""
    state = MessageState((D, D), D)
    outcome = expire(state)
    assert (outcome.applied, outcome.reason, outcome.state) == (False, Reason.AFTER_FINAL, state)


def test_report_after_expiry_is_after_final() -> None:
    """A report arriving after the sweep is kept as after_final, not applied."""
    expired = expire(new_message(1)).state
    outcome = apply_report(expired, Report(Status.DELIVRD))
    assert (outcome.applied, outcome.reason) == (False, Reason.AFTER_FINAL)


@given(st.lists(st.sampled_from(sorted(SEGMENT_STATUSES)), min_size=1, max_size=3), st.booleans())
def test_expire_always_ends_final(segments: list[Status], partial: bool) -> None:
    """Whatever open state the reports left, the sweep leaves the message and every segment final."""
    from service.engine import derive_status

    state = MessageState(tuple(segments), derive_status(segments, partial), partial)
    outcome = expire(state)
    assert outcome.state.final
    assert all(s in FINAL for s in outcome.state.segments)
    # Segments that were already final keep the operator's word.
    assert all(a == b for a, b in zip(segments, outcome.state.segments, strict=True) if a in FINAL)
