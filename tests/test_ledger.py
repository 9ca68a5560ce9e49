"""The ledger: every per-message decision beside the status engine, pure, without PostgreSQL.

Worked examples for each rule (sender event ids, sender sequences, creation, impossible shapes, registration,
expiry, delivery times), then a hypothesis property against a naive model of the same rules.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.engine import Reason, Report, apply_report, new_message
from service.ledger import (
    REGISTRATION,
    SWEEP,
    ChangeEvent,
    Ledger,
    MessageRecord,
    match_zero_padded,
    new_record,
    no_error,
)
from service.reports import IncomingReport, Registration
from service.statuses import Status

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
DAY = 86400


def report(
    message_id: str = "m",
    status: str | None = "ACCEPTD",
    *,
    segment: int | None = None,
    segments: int | None = None,
    source: str = "generic",
    at: datetime = T0,
    **extra: object,
) -> IncomingReport:
    return IncomingReport(
        message_id,
        Report(Status(status) if status else None, segment, segments),
        source,
        at,
        **extra,  # type: ignore[arg-type]
    )


def stored(message_id: str = "m", status: str = "NEW", segments: int = 1, **changes: object) -> MessageRecord:
    record = new_record(message_id, T0, T0, DAY, segments)
    state = replace(record.state, status=Status(status), segments=(Status(status),) * segments)
    return record._replace(state=state, version=1, **changes)  # type: ignore[arg-type]


def answers(ledger: Ledger, *reports: IncomingReport) -> list[tuple[str, bool, str | None]]:
    out = []
    for r in reports:
        d = ledger.apply_report(r)
        out.append((d.status.value, d.applied, d.reason.value if d.reason else None))
    return out


# -- sender event ids ------------------------------------------------------------------------------


def test_a_seen_event_id_is_a_duplicate_whatever_message_it_names() -> None:
    """An event id one sender sent before is never applied again, even when a replay of it names another
    message (Mobizon signs the event id, not its data): no message is created or changed, nothing recorded."""
    ledger = Ledger({"a": stored("a", "ACCEPTD")}, DAY, seen_events={("mobizon", "26")})
    assert answers(ledger, report("b", "DELIVRD", source="mobizon", event_id="26")) == [("NEW", False, "duplicate")]
    assert (ledger.created, ledger.changed, ledger.history, ledger.events) == (set(), set(), [], [])


def test_an_event_id_is_kept_per_sender() -> None:
    """The same event id from two senders is two events; within one batch the second sight is a duplicate,
    and each first sight is kept so that later batches know it."""
    ledger = Ledger({}, DAY)
    assert answers(
        ledger,
        report("a", "ACCEPTD", source="mobizon", event_id="7"),
        report("b", "ACCEPTD", source="generic", event_id="7"),
        report("c", "DELIVRD", source="mobizon", event_id="7"),
    ) == [("ACCEPTD", True, None), ("ACCEPTD", True, None), ("NEW", False, "duplicate")]
    assert [(e.source, e.event_id, e.message_id) for e in ledger.sender_events] == [
        ("mobizon", "7", "a"),
        ("generic", "7", "b"),
    ]
    assert ledger.created == {"a", "b"}


# -- sender sequences ------------------------------------------------------------------------------


def test_a_sequence_below_the_last_is_stale_and_the_same_one_a_duplicate() -> None:
    """Plivo's Sequence: older callbacks are stale (kept in the history), a resent one a duplicate (not
    kept), whatever their statuses say; a higher number applies."""
    ledger = Ledger({"m": stored("m", "ACCEPTD")}, DAY, last_sequences={("m", "plivo"): 5})
    assert answers(
        ledger,
        report(status="DELIVRD", source="plivo", sequence=4),
        report(status="DELIVRD", source="plivo", sequence=5),
        report(status="DELIVRD", source="plivo", sequence=6),
        report(status="UNDELIV", source="plivo", sequence=6),
    ) == [
        ("ACCEPTD", False, "stale"),
        ("ACCEPTD", False, "duplicate"),
        ("DELIVRD", True, None),
        ("DELIVRD", False, "duplicate"),
    ]
    assert [(h.sequence, h.reason) for h in ledger.history] == [(4, Reason.STALE), (6, None)]


def test_sequences_are_per_sender() -> None:
    """Another sender's numbering says nothing about this one's."""
    ledger = Ledger({"m": stored("m", "ACCEPTD")}, DAY, last_sequences={("m", "plivo"): 5})
    assert answers(ledger, report(status="DELIVRD", source="other", sequence=1)) == [("DELIVRD", True, None)]


# -- creation, impossible shapes -------------------------------------------------------------------


def test_the_report_creating_a_message_applies_even_when_it_says_new() -> None:
    """A first report saying NEW is news, not a duplicate of the state a new message starts in; a second
    NEW is a duplicate."""
    ledger = Ledger({}, DAY)
    assert answers(ledger, report(status="NEW"), report(status="NEW")) == [
        ("NEW", True, None),
        ("NEW", False, "duplicate"),
    ]
    [event] = ledger.events
    assert (event.previous_status, event.status, event.version, event.source) == (None, Status.NEW, 1, "generic")
    assert len(ledger.history) == 1


def test_a_created_message_starts_at_the_event_time_with_the_report_metadata() -> None:
    """sent_at is the first report's event time (else its arrival); the deadline is a lifetime later."""
    event_time = T0 - timedelta(minutes=3)
    ledger = Ledger({}, DAY)
    ledger.apply_report(report(status="ACCEPTD", event_time=event_time, recipient="380", campaign="c"))
    record = ledger.records["m"]
    assert (record.sent_at, record.expires_at) == (event_time, event_time + timedelta(days=1))
    assert (record.recipient, record.campaign, record.created_at, record.version) == ("380", "c", T0, 1)


