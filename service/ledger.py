"""Every per-message decision, pure: what a report, a registration or the expiry sweep does to a message.

The status engine (`service/engine.py`) knows segments and statuses. This layer knows the rest of a
message's life, still without I/O or a clock (times come in with the inputs):

* a sender's event seen before (Mobizon's eventId, a Standard Webhooks webhook-id) is a duplicate, whatever
  message a replay of it names: event ids are kept per sender, not per message;
* a sender's own order of its callbacks (Plivo's Sequence): an older number is stale, the same one a duplicate;
* the report that creates a message applies even when it says NEW, the state a new message starts in;
* a report the engine finds impossible (a segment past what a registration fixed) is kept as stale;
* a registration fills in metadata and never touches statuses; once the message is final it only fills in
  what is still empty, so a finished message (and its campaign's statistics) is not rewritten after the fact;
* the expiry sweep resolves a message through `engine.expire`, like any other change.

Every applied change yields one immutable `ChangeEvent`: the message as it is after the change, the status
before, the segments that moved, the source and the message's new version. History rows, metrics and the
event feed are all made from these.

The store loads the messages a batch touches (locked), hands them to a `Ledger`, and writes back what the
ledger changed: `created`, `changed`, `history`, `events` and `sender_events`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from service.engine import InvalidReport, MessageState, Outcome, Reason, Report, apply_report, expire, grow
from service.reports import IncomingReport, Registration
from service.statuses import FINAL, Status

SWEEP = "sweep"
CLOSE = "close"  # a campaign closed by an operator (`POST /campaigns/{c}/close`): the sweep's rules, now
REGISTRATION = "registration"

SegmentChange = tuple[int, Status, Status]  # (segment, from, to)


class MessageRecord(NamedTuple):
    """A message as stored: its state and its metadata. Never changed in place: each change is a new record."""

    id: str
    state: MessageState
    segment_updated_at: tuple[datetime, ...]
    sent_at: datetime
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
    recipient: str | None = None
    campaign: str | None = None
    error: str | None = None
    text: str | None = None
    final_at: datetime | None = None
    registered_at: datetime | None = None
    # Seconds from sending to DELIVRD, by the sender's event time when it gave one; None when the message was
    # not delivered by a report (the sweep's verdict says nothing about how long delivery took).
    delivery_seconds: float | None = None
    version: int = 0  # one more with every change event

    @property
    def status(self) -> Status:
        return self.state.status

    @property
    def final(self) -> bool:
        return self.state.final


class ChangeEvent(NamedTuple):
    """One applied change of one message: the input of its history row, its metrics and the event feed."""

    message: MessageRecord  # as it is after the change; its version is this event's
    previous_status: Status | None  # None: this change created the message
    source: str  # the dialect, "sweep" or "registration"
    segment_changes: tuple[SegmentChange, ...]

    @property
    def at(self) -> datetime:
        """When the change was applied: every change stamps its message's `updated_at`."""
        return self.message.updated_at

    @property
    def message_id(self) -> str:
        return self.message.id

    @property
    def status(self) -> Status:
        return self.message.status

    @property
    def version(self) -> int:
        return self.message.version


class ReportDecision(NamedTuple):
    """What one report did: the answer to its sender, and its change when it made one."""

    report: IncomingReport
    status: Status  # the message status after the report
    applied: bool
    reason: Reason | None
    # The change it made: when applied, and when it created the message it names even though it was not.
    change: ChangeEvent | None = None

    @property
    def message_id(self) -> str:
        return self.report.message_id

    @property
    def message_from(self) -> Status:
        """The message status before the report (NEW for a message the report created)."""
        if self.change is None:
            return self.status
        return self.change.previous_status or Status.NEW

    @property
    def recorded(self) -> bool:
        """Whether the report is kept in the history: everything but a duplicate."""
        return self.reason is not Reason.DUPLICATE

    @property
    def delivery_seconds(self) -> float | None:
        """Set when this report made the message DELIVRD."""
        change = self.change
        if change is None or change.status is not Status.DELIVRD or change.previous_status is Status.DELIVRD:
            return None
        return change.message.delivery_seconds


