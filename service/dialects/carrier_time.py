"""Carrier done dates: `YYMMDDhhmm` (Twilio's RawDlrDoneDate, Vonage's scts), the SMPP receipt style.

Not a dialect (no `DIALECT`): a reader shared by the dialects whose senders pass the operator's date on.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from service.fields import FieldError

# Ten digits, minute precision, as both senders document it. Twelve are refused, not guessed at: SMSCs
# use them for YYMMDDhhmmss and for YYYYMMDDhhmm alike. [0-9], not \d: other scripts' digits are no date.
_DONE_DATE = re.compile(r"[0-9]{10}")


def done_date(value: Any) -> datetime | None:
    """`YYMMDDhhmm` -> an aware datetime. The carriers send no zone: it is taken as UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise FieldError("must be a date as YYMMDDhhmm")
    text = str(value).strip()
    if not _DONE_DATE.fullmatch(text):
        raise FieldError(f"{text[:40]!r} is not a date as YYMMDDhhmm")
    year, month, day, hour, minute = (int(text[i : i + 2]) for i in range(0, 10, 2))
    try:
        return datetime(2000 + year, month, day, hour, minute, tzinfo=UTC)
    except ValueError:
        raise FieldError(f"{text!r} is not a valid date (YYMMDDhhmm)") from None