def test_a_report_the_engine_finds_impossible_is_kept_as_stale() -> None:
    """A segment past the count a registration fixed for a final message, or any shape the engine refuses
    after the dialect's checks, is stale and recorded: it never fails its batch."""
    ledger = Ledger({"m": stored("m", "ACCEPTD", segments=2)}, DAY)
    assert answers(ledger, report(status="DELIVRD", segment=3, segments=2)) == [("ACCEPTD", False, "stale")]
    assert [h.reason for h in ledger.history] == [Reason.STALE]
    assert ledger.events == []


def test_a_report_creating_a_message_is_a_change_even_when_not_applied() -> None:
    """An unmapped status (or an impossible shape) is not applied, but the message it names exists from then
    on: one change event, version 1, status NEW, and the report kept in the history."""
    ledger = Ledger({}, DAY)
    decision = ledger.apply_report(report(status=None, raw_status="UNKNOWN"))
    assert (decision.applied, decision.reason) == (False, Reason.UNMAPPED)
    [event] = ledger.events
    assert (event.previous_status, event.status, event.version) == (None, Status.NEW, 1)
    assert decision.change == event
    assert ledger.created == {"m"}
    assert [h.reason for h in ledger.history] == [Reason.UNMAPPED]


def test_zero_error_codes_are_no_error() -> None:
    """`0`, `000` (sent with DELIVRD) are no error; the message keeps a real code it was given."""
    assert [no_error(c) for c in (None, "0", "000", " 0 ", "", "012", "E1")] == [None] * 5 + ["012", "E1"]
    ledger = Ledger({}, DAY)
    ledger.apply_report(report(status="ACCEPTD", error="034"))
    ledger.apply_report(report(status="DELIVRD", error="000"))
    assert ledger.records["m"].error == "034"
    assert ledger.history[-1].error == "000"  # the history keeps what the sender said


# -- change events ---------------------------------------------------------------------------------


def test_every_applied_report_is_one_change_event_with_the_message_after_it() -> None:
    """Applied reports (and only they) yield events; versions rise by one each; the event carries the
    message as it is after the change, the status before it and the segments that moved."""
    ledger = Ledger({"m": stored("m", "ACCEPTD", segments=2)}, DAY)
    ledger.apply_report(report(status="DELIVRD", segment=1, at=T0 + timedelta(seconds=1)))
    ledger.apply_report(report(status="ENQUEUD", at=T0 + timedelta(seconds=2)))  # stale: no event
    ledger.apply_report(report(status="DELIVRD", segment=2, at=T0 + timedelta(seconds=3)))
    first, second = ledger.events
    assert (first.previous_status, first.status, first.version) == (Status.ACCEPTD, Status.PDLIVRD, 2)
    assert first.segment_changes == ((1, Status.ACCEPTD, Status.DELIVRD),)
    assert (second.previous_status, second.status, second.version) == (Status.PDLIVRD, Status.DELIVRD, 3)
    assert second.message == ledger.records["m"]
    assert second.message.final_at == T0 + timedelta(seconds=3)
    assert ledger.changed == {"m"}


