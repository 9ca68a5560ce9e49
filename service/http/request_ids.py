"""Request ids: the caller's `X-Request-ID` when it is sane, else one made here.

A made id is 32 hex digits, like a random UUID's: a random prefix per process (drawn again in a forked
child) and a counter. Unique without a system call per request: `os.urandom` for every one cost more than
the rest of the id handling on the ingest path.
"""

from __future__ import annotations

import itertools
import os
import re

_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class _Ids:
    def __init__(self) -> None:
        self.renew()

    def renew(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"


_ids = _Ids()
os.register_at_fork(after_in_child=_ids.renew)


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The first `X-Request-ID` of the raw ASGI headers if it is sane, else a new id."""
    for name, value in headers:
        if name == b"x-request-id":
            given = value.decode("latin-1")
            if _SANE.match(given):
                return given
            break
    return _ids.next()
