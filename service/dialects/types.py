"""What a dialect is, and what its parser returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from service.errors import RefusedPayload
from service.payloads import RequestParts
from service.reports import IncomingReport


@dataclass(frozen=True, slots=True)
class ItemError:
    """One report that failed validation, with what to keep in the quarantine to replay it."""

    index: int
    kind: type[RefusedPayload]  # BadPayload, or MissingFields when a required field is missing
    errors: dict[str, str]
    parts: RequestParts
    message_id: str | None = None

    @property
    def code(self) -> int:
        """The envelope code a batch answer gives this item."""
        return self.kind.code

    def refusal(self) -> RefusedPayload:
        return self.kind(self.errors)


@dataclass(frozen=True, slots=True)
class Parsed:
    items: list[IncomingReport | ItemError]
    batch: bool  # the sender sent a list: answer with per-item results (codes 0/98/99)


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """How a sender wants a report answered: the `{code, data, message}` envelope (`body` None), or a fixed
    200 body of its own. `refused_too`: a payload refused (and quarantined) is acknowledged as well, for a
    sender that resends whatever it is not acknowledged for; answers that nothing was stored (503) stay."""

    description: str  # for /openapi.json
    body: bytes | None = None
    media_type: str | None = None
    refused_too: bool = False


ENVELOPE = Acknowledgement("code 0")
EMPTY = Acknowledgement("an empty answer", body=b"")

# Where a sender puts its fields: a form body, a JSON body, a plain-text body, or a GET's query string.
Transport = Literal["form", "json", "text", "query"]
# (transport, max_batch) -> the JSON Schema of what the parser takes that way, or None: the sender never
# sends that way (the service refuses a GET for it with 405; the OpenAPI document leaves the rest out).
Description = Callable[[Transport, int], dict[str, Any] | None]


@dataclass(frozen=True, slots=True)
class Dialect:
    """One sender's format: a pure parser, what it takes (for /openapi.json), how to answer it, and its
    own signature scheme if it has one."""

    name: str
    parse: Callable[[RequestParts, datetime, int], Parsed]
    describe: Description
    ack: Acknowledgement = ENVELOPE
    # (parts, secret) -> whether the sender's own signature holds; checked when
    # DLR_WEBHOOK_SECRET_<NAME> is set. Dialects without one get Standard Webhooks signatures instead.
    verify: Callable[[RequestParts, str], bool] | None = None  # (parts with .url set, secret)

    @property
    def takes_get(self) -> bool:
        return self.describe("query", 1) is not None
