"""How stored rows are shown in answers."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from service.ledger import MessageRecord
from service.store.events import FeedEvent


def message(record: MessageRecord) -> dict[str, Any]:
    """A message as `GET /messages/{id}` shows it (and every listing, and the event feed)."""
    state = record.state
    return {
        "id": record.id,
        "status": state.status,
        "final": state.final,
        "to": record.recipient,
        "campaign": record.campaign,
        "segments_total": len(state.segments),
        "segments": [
            {"segment": n, "status": s, "updated_at": t}
            for n, (s, t) in enumerate(zip(state.segments, record.segment_updated_at, strict=True), 1)
        ],
        "sent_at": record.sent_at,
        "updated_at": record.updated_at,
        "expires_at": record.expires_at,
        "final_at": record.final_at,
        "error": record.error,
        "text": record.text,
        "version": record.version,
    }


def event(e: FeedEvent) -> dict[str, Any]:
    """A change as the event feed serves it: the message as it was after the change, with the status before
    it, its source and the message's version; the event's id is also a cursor to resume after it."""
    data = message(e.message)
    data["previous_status"] = e.previous_status
    data["source"] = e.source
    return {"id": str(e.cursor), "type": "message.status_changed", "timestamp": e.at, "data": data}


def history_event(record: asyncpg.Record) -> dict[str, Any]:
    return {
        "status": record["status"],
        "raw_status": record["raw_status"],
        "segment": record["segment"],
        "event_time": record["event_time"],
        "received_at": record["received_at"],
        "source": record["source"],
        "applied": record["applied"],
        "reason": record["reason"],
        "error": record["error"],
        "event_id": record["event_id"],
        "sequence": record["sequence"],
    }


def quarantined(record: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": record["id"],
        "dialect": record["dialect"],
        "received_at": record["received_at"],
        "method": record["method"],
        "content_type": record["content_type"],
        "query": bytes(record["query"]).decode("utf-8", errors="replace"),
        # As received, shown as text; bytes that are not UTF-8 show as U+FFFD (the row keeps them exactly).
        "body": bytes(record["body"]).decode("utf-8", errors="replace"),
        # asyncpg hands jsonb over as its text: show the field -> reason map the sender was answered with.
        "error": json.loads(record["error"]),
    }


def task(record: asyncpg.Record) -> dict[str, Any]:
    """A background task as `GET /tasks/{id}` shows it (asyncpg hands jsonb over as its text)."""
    return {
        "id": record["id"],
        "kind": record["kind"],
        "state": record["state"],
        "progress": {"done": record["done"], "total": record["total"]},
        "result": None if record["result"] is None else json.loads(record["result"]),
        "error": record["error"],
        "created_at": record["created_at"],
        "started_at": record["started_at"],
        "finished_at": record["finished_at"],
    }