def test_delivery_time_runs_from_sending_to_the_senders_event_time() -> None:
    """The operator's time of the DELIVRD when the sender gives one, else its arrival; never negative."""
    sent = stored("m", "ACCEPTD")
    ledger = Ledger({"m": sent}, DAY)
    d = ledger.apply_report(report(status="DELIVRD", event_time=T0 + timedelta(seconds=10), at=T0 + timedelta(hours=3)))
    assert d.delivery_seconds == 10.0
    ledger = Ledger({"m": sent}, DAY)
    assert ledger.apply_report(report(status="DELIVRD", at=T0 + timedelta(seconds=42))).delivery_seconds == 42.0
    ledger = Ledger({"m": sent}, DAY)
    early = report(status="DELIVRD", event_time=T0 - timedelta(seconds=5))
    assert ledger.apply_report(early).delivery_seconds == 0.0


# -- registrations ---------------------------------------------------------------------------------


def registration(message_id: str = "m", **fields: object) -> Registration:
    return Registration(message_id, T0 + timedelta(minutes=1), **fields)  # type: ignore[arg-type]


def test_registering_creates_once_per_batch() -> None:
    """The first registration of an id creates it (one change event, source registration); the same id
    again in the batch is an update, not a second creation."""
    ledger = Ledger({}, DAY)
    first = ledger.register(registration(segments=2, text="hello"))
    second = ledger.register(registration(campaign="spring"))
    assert (first.created, second.created) == (True, False)
    record = ledger.records["m"]
    assert (record.text, record.campaign, len(record.state.segments), record.version) == ("hello", "spring", 2, 1)
    [event] = ledger.events
    assert (event.source, event.previous_status, event.status) == (REGISTRATION, None, Status.NEW)


def test_registering_an_open_message_updates_its_metadata_and_deadline_never_its_status() -> None:
    sent_at = T0 - timedelta(hours=1)
    ledger = Ledger({"m": stored("m", "ACCEPTD", campaign="old", recipient="1")}, DAY)
    decision = ledger.register(registration(campaign="new", sent_at=sent_at, segments=3))
    record = ledger.records["m"]
    assert (decision.status, decision.created) == (Status.ACCEPTD, False)
    assert (record.campaign, record.recipient, record.sent_at) == ("new", "1", sent_at)
    assert record.expires_at == sent_at + timedelta(days=1)
    assert record.state.segments == (Status.ACCEPTD, Status.NEW, Status.NEW)
    assert ledger.events == []  # metadata is not a status change


def test_registering_a_final_message_only_fills_in_what_is_empty() -> None:
    """A finished message is not rewritten after the fact: what it was sent as, to whom and when stays;
    what was never known (a campaign the reports did not carry) is filled in."""
    done = stored("m", "DELIVRD", recipient="380", final_at=T0)
    ledger = Ledger({"m": done}, DAY)
    ledger.register(registration(recipient="999", campaign="spring", sent_at=T0 - timedelta(days=2), segments=4))
    record = ledger.records["m"]
    assert (record.recipient, record.campaign, record.sent_at, len(record.state.segments)) == ("380", "spring", T0, 1)


# -- expiry ----------------------------------------------------------------------------------------


def test_expiry_is_a_change_event_with_a_history_row() -> None:
    """The sweep resolves through engine.expire: one event (source sweep, version up by one), one history
    row, segments still open stamped with the sweep's time; no delivery time, even when it says DELIVRD."""
    record = stored("m", "ACCEPTD", segments=2)
    record = record._replace(state=replace(record.state, segments=(Status.DELIVRD, Status.ACCEPTD)))
    record = record._replace(state=replace(record.state, status=Status.PDLIVRD))
    now = T0 + timedelta(days=2)
    ledger = Ledger({"m": record}, 0)
    event = ledger.expire("m", now)
    assert isinstance(event, ChangeEvent)
    assert (event.source, event.previous_status, event.status, event.version) == (
        SWEEP,
        Status.PDLIVRD,
        Status.DELIVRD,
        2,
    )
    assert event.segment_changes == ((2, Status.ACCEPTD, Status.EXPIRED),)
    assert event.message.segment_updated_at == (T0, now)
    assert (event.message.final_at, event.message.delivery_seconds) == (now, None)
    assert [(h.source, h.status, h.applied) for h in ledger.history] == [(SWEEP, Status.DELIVRD, True)]
    assert Ledger({"m": stored("m", "UNDELIV")}, 0).expire("m", now) is None


