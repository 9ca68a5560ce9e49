"""A subscriber for bench/subscriptions.py: answers every delivery 204 at once, and keeps per `webhook-id` the
seconds from the event's timestamp (when its report was received) to the delivery's arrival.

    uvicorn bench.webhook_sink:app --port 9000     # GET /stats[?since=&before=]: counts, latency percentiles
                                                   # (and events of that time arrived); POST /reset
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson

arrived: dict[str, float] = {}  # webhook-id -> seconds from the event to its first arrival
sent_at: dict[str, float] = {}  # webhook-id -> the event's timestamp (epoch seconds)
attempts = 0


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send: Any, status: int, body: bytes = b"") -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Any, receive: Any, send: Any) -> None:
    global attempts
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    body = await _body(receive)
    path, method = scope["path"], scope["method"]
    if method == "POST" and path == "/hook":
        now = time.time()
        attempts += 1
        webhook_id = next((v.decode() for k, v in scope["headers"] if k == b"webhook-id"), "")
        if webhook_id not in arrived:
            sent = datetime.fromisoformat(orjson.loads(body)["timestamp"]).timestamp()
            arrived[webhook_id] = max(0.0, now - sent)
            sent_at[webhook_id] = sent
        await _answer(send, 204)
    elif path == "/stats":
        latencies = list(arrived.values())
        stats = {
            "attempts": attempts,
            "unique": len(arrived),
            "p50": _percentile(latencies, 0.5),
            "p99": _percentile(latencies, 0.99),
            "max": max(latencies) if latencies else None,
        }
        # ?since=&before= (epoch seconds): how many distinct events of that time have arrived.
        query = dict(parse_qsl(scope["query_string"].decode()))
        if "since" in query and "before" in query:
            since, before = float(query["since"]), float(query["before"])
            stats["unique_between"] = sum(1 for t in sent_at.values() if since <= t < before)
        await _answer(send, 200, orjson.dumps(stats))
    elif path == "/reset" and method == "POST":
        arrived.clear()
        sent_at.clear()
        attempts = 0
        await _answer(send, 204)
    elif path == "/readyz":
        await _answer(send, 200, b"{}")
    else:
        await _answer(send, 404)
