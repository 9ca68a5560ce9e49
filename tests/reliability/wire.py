"""Exact-bytes requests through the running ASGI app, and what they left in the database.

`send` hands the app the very bytes given -- raw NUL and 0xFF, `%zz`, a lying or duplicated
Content-Length or Content-Type, a body in several chunks -- as a server would pass them on, because the
test client would encode or refuse them first (the technique of tests/test_hostile.py's `raw_request`).
Unlike that helper it returns answers that are not JSON (Jasmin's `ACK/Jasmin`, Twilio's empty 200) and
an exception that escaped the app (which then answered 500) instead of raising.

`Rows` counts messages, history rows and quarantined payloads over one connection of its own, on the
app's event loop: the fuzz tests compare the counts before and after every request.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import quote

import asyncpg
from starlette.testclient import TestClient

# DESIGN §2: the HTTP status each envelope code travels with.
HTTP_FOR_CODE: dict[int, set[int]] = {
    0: {200},
    1: {400},
    2: {404},
    3: {500},
    4: {404},
    5: {405},
    6: {415},
    8: {401},
    9: {403},
    10: {503},
    11: {400},
    12: {400, 413},
    14: {403},
    15: {409},
    30: {429},
    98: {207},
    99: {400},
    100: {202},
    999: {503},
}


@dataclass(frozen=True)
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    escaped: BaseException | None = None  # an exception that escaped the app

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def content_type(self) -> str:
        return (self.header(b"content-type") or b"").decode("latin-1")

    @property
    def is_json(self) -> bool:
        return self.content_type.startswith("application/json")

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> int | None:
        return int(self.json["code"]) if self.is_json else None


def path_of(*segments: str) -> tuple[str, bytes]:
    """`scope["path"]` and `raw_path` for a path made of these segments, each percent-encoded as a client would."""
    path = "/" + "/".join(segments)
    raw = "/" + "/".join(quote(s, safe="") for s in segments)
    return path, raw.encode("ascii")


def send(
    client: TestClient,
    method: str,
    path: str,
    *,
    query: bytes = b"",
    body: bytes = b"",
    headers: Iterable[tuple[bytes, bytes]] = (),
    raw_path: bytes | None = None,
    chunks: int = 1,
    content_length: bool = True,
) -> Reply:
    """One request through the running app (inside `with TestClient(app)`) with exactly these bytes."""
    raw_headers = [(b"host", b"testserver"), *headers]
    if content_length and not any(name.lower() == b"content-length" for name, _ in raw_headers):
        raw_headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": raw_path if raw_path is not None else quote(path, safe="/").encode("ascii"),
        "root_path": "",
        "query_string": query,
        "headers": raw_headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    size = max(1, -(-len(body) // max(1, chunks)))
    pieces = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    sent: list[dict[str, Any]] = []
    escaped: list[BaseException] = []

    async def run() -> None:
        queue = list(pieces)

        async def receive() -> dict[str, Any]:
            if not queue:
                return {"type": "http.disconnect"}
            piece = queue.pop(0)
            return {"type": "http.request", "body": piece, "more_body": bool(queue)}

        async def respond(message: dict[str, Any]) -> None:
            sent.append(message)

        try:
            await client.app(scope, receive, respond)
        except Exception as exc:  # Starlette answers 500 and re-raises: keep it for the report
            escaped.append(exc)

    assert client.portal is not None, "send() needs the client's lifespan running (use it inside `with`)"
    client.portal.call(run)
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    if start is None:
        return Reply(500, [], b"", escaped[0] if escaped else RuntimeError("no response started"))
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Reply(start["status"], list(start.get("headers", [])), payload, escaped[0] if escaped else None)


def check_answer(reply: Reply, *, plain: Iterable[bytes] = ()) -> Any:
    """The rules every answer keeps: no 5xx but 503, nothing escaped, and JSON only as the envelope with the
    HTTP status of its code. A non-JSON answer must be one of `plain` (with HTTP 200). Returns the envelope."""
    assert reply.escaped is None, f"{reply.status}: {reply.escaped!r}"
    assert reply.status < 500 or reply.status == 503, (reply.status, reply.body[:300])
    if not reply.is_json:
        assert reply.status == 200, (reply.status, reply.content_type, reply.body[:300])
        assert reply.body in set(plain), (reply.content_type, reply.body[:300])
        return None
    envelope = reply.json
    assert isinstance(envelope, dict), envelope
    assert set(envelope) == {"code", "data", "message"}, envelope
    assert type(envelope["code"]) is int, envelope
    assert isinstance(envelope["message"], str), envelope
    assert reply.status in HTTP_FOR_CODE.get(envelope["code"], set()), (reply.status, envelope)
    if reply.status == 503:
        assert reply.header(b"retry-after"), "a 503 carries Retry-After"
    return envelope


class Counts(NamedTuple):
    messages: int
    history: int
    quarantine: int


class Rows:
    """Reads the database over one connection of its own, on the app's event loop."""

    def __init__(self, client: TestClient, dsn: str) -> None:
        assert client.portal is not None
        self.portal = client.portal
        self.conn: asyncpg.Connection = self.portal.call(asyncpg.connect, dsn)

    def counts(self) -> Counts:
        async def read() -> Counts:
            row = await self.conn.fetchrow(
                "SELECT (SELECT count(*) FROM messages) AS m, (SELECT count(*) FROM history) AS h,"
                " (SELECT count(*) FROM quarantine) AS q"
            )
            assert row is not None
            return Counts(row["m"], row["h"], row["q"])

        return self.portal.call(read)

    def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async def read() -> list[asyncpg.Record]:
            return list(await self.conn.fetch(sql, *args))

        return self.portal.call(read)

    def close(self) -> None:
        self.portal.call(self.conn.close)


@contextmanager
def rows_of(client: TestClient, dsn: str) -> Iterator[Rows]:
    rows = Rows(client, dsn)
    try:
        yield rows
    finally:
        rows.close()