@pytest.mark.parametrize(
    ("stored_ids", "sent", "expected"),
    [
        (["12345678"], "0000000012345678", "12345678"),
        (["0012345678"], "12345678", "0012345678"),
        (["12345678", "0012345678"], "12345678", "12345678"),  # the id as sent wins
        (["0012345678", "012345678"], "12345678", "0012345678"),  # else the first stored, ordered
        ([], "007", "007"),
    ],
)
def test_zero_padded_ids_match_the_stored_message(stored_ids: list[str], sent: str, expected: str) -> None:
    [r] = match_zero_padded([report(sent, match_zero_padded=True)], stored_ids)
    assert r.message_id == expected
    [exact] = match_zero_padded([report(sent)], stored_ids)
    assert exact.message_id == sent


# -- against a naive model -------------------------------------------------------------------------

STATUSES = [None, *(s.value for s in Status)]
reports = st.builds(
    lambda mid, status, segment, source, event, seq: report(
        mid,
        status,
        segment=None if status == "PDLIVRD" else segment,
        source=source,
        event_id=event,
        sequence=seq,
    ),
    st.sampled_from(["a", "b"]),
    st.sampled_from(STATUSES),
    st.sampled_from([None, 1, 2]),
    st.sampled_from(["generic", "plivo"]),
    st.sampled_from([None, None, "e1", "e2"]),
    st.sampled_from([None, None, 1, 2, 3]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(reports, max_size=12))
def test_the_ledger_agrees_with_a_naive_model(batch: list[IncomingReport]) -> None:
    """Event ids per sender first, then sequences per message and sender, then creation and the engine:
    the ledger's answers match a model written out plainly, every applied report is one event, versions
    rise by exactly one per event, and only non-duplicates are recorded."""
    ledger = Ledger({}, DAY)
    seen: set[tuple[str, str]] = set()
    last: dict[tuple[str, str], int] = {}
    states: dict[str, object] = {}
    versions: dict[str, int] = {}
    recorded = 0
    for r in batch:
        got = ledger.apply_report(r)
        created = False
        before = states[r.message_id].status if r.message_id in states else Status.NEW  # type: ignore[attr-defined]
        if r.event_id is not None and (r.source, r.event_id) in seen:
            want: tuple[Status, bool, Reason | None] = (before, False, Reason.DUPLICATE)
        elif r.sequence is not None and last.get((r.message_id, r.source), 0) >= r.sequence:
            seen |= {(r.source, r.event_id)} if r.event_id else set()
            dup = last[(r.message_id, r.source)] == r.sequence
            want = (before, False, Reason.DUPLICATE if dup else Reason.STALE)
        else:
            if r.event_id is not None:
                seen.add((r.source, r.event_id))
            if r.sequence is not None:
                last[(r.message_id, r.source)] = r.sequence
            creating = created = r.message_id not in states
            state = states.get(r.message_id) or new_message(1)
            try:
                outcome = apply_report(state, r.report)  # type: ignore[arg-type]
                applied, reason, after = outcome.applied, outcome.reason, outcome.state
            except ValueError:
                applied, reason, after = False, Reason.STALE, state
            if creating and reason is Reason.DUPLICATE:
                applied, reason = True, None
            states[r.message_id] = after
            want = (after.status, applied, reason)  # type: ignore[attr-defined]
            if applied or creating:
                versions[r.message_id] = versions.get(r.message_id, 0) + 1
        assert (got.status, got.applied, got.reason) == want
        assert (got.change is not None) == (got.applied or created)
        recorded += want[2] is not Reason.DUPLICATE
        if got.change is not None:
            assert got.change.version == versions[r.message_id]
    assert len(ledger.events) == sum(versions.values())
    assert len(ledger.history) == recorded
