"""SMPP delivery-receipt text, read the way SMSCs actually write it.

`id:IIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD err:E Text:...` is
SMPP 3.4 Appendix B, "vendor-specific in principle", and the wild agrees: labels go missing (`sub:`,
`dlvrd:`, even `stat:`), ids come hex or decimal with leading zeros, dates have 10, 12 or 14 digits,
`err:` has 3 or 4, `Text:` is `text:`, and binary garbage (TLVs, C-string NULs) trails the text. Every
field is therefore searched for on its own, and only a receipt without an id or a state is unreadable.

Pure: shared by the `smpp` dialect (a receipt as the whole payload) and `kannel` (a receipt in `%A`),
and its dates by `jasmin`; `take_parameter` reads a receipt out of a URL parameter without choking on
the binary its text may echo. Not a dialect itself (no DIALECT).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_to_bytes

from service import fields
from service.statuses import Status

# `stat:` values onto the nine statuses (reference §7). The SMPP 3.4 seven, the non-standard spellings
# Kannel also reads as "buffered" (ACKED, BUFFRED, BUFFERD, ENROUTE), and the message_state names some
# SMSCs write out in full. None: the state says nothing about delivery (UNKNOWN, SKIPPED) -- kept in the
# history, no transition.
STAT_STATUS: dict[str, Status | None] = {
    "DELIVRD": Status.DELIVRD,
    "EXPIRED": Status.EXPIRED,
    "DELETED": Status.DELETED,
    "UNDELIV": Status.UNDELIV,
    "REJECTD": Status.REJECTD,
    # SMPP 3.4's ACCEPTD is "read by customer service", but SMSCs use it for "accepted, in progress".
    "ACCEPTD": Status.ACCEPTD,
    "ENROUTE": Status.ACCEPTD,
    "ACKED": Status.ACCEPTD,
    "BUFFRED": Status.ACCEPTD,
    "BUFFERD": Status.ACCEPTD,
    "UNKNOWN": None,
    # message_state names (SMPP 3.4 §5.2.28, 5.0 SCHEDULED/SKIPPED) written as words.
    "SCHEDULED": Status.ACCEPTD,
    "ACCEPTED": Status.ACCEPTD,
    "DELIVERED": Status.DELIVRD,
    "UNDELIVERABLE": Status.UNDELIV,
    "REJECTED": Status.REJECTD,
    "SKIPPED": None,
}

# Everything after the text label is the start of the original message: it may say "stat:" itself.
_TEXT_LABEL = re.compile(r"(?:^|\s)text:", re.IGNORECASE)
# A value runs to the next space or control character (NUL included: C strings end there) and is taken
# whole, never stopped at the first character it should not hold: `id:abc\u00e9` must not read as `abc`,
# a message that exists. Whether the whole value is acceptable is the caller's decision (`receipt_id`,
# `receipt_word`).
_VALUE = r"([^\s\x00-\x1f\x7f]+)"
# Labels are matched at a word start so that `dlvrd:` never reads as `id:` of something else.
_FIELDS: dict[str, re.Pattern[str]] = {
    "id": re.compile(rf"(?:^|[^A-Za-z0-9_])id:\s*{_VALUE}", re.IGNORECASE),
    "sub": re.compile(rf"(?:^|[^A-Za-z0-9_])sub:\s*{_VALUE}", re.IGNORECASE),
    "dlvrd": re.compile(rf"(?:^|[^A-Za-z0-9_])dlvrd:\s*{_VALUE}", re.IGNORECASE),
    "submit date": re.compile(rf"submit[ _]?date:\s*{_VALUE}", re.IGNORECASE),
    "done date": re.compile(rf"done[ _]?date:\s*{_VALUE}", re.IGNORECASE),
    "stat": re.compile(rf"(?:^|[^A-Za-z0-9_])stat:\s*{_VALUE}", re.IGNORECASE),
    "err": re.compile(rf"(?:^|[^A-Za-z0-9_])err:\s*{_VALUE}", re.IGNORECASE),
}
# A receipt without the `stat:` label (seen from ksmppd): a known state word standing alone.
_STAT_WORDS = "|".join(sorted(STAT_STATUS, key=len, reverse=True))
_BARE_STAT = re.compile(rf"(?:^|\s)({_STAT_WORDS})(?=\s|$)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Receipt:
    """The fields of one receipt as written (None where absent); interpretation is left to the caller."""

    id: str | None = None
    sub: str | None = None
    dlvrd: str | None = None
    submit_date: str | None = None
    done_date: str | None = None
    stat: str | None = None
    err: str | None = None
    text: str | None = None


def parse_receipt(raw: str) -> Receipt:
    """Read whatever fields a receipt has; never fails (a text with no fields gives an empty Receipt)."""
    cut = _TEXT_LABEL.search(raw)
    head, text = (raw[: cut.start()], raw[cut.end() :]) if cut else (raw, None)
    found = {name: m.group(1) for name, pattern in _FIELDS.items() if (m := pattern.search(head))}
    stat = found.get("stat")
    if stat is None and (bare := _BARE_STAT.search(head)):
        stat = bare.group(1)
    return Receipt(
        id=found.get("id"),
        sub=found.get("sub"),
        dlvrd=found.get("dlvrd"),
        submit_date=found.get("submit date"),
        done_date=found.get("done date"),
        stat=stat,
        err=found.get("err"),
        text=text,
    )


_ID = re.compile(r"[!-~]+")
_WORD = re.compile(r"[A-Za-z0-9_]+")


def receipt_id(value: Any) -> str | None:
    """A receipt's `id:` as a message id: printable ASCII (an SMPP message_id is), else refused whole.

    A refused id quarantines the receipt; cutting it at the first odd character would apply the status
    to another message (`abc\u00e9` read as `abc`).
    """
    if value is None:
        return None
    if not _ID.fullmatch(value):
        raise fields.FieldError("must be printable ASCII up to the next space (an SMPP message id)")
    return fields.message_id(value)


def receipt_word(value: Any) -> str | None:
    """A receipt's `stat:` or `err:`: letters, digits and `_`, else refused whole (`DELIVRD\u00e9` is no
    DELIVRD, and `err:000\u00e9` no 000)."""
    if value is None:
        return None
    if not _WORD.fullmatch(value):
        raise fields.FieldError("must be letters, digits or _ up to the next space")
    return fields.short(value)


def stat_status(stat: str) -> Status | None:
    """The status a `stat:` value means; None for UNKNOWN and for words no table knows (kept raw)."""
    # ASCII only before upper(): "delıvrd".upper() would be DELIVRD.
    if not stat.isascii():
        return None
    return STAT_STATUS.get(stat.strip().upper())


# Receipt dates by digit count. 12 digits are ambiguous (YYMMDDhhmmss from most SMSCs, YYYYMMDDhhmm
# from some): both readings are tried and the one nearer the arrival time wins.
_DATE_FORMATS: dict[int, tuple[str, ...]] = {
    10: ("%y%m%d%H%M",),
    12: ("%y%m%d%H%M%S", "%Y%m%d%H%M"),
    14: ("%Y%m%d%H%M%S",),
}


def receipt_time(digits: str | None, received_at: datetime) -> datetime | None:
    """A receipt date as an aware datetime, or None when it is absent or no date (`0000000000`, `ND`).

    SMSCs never say which zone their dates are in; they are read as UTC. An unreadable date is not an
    error: the date only informs, and the status it came with must not be lost over it.
    """
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    readings = []
    for pattern in _DATE_FORMATS.get(len(digits), ()):
        try:
            moment = datetime.strptime(digits, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
        if fields.MIN_TIME <= moment < fields.MAX_TIME:
            readings.append(moment)
    return min(readings, key=lambda moment: abs(moment - received_at), default=None)


def take_parameter(encoded: bytes, name: str) -> tuple[bytes, str | None]:
    """Take `name=...` out of a urlencoded string: the rest, and that value read leniently (None if absent).

    A receipt's `text:` echoes the first bytes of the original message as the SMSC holds them -- a
    concatenated part's UDH (`05 00 03 ...`, a NUL among them), UCS-2 -- and gateways pass them on
    percent-encoded (Kannel's `%A`). The strict form decoder rightly refuses NULs and bad UTF-8 anywhere
    else; here they would throw away a valid receipt over bytes nobody reads. So this one value is decoded
    with replacement characters, and the rest still goes through the strict decoder. The last occurrence
    wins, as in the form decoder.
    """
    rest, value = [], None
    prefix = name.encode() + b"="
    for pair in encoded.split(b"&"):
        if pair.startswith(prefix):
            value = pair[len(prefix) :]
        else:
            rest.append(pair)
    if value is None:
        return encoded, None
    text = unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8", errors="replace")
    return b"&".join(rest), text.replace("\x00", "\ufffd")
