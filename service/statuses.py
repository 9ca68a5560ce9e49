"""The nine statuses of the SMS platform, their order and finality.

Data only: every other vocabulary (Kannel types, SMPP `stat:` values, Twilio words, ...) is mapped onto
these at the edge, in its dialect.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    NEW = "NEW"
    ENQUEUD = "ENQUEUD"
    ACCEPTD = "ACCEPTD"
    PDLIVRD = "PDLIVRD"
    DELIVRD = "DELIVRD"
    UNDELIV = "UNDELIV"
    REJECTD = "REJECTD"
    EXPIRED = "EXPIRED"
    DELETED = "DELETED"


FINAL: frozenset[Status] = frozenset({Status.DELIVRD, Status.UNDELIV, Status.REJECTD, Status.EXPIRED, Status.DELETED})

# Non-final statuses only ever move up this ladder. Finals are absorbing and are not ranked
# against each other: the first final a segment receives is the one it keeps.
RANK: dict[Status, int] = {
    Status.NEW: 0,
    Status.ENQUEUD: 1,
    Status.ACCEPTD: 2,
    Status.PDLIVRD: 3,
}

# PDLIVRD describes a message whose parts disagree; a single segment can never be "partly" delivered.
SEGMENT_STATUSES: frozenset[Status] = frozenset(Status) - {Status.PDLIVRD}


def is_final(status: Status) -> bool:
    return status in FINAL