class RegistrationDecision(NamedTuple):
    message_id: str
    status: Status
    created: bool  # the first registration of this id in the batch made the message


class HistoryEntry(NamedTuple):
    """One row of a message's history: a report (applied or not) or a sweep resolution."""

    message_id: str
    status: Status | None
    received_at: datetime
    source: str
    applied: bool
    reason: Reason | None = None
    raw_status: str | None = None
    segment: int | None = None
    event_time: datetime | None = None
    error: str | None = None
    event_id: str | None = None
    sequence: int | None = None


class SenderEvent(NamedTuple):
    """A sender's event id, kept so that a replay of it is never applied again."""

    source: str
    event_id: str
    message_id: str
    received_at: datetime


def no_error(code: str | None) -> str | None:
    """An operator error code, or None where it says "no error" (`0`, `000`: what SMSCs send with DELIVRD)."""
    if code is None or code.strip("0 ") == "":
        return None
    return code


_NEW_STATES: dict[int, MessageState] = {}


def _new_state(segments: int) -> MessageState:
    """Every segment NEW: a frozen value, made once per segment count."""
    state = _NEW_STATES.get(segments)
    if state is None:
        state = _NEW_STATES[segments] = MessageState((Status.NEW,) * segments, Status.NEW)
    return state


def new_record(
    message_id: str,
    sent_at: datetime,
    now: datetime,
    lifetime: timedelta | int,
    segments: int = 1,
    recipient: str | None = None,
    campaign: str | None = None,
    text: str | None = None,
) -> MessageRecord:
    """A message as it starts: every segment NEW, due `lifetime` (seconds) after sending."""
    if not isinstance(lifetime, timedelta):
        lifetime = timedelta(seconds=lifetime)
    return MessageRecord(
        message_id, _new_state(segments), (now,) * segments, sent_at, sent_at + lifetime, now, now, recipient, campaign,
        None, text,
    )  # fmt: skip


def match_zero_padded(reports: Iterable[IncomingReport], stored_ids: Iterable[str]) -> list[IncomingReport]:
    """Point zero-padding-tolerant reports at the stored message whose id differs only in leading zeros.

    `stored_ids`: the stored ids that match some report's id without its zeros. The id as sent wins when it
    exists; otherwise the first stored match (ids ordered) takes the report.
    """
    stored = set(stored_ids)
    by_key: dict[str, str] = {}
    for i in sorted(stored):
        by_key.setdefault(i.lstrip("0"), i)
    return [
        r._replace(message_id=by_key[r.message_id.lstrip("0")])
        if r.match_zero_padded and r.message_id not in stored and r.message_id.lstrip("0") in by_key
        else r
        for r in reports
    ]


# apply_report is pure and its inputs and Outcome are frozen values, while traffic repeats a few patterns
# (a one-part message at NEW taking ACCEPTD, at ACCEPTD taking DELIVRD, ...): remembering the outcomes
# spares the engine's work for almost every report. Bounded: odd segment mixes are computed each time.
_OUTCOMES: dict[tuple[MessageState, Report], Outcome] = {}
_MAX_OUTCOMES = 4096


def _outcome(state: MessageState, report: Report) -> Outcome:
    key = (state, report)
    found = _OUTCOMES.get(key)
    if found is None:
        found = apply_report(state, report)
        if len(_OUTCOMES) < _MAX_OUTCOMES:
            _OUTCOMES[key] = found
    return found


_EXPIRED: dict[tuple[MessageState, Status], Outcome] = {}  # the same for the sweep: few shapes recur


def _expiry(state: MessageState, target: Status) -> Outcome:
    found = _EXPIRED.get((state, target))
    if found is None:
        found = expire(state, target)
        if len(_EXPIRED) < _MAX_OUTCOMES:
            _EXPIRED[state, target] = found
    return found


