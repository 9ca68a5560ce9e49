"""The status engine: one delivery report applied to one message, pure data in and data out.

Sans-I/O in the manner of h11's state machine: no awaits, no clock, no logging. The store loads a
:class:`MessageState` inside its transaction, calls :func:`apply_report` and writes back the
:class:`Outcome`: the new state, whether the report was applied and, if not, why.

The rules (DESIGN.md §1):

* A segment only moves forward, as celery's task states do: a non-final status gives way to a higher
  non-final one or to any final one, and a final status is absorbing. ``SEGMENT_DECISIONS`` spells this out
  for every (current, reported) pair; it is built once from the rules and only looked up afterwards.
* A message-level report applies to every segment it can move. A message-level PDLIVRD moves no segment:
  it marks the message as partly delivered.
* The message status is derived from the segments (:func:`derive_status`). While the message is still in
  progress a final segment counts as ACCEPTD -- it was certainly sent -- so the derived status is a
  monotone function of the segments: it never moves backwards and does not depend on the order in which
  reports arrive.
* A final message never changes, and a rejected report changes nothing, not even the segment count it
  announces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType

from service.statuses import RANK, SEGMENT_STATUSES, Status, is_final


class Reason(StrEnum):
    """Why a report was not applied; the values are the ``reason`` names of the HTTP answer."""

    DUPLICATE = "duplicate"
    STALE = "stale"
    AFTER_FINAL = "after_final"
    UNMAPPED = "unmapped"


class InvalidReport(ValueError):
    """A report no message could accept: its shape is wrong, not its timing."""


@dataclass(frozen=True, slots=True)
class MessageState:
    segments: tuple[Status, ...]  # index 0 is segment 1; never PDLIVRD
    # Stored, not recomputed: the expiry sweep resolves messages to statuses the derivation would not give.
    status: Status
    partial: bool = False  # a message-level PDLIVRD was reported

    def __post_init__(self) -> None:
        if not self.segments:
            raise ValueError("a message has at least one segment")
        if Status.PDLIVRD in self.segments:
            raise ValueError("PDLIVRD is a message status, never a segment's")

    @property
    def final(self) -> bool:
        return is_final(self.status)


@dataclass(frozen=True, slots=True)
class Report:
    status: Status | None  # None: the sender's value maps to no status (kept in history, no transition)
    segment: int | None = None  # 1-based; None = message-level report
    segments: int | None = None  # total parts announced by the report, if any


@dataclass(frozen=True, slots=True)
class Outcome:
    state: MessageState  # the state after the report; the input state itself when not applied
    applied: bool
    reason: Reason | None  # None iff applied
    transitions: tuple[tuple[int, Status, Status], ...]  # (segment, from, to) for every segment that moved
    message_from: Status  # the message status before the report

    def __post_init__(self) -> None:
        if self.applied != (self.reason is None):
            raise ValueError(f"applied={self.applied} contradicts reason={self.reason}")

    @property
    def message_changed(self) -> bool:
        return self.message_from != self.state.status


def _segment_rule(current: Status, reported: Status) -> Reason | None:
    if reported == current:
        # Checked first: a sender retrying DELIVRD is repeating itself, not reporting after the fact.
        return Reason.DUPLICATE
    if is_final(current):
        return Reason.AFTER_FINAL
    if is_final(reported) or RANK[reported] > RANK[current]:
        return None
    return Reason.STALE


# The whole segment state machine as data, one entry per (current, reported) pair; None means "apply".
SEGMENT_DECISIONS: Mapping[tuple[Status, Status], Reason | None] = MappingProxyType(
    {
        (current, reported): _segment_rule(current, reported)
        for current in SEGMENT_STATUSES
        for reported in SEGMENT_STATUSES
    }
)


def segment_decision(current: Status, reported: Status) -> Reason | None:
    """What a segment at ``current`` does with a report of ``reported``: None to apply it, else why not."""
    try:
        return SEGMENT_DECISIONS[current, reported]
    except KeyError:
        raise ValueError(f"no segment transition {current} -> {reported}: not segment statuses") from None


def derive_status(segments: Sequence[Status], partial: bool) -> Status:
    """The message status its segments (and a message-level PDLIVRD) add up to."""
    if not segments:
        raise ValueError("a message has at least one segment")
    if all(is_final(s) for s in segments):
        # Nothing left to wait for: resolved at once.
        return Status.DELIVRD if all(s == Status.DELIVRD for s in segments) else segments[0]
    if partial or Status.DELIVRD in segments:
        return Status.PDLIVRD
    # A final segment was sent, so it counts as ACCEPTD here. Counting it as anything lower would let the
    # message status fall when a segment goes final; ignoring it would make the status depend on whether
    # the segment's ACCEPTD arrived before its final.
    return max((Status.ACCEPTD if is_final(s) else s for s in segments), key=RANK.__getitem__)


def new_message(segments: int = 1) -> MessageState:
    """A registered message: every segment NEW."""
    if segments < 1:
        raise ValueError(f"a message has at least one segment, got {segments}")
    return MessageState(segments=(Status.NEW,) * segments, status=Status.NEW)


def grow(state: MessageState, segments: int) -> MessageState:
    """Take in a segment count announced later: add NEW segments. Never shrinks; a final message is closed."""
    if segments < 1:
        raise ValueError(f"a message has at least one segment, got {segments}")
    if state.final or segments <= len(state.segments):
        return state
    grown = state.segments + (Status.NEW,) * (segments - len(state.segments))
    return replace(state, segments=grown, status=derive_status(grown, state.partial))


def apply_report(state: MessageState, report: Report) -> Outcome:
    """Apply one report to one message. Raises :class:`InvalidReport` for a report of impossible shape."""
    _validate(report)
    status = report.status
    if status is None:
        return _rejected(state, Reason.UNMAPPED)
    if state.final:
        return _rejected(state, _reason_when_final(state, report.segment, status))
    # Growth is part of applying: if the report is rejected below, the original state is returned.
    grown = grow(state, max(report.segment or 1, report.segments or 1))
    if status == Status.PDLIVRD:
        return _apply_partial(state, grown)
    if report.segment is None:
        return _apply_to_message(state, grown, status)
    return _apply_to_segment(state, grown, report.segment, status)


def _validate(report: Report) -> None:
    if report.segment is not None:
        if report.status == Status.PDLIVRD:
            raise InvalidReport(f"PDLIVRD is a message status, not one for segment {report.segment}")
        if report.segment < 1:
            raise InvalidReport(f"segment must be 1 or more, got {report.segment}")
    if report.segments is not None:
        if report.segments < 1:
            raise InvalidReport(f"segments must be 1 or more, got {report.segments}")
        if report.segment is not None and report.segment > report.segments:
            raise InvalidReport(f"segment {report.segment} is past the {report.segments} segments reported")


def _reason_when_final(state: MessageState, segment: int | None, status: Status) -> Reason:
    if segment is None:
        repeated = status == state.status or status in state.segments
    else:
        repeated = segment <= len(state.segments) and state.segments[segment - 1] == status
    return Reason.DUPLICATE if repeated else Reason.AFTER_FINAL


def _apply_partial(before: MessageState, grown: MessageState) -> Outcome:
    if before.partial or before.status == Status.PDLIVRD:
        return _rejected(before, Reason.DUPLICATE)
    after = replace(grown, partial=True, status=derive_status(grown.segments, True))
    return Outcome(after, True, None, (), before.status)


def _apply_to_message(before: MessageState, grown: MessageState, status: Status) -> Outcome:
    decisions = [segment_decision(current, status) for current in grown.segments]
    if all(decision is not None for decision in decisions):
        if Reason.DUPLICATE in decisions or before.status == status:
            return _rejected(before, Reason.DUPLICATE)
        return _rejected(before, Reason.AFTER_FINAL if before.final else Reason.STALE)
    pairs = list(zip(grown.segments, decisions, strict=True))
    segments = tuple(status if decision is None else current for current, decision in pairs)
    moved = tuple((n, current, status) for n, (current, decision) in enumerate(pairs, 1) if decision is None)
    return _moved(before, grown, segments, moved)


def _apply_to_segment(before: MessageState, grown: MessageState, segment: int, status: Status) -> Outcome:
    current = grown.segments[segment - 1]
    reason = segment_decision(current, status)
    if reason is not None:
        return _rejected(before, reason)
    segments = (*grown.segments[: segment - 1], status, *grown.segments[segment:])
    return _moved(before, grown, segments, ((segment, current, status),))


def _moved(
    before: MessageState,
    grown: MessageState,
    segments: tuple[Status, ...],
    transitions: tuple[tuple[int, Status, Status], ...],
) -> Outcome:
    after = replace(grown, segments=segments, status=derive_status(segments, grown.partial))
    return Outcome(after, True, None, transitions, before.status)


def _rejected(state: MessageState, reason: Reason) -> Outcome:
    return Outcome(state, False, reason, (), state.status)


# The expiry sweep's rules as data (DESIGN §1, "Lifetime and the expiry sweep"). `expire` reads them, and so
# does the sweep's SQL, which is generated from them (service/store/sweep.py). Closing a campaign
# (`POST /campaigns/{c}/close`) resolves its open messages by the same rules, with the operator's status
# (EXPIRED or DELETED) where the sweep writes EXPIRED: `resolution_tables` makes both from one definition.

# What each open message status becomes. FIRST_FINAL_SEGMENT: the status of the lowest-numbered segment
# holding an operator-reported final status -- some operators report only the first delivered segment --
# or WITHOUT_SEGMENT_DETAIL when none does (a message-level PDLIVRD and nothing more).
FIRST_FINAL_SEGMENT = None
WITHOUT_SEGMENT_DETAIL = Status.DELIVRD
# The statuses an operator may close a campaign's open messages with.
CLOSING_STATUSES = frozenset({Status.EXPIRED, Status.DELETED})


def resolution_tables(target: Status) -> tuple[Mapping[Status, Status], Mapping[Status, Status | None]]:
    """(segment table, message table) of a resolution to `target`: a segment still open takes `target`, a
    final one keeps its status; an open message takes `target`, except PDLIVRD (FIRST_FINAL_SEGMENT)."""
    if not is_final(target):
        raise ValueError(f"a message is resolved to a final status, not {target}")
    segments = MappingProxyType({s: s if is_final(s) else target for s in SEGMENT_STATUSES})
    messages: Mapping[Status, Status | None] = MappingProxyType(
        {s: FIRST_FINAL_SEGMENT if s is Status.PDLIVRD else target for s in RANK}
    )
    return segments, messages


SEGMENT_EXPIRY, MESSAGE_EXPIRY = resolution_tables(Status.EXPIRED)
assert set(MESSAGE_EXPIRY) == set(RANK), "every open message status has its expiry"


def expire(state: MessageState, target: Status = Status.EXPIRED) -> Outcome:
    """The expiry sweep's resolution of a message still open past its lifetime, by the tables above (and a
    campaign's close, with its own `target`).

    The message status is set, not derived: it is the sweep's verdict.
    """
    if state.final:
        return _rejected(state, Reason.AFTER_FINAL)
    segment_table, message_table = resolution_tables(target)
    resolved = message_table[state.status]
    if resolved is FIRST_FINAL_SEGMENT:
        resolved = next((s for s in state.segments if is_final(s)), WITHOUT_SEGMENT_DETAIL)
    segments = tuple(segment_table[s] for s in state.segments)
    moved = tuple((n, s, e) for n, (s, e) in enumerate(zip(state.segments, segments, strict=True), 1) if s != e)
    return Outcome(replace(state, segments=segments, status=resolved), True, None, moved, state.status)
