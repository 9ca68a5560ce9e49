"""Realistic delivery-report traffic for the order-and-duplication test, and a naive model of its outcome.

A :class:`Plan` says what the operators will eventually report for one message. :func:`reports_for` turns it
into the reports senders send (generic per-segment reports, message-level ENQUEUD and PDLIVRD, Mobizon
webhook events with event ids), and :func:`expected` says, without the service's engine, where the message
must end. The plans are built so that the end state does not depend on the order in which reports (and
the expiry sweep) arrive; the test then checks the service reaches it whatever the order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

FINAL = ("DELIVRD", "UNDELIV", "REJECTD", "EXPIRED", "DELETED")
# What operators actually send back, roughly: most parts arrive, a few fail one way or another.
FINAL_WEIGHTS = (80, 8, 5, 4, 3)

# When a message is overdue: never, from its registration on (the sweep races its reports), or only once
# all its reports are in (it is re-registered with an old sending time, then swept).
ON_TIME, OVERDUE_AT_ONCE, OVERDUE_LATER = "on_time", "overdue_at_once", "overdue_later"


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    dialect: str  # "generic" (per-segment reports) or "mobizon" (message-level events with event ids)
    segments: int
    finals: tuple[str | None, ...]  # each segment's final status; None: it never gets one
    enqueued: bool  # a message-level ENQUEUD (generic)
    partial: bool  # a message-level PDLIVRD (generic)
    overdue: str
    campaign: str


@dataclass(frozen=True, slots=True)
class Report:
    message_id: str
    dialect: str
    fields: dict[str, Any]  # generic: the report's fields; mobizon: the webhook event without `attempt`
    event_id: str | None = None
    # The final status a segment (or, message-level, the whole message) must end with; None for others.
    settles: tuple[int | None, str] | None = None


def make_plans(count: int, rng: random.Random) -> list[Plan]:
    plans = []
    for n in range(count):
        segments = rng.choices((1, 2, 3), weights=(50, 30, 20))[0]
        dialect = "mobizon" if rng.random() < 0.2 else "generic"
        overdue = OVERDUE_AT_ONCE if rng.random() < 0.05 else ON_TIME

        def final() -> str | None:
            return rng.choices(FINAL, weights=FINAL_WEIGHTS)[0] if rng.random() < 0.9 else None

        if overdue == OVERDUE_AT_ONCE:
            # Only non-final reports: whether they arrive before or after the sweep, EXPIRED is the end.
            finals: tuple[str | None, ...] = (None,) * segments
        elif dialect == "mobizon":
            finals = (final(),) * segments  # Mobizon reports the whole message
        else:
            finals = tuple(final() for _ in range(segments))
        generic = dialect == "generic"
        partial = generic and overdue == ON_TIME and segments > 1 and rng.random() < 0.25
        if partial and rng.random() < 0.3:
            finals = (None,) * segments  # the operator says "partly delivered" and names no part
        plan = Plan(
            id=f"sc-{n:05d}",
            dialect=dialect,
            segments=segments,
            finals=finals,
            enqueued=generic and rng.random() < 0.2,
            partial=partial,
            overdue=overdue,
            campaign=f"scale-{n % 7}",
        )
        if overdue == ON_TIME and None in finals and rng.random() < 0.5:
            plan = Plan(**{**_fields(plan), "overdue": OVERDUE_LATER})
        plans.append(plan)
    return plans


def _fields(plan: Plan) -> dict[str, Any]:
    return {name: getattr(plan, name) for name in Plan.__slots__}


def reports_for(plan: Plan, now: datetime, next_event: list[int]) -> list[Report]:
    """Every distinct report the senders make for this message (each is sent 1-3 times later)."""
    at = (now - timedelta(seconds=30)).isoformat()
    reports = []
    if plan.dialect == "mobizon":
        statuses = ["ACCEPTD"] + ([plan.finals[0]] if plan.finals[0] else [])
        for status in statuses:
            next_event[0] += 1
            event_id = str(next_event[0])
            created = now.strftime("%Y-%m-%d %H:%M:%S")
            event = {
                "eventId": int(event_id),
                "eventType": "sms-delivery-report",
                "eventCreateTs": created,
                "webhookId": 7,
                "data": {
                    "campaignId": plan.campaign,
                    "messageId": plan.id,
                    "segNum": plan.segments,
                    "statusUpdateTs": created,
                    "status": status,
                    "to": "380737893456",
                },
            }
            settles = (None, status) if status != "ACCEPTD" else None
            reports.append(Report(plan.id, "mobizon", event, event_id, settles))
        return reports
    base = {"id": plan.id, "segments": str(plan.segments)}
    for segment, final in enumerate(plan.finals, 1):
        reports.append(Report(plan.id, "generic", {**base, "status": "ACCEPTD", "segment": str(segment), "time": at}))
        if final:
            fields = {**base, "status": final, "segment": str(segment), "time": now.isoformat()}
            reports.append(Report(plan.id, "generic", fields, settles=(segment, final)))
    if plan.enqueued:
        reports.append(Report(plan.id, "generic", {**base, "status": "ENQUEUD", "time": at}))
    if plan.partial:
        reports.append(Report(plan.id, "generic", {**base, "status": "PDLIVRD", "time": now.isoformat()}))
    return reports


def registration(plan: Plan, sent_at: datetime) -> dict[str, Any]:
    return {
        "id": plan.id,
        "to": "380737893456",
        "campaign": plan.campaign,
        "segments": plan.segments,
        "sent_at": sent_at.astimezone(UTC).isoformat(),
    }


def before_sweep(plan: Plan) -> tuple[str, tuple[str, ...]]:
    """The message status and segment statuses once every report is in, by the product rules, naively.

    Every segment was reported ACCEPTD, so an open segment stands at ACCEPTD (a message-level ENQUEUD can
    only ever be overtaken). All segments final: DELIVRD if all are, else segment 1's status. Otherwise
    PDLIVRD if a segment is DELIVRD or PDLIVRD was reported, else ACCEPTD (the highest open status; a final
    segment counts as sent).
    """
    segments = tuple(final or "ACCEPTD" for final in plan.finals)
    if all(s in FINAL for s in segments):
        return ("DELIVRD" if set(segments) == {"DELIVRD"} else segments[0]), segments
    if plan.partial or "DELIVRD" in segments:
        return "PDLIVRD", segments
    return "ACCEPTD", segments


def expected(plan: Plan) -> tuple[str, tuple[str, ...]]:
    """Where the message must end, the expiry sweep included."""
    if plan.overdue == OVERDUE_AT_ONCE:
        return "EXPIRED", ("EXPIRED",) * plan.segments
    status, segments = before_sweep(plan)
    if plan.overdue == ON_TIME or status in FINAL:
        return status, segments
    # The sweep: PDLIVRD takes the first operator-reported final segment (DELIVRD without one), anything
    # else becomes EXPIRED; open segments become EXPIRED.
    resolved = next((s for s in segments if s in FINAL), "DELIVRD") if status == "PDLIVRD" else "EXPIRED"
    return resolved, tuple(s if s in FINAL else "EXPIRED" for s in segments)


def swept(plan: Plan) -> bool:
    """Whether the expiry sweep must resolve this message (exactly once)."""
    return plan.overdue == OVERDUE_AT_ONCE or (plan.overdue == OVERDUE_LATER and before_sweep(plan)[0] not in FINAL)