@dataclass(slots=True)
class Ledger:
    """The messages one transaction touches, and what it does to them, in order.

    `records`: the stored messages the batch names, locked by the caller (absent: not stored yet).
    `seen_events`: which of the batch's (source, event id) pairs were applied before.
    `last_sequences`: the highest (message, source) sequence number seen before.
    """

    records: dict[str, MessageRecord]
    lifetime: int  # seconds
    seen_events: set[tuple[str, str]] = field(default_factory=set)
    last_sequences: dict[tuple[str, str], int] = field(default_factory=dict)
    created: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)
    history: list[HistoryEntry] = field(default_factory=list)
    events: list[ChangeEvent] = field(default_factory=list)
    sender_events: list[SenderEvent] = field(default_factory=list)
    _deadline: timedelta = field(init=False)

    def __post_init__(self) -> None:
        self._deadline = timedelta(seconds=self.lifetime)

    # -- reports -----------------------------------------------------------------------------------

    def apply_report(self, r: IncomingReport) -> ReportDecision:
        current = self.records.get(r.message_id)
        before = current.status if current is not None else Status.NEW
        if r.event_id is not None:
            key = (r.source, r.event_id)
            if key in self.seen_events:
                return ReportDecision(r, before, False, Reason.DUPLICATE)
            self.seen_events.add(key)
            self.sender_events.append(SenderEvent(r.source, r.event_id, r.message_id, r.received_at))
        if r.sequence is not None:
            order = (r.message_id, r.source)
            last = self.last_sequences.get(order)
            if last is not None and r.sequence <= last:
                reason = Reason.DUPLICATE if r.sequence == last else Reason.STALE
                return self._recorded(ReportDecision(r, before, False, reason))
            self.last_sequences[order] = r.sequence

        creating = current is None
        if current is None:
            sent_at = r.event_time or r.received_at
            current = new_record(r.message_id, sent_at, r.received_at, self._deadline, 1, r.recipient, r.campaign)
        try:
            outcome = _outcome(current.state, r.report)
        except InvalidReport:
            # Dialects validate first; a report the engine still refuses (a segment number past what a
            # registration fixed, say) is kept in the history as stale rather than failing its batch.
            outcome = Outcome(current.state, False, Reason.STALE, (), current.status)
        if creating and outcome.reason is Reason.DUPLICATE:
            # The report that creates a message is news even when it says NEW, the state it starts in.
            outcome = Outcome(current.state, True, None, (), current.status)
        if creating:
            self.created.add(r.message_id)
            self.records[r.message_id] = current
        if not outcome.applied:
            # Not applied, it still made the message it names (an unmapped status, an impossible segment):
            # the message exists from now on, and that is a change of its own.
            made = self._change(current, None, r.source, ()) if creating else None
            return self._recorded(ReportDecision(r, outcome.state.status, False, outcome.reason, made))
        after = self._take(current, outcome, r)
        change = self._change(after, None if creating else current.status, r.source, outcome.transitions)
        return self._recorded(ReportDecision(r, after.status, True, None, change))

    def _take(self, record: MessageRecord, outcome: Outcome, r: IncomingReport) -> MessageRecord:
        now = r.received_at
        state = outcome.state
        stamps = record.segment_updated_at
        if outcome.transitions or len(state.segments) > len(stamps):
            grown = list(stamps) + [now] * (len(state.segments) - len(stamps))
            for segment, _old, _new in outcome.transitions:
                grown[segment - 1] = now
            stamps = tuple(grown)
        error = no_error(r.error)
        delivered = state.status is Status.DELIVRD and record.state.status is not Status.DELIVRD
        # Built positionally, in MessageRecord's field order: this runs for every applied report.
        return MessageRecord(
            record.id,
            state,
            stamps,
            record.sent_at,
            record.expires_at,
            record.created_at,
            now,  # updated_at
            record.recipient or r.recipient,
            record.campaign or r.campaign,
            record.error if error is None else error,
            record.text,
            now if state.status in FINAL and record.final_at is None else record.final_at,
            record.registered_at,
            _seconds_since(record.sent_at, r.event_time or now) if delivered else record.delivery_seconds,
            record.version + 1,
        )

    def _recorded(self, decision: ReportDecision) -> ReportDecision:
        if decision.recorded:
            r = decision.report
            self.history.append(
                HistoryEntry(
                    r.message_id,
                    r.report.status,
                    r.received_at,
                    r.source,
                    decision.applied,
                    decision.reason,
                    r.raw_status,
                    r.report.segment,
                    r.event_time,
                    r.error,
                    r.event_id,
                    r.sequence,
                )
            )
        return decision

    # -- registrations -----------------------------------------------------------------------------

    def register(self, reg: Registration) -> RegistrationDecision:
        """Fill in a message's metadata; create it (every segment NEW) if it is not stored yet."""
        current = self.records.get(reg.message_id)
        if current is None:
            sent_at = reg.sent_at or reg.received_at
            record = new_record(
                reg.message_id, sent_at, reg.received_at, self._deadline, reg.segments or 1,
                reg.recipient, reg.campaign, reg.text,
            )  # fmt: skip
            record = record._replace(registered_at=reg.received_at)
            self.created.add(reg.message_id)
            self.records[reg.message_id] = record
            self._change(record, None, REGISTRATION, ())
            return RegistrationDecision(reg.message_id, record.status, True)
        self.records[reg.message_id] = self._registered(current, reg)
        self.changed.add(reg.message_id)
        return RegistrationDecision(reg.message_id, current.status, False)

    def _registered(self, record: MessageRecord, reg: Registration) -> MessageRecord:
        if record.final:
            # Finished: only what is still unknown is filled in; what it was sent as, and when, stays.
            return record._replace(
                recipient=record.recipient or reg.recipient,
                campaign=record.campaign or reg.campaign,
                text=record.text or reg.text,
                registered_at=reg.received_at,
            )
        state, stamps = record.state, record.segment_updated_at
        if reg.segments is not None and reg.segments > len(state.segments):
            state = grow(state, reg.segments)
            stamps = stamps + (reg.received_at,) * (len(state.segments) - len(stamps))
        sent_at = reg.sent_at or record.sent_at
        return record._replace(
            state=state,
            segment_updated_at=stamps,
            recipient=reg.recipient if reg.recipient is not None else record.recipient,
            campaign=reg.campaign if reg.campaign is not None else record.campaign,
            text=reg.text if reg.text is not None else record.text,
            # The deadline follows the registration's sending time while the message is still open.
            sent_at=sent_at,
            expires_at=sent_at + timedelta(seconds=self.lifetime) if reg.sent_at is not None else record.expires_at,
            registered_at=reg.received_at,
            updated_at=reg.received_at,
        )

    # -- the expiry sweep --------------------------------------------------------------------------

    def expire(
        self, message_id: str, now: datetime, target: Status = Status.EXPIRED, source: str = SWEEP
    ) -> ChangeEvent | None:
        """Resolve a message past its lifetime (`engine.expire`), or closed with `target` by an operator
        (source CLOSE); None if it is final already."""
        record = self.records[message_id]
        outcome = _expiry(record.state, target)
        if not outcome.applied:
            return None
        stamps = list(record.segment_updated_at)
        for segment, _old, _new in outcome.transitions:
            stamps[segment - 1] = now
        after = record._replace(
            state=outcome.state,
            segment_updated_at=tuple(stamps),
            final_at=now,
            updated_at=now,
            version=record.version + 1,
        )
        change = self._change(after, record.status, source, outcome.transitions)
        self.history.append(sweep_history(change))
        return change

    # -- bookkeeping -------------------------------------------------------------------------------

    def _change(
        self,
        after: MessageRecord,
        previous: Status | None,
        source: str,
        moved: tuple[SegmentChange, ...],
    ) -> ChangeEvent:
        if previous is None and after.version == 0:
            after = after._replace(version=1)
        self.records[after.id] = after
        if after.id not in self.created:
            self.changed.add(after.id)
        event = ChangeEvent(after, previous, source, moved)
        self.events.append(event)
        return event


def sweep_history(change: ChangeEvent) -> HistoryEntry:
    """A sweep's (or a close's) resolution history row: the status it was resolved to, when, by whom."""
    return HistoryEntry(change.message_id, change.status, change.at, change.source, True)


def _seconds_since(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())
