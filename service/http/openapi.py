"""The OpenAPI 3.1 description served at `/openapi.json`, written out by hand from DESIGN §2."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from service import __version__
from service.statuses import Status

STATUS = {"type": "string", "enum": [s.value for s in Status]}
NULL_STR = {"type": ["string", "null"]}
NULL_TIME = {"type": ["string", "null"], "format": "date-time"}


def _envelope(data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["code", "data", "message"],
        "properties": {"code": {"type": "integer"}, "data": data or {}, "message": {"type": "string"}},
    }


def _answers(data: dict[str, Any], *errors: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "200": {"description": "code 0", "content": {"application/json": {"schema": _envelope(data)}}}
    }
    for status in errors:
        out[str(status)] = {
            "description": "an error in the envelope",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}},
        }
    return out


REPORT = {
    "type": "object",
    "required": ["id", "status"],
    "properties": {
        "id": {"type": ["string", "integer"]},
        "status": STATUS,
        "segment": {"type": ["integer", "string"]},
        "segments": {"type": ["integer", "string"]},
        "time": {"type": ["string", "number"], "description": "ISO-8601 or unix seconds"},
        "to": {"type": "string"},
        "campaign": {"type": "string"},
        "error": {"type": "string"},
    },
}
REGISTRATION = {
    "type": "object",
    "required": ["id"],
    "properties": {
        "id": {"type": ["string", "integer"]},
        "to": {"type": "string"},
        "campaign": {"type": "string"},
        "segments": {"type": "integer", "minimum": 1, "maximum": 255},
        "sent_at": {"type": ["string", "number"]},
        "text": {"type": "string"},
    },
}
MESSAGE = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "status": STATUS,
        "final": {"type": "boolean"},
        "to": NULL_STR,
        "campaign": NULL_STR,
        "segments_total": {"type": "integer"},
        "segments": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "segment": {"type": "integer"},
                    "status": STATUS,
                    "updated_at": {"type": "string", "format": "date-time"},
                },
            },
        },
        "sent_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "expires_at": {"type": "string", "format": "date-time"},
        "final_at": NULL_TIME,
        "error": NULL_STR,
    },
}
RESULT = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "status": STATUS,
        "applied": {"type": "boolean"},
        "reason": {"type": ["string", "null"], "enum": [None, "duplicate", "stale", "after_final", "unmapped"]},
    },
}


def _param(name: str, where: str = "query", required: bool = False, schema: Any = None) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema or {"type": "string"}}


def build() -> dict[str, Any]:
    ingest = {
        "parameters": [_param("dialect", "path", True)],
        "post": {
            "summary": "Receive delivery reports (form, JSON object or JSON array batch)",
            "requestBody": {
                "content": {
                    "application/x-www-form-urlencoded": {"schema": REPORT},
                    "application/json": {"schema": {"oneOf": [REPORT, {"type": "array", "items": REPORT}]}},
                }
            },
            "responses": _answers(RESULT, 400, 401, 404, 413, 415, 503),
        },
        "get": {
            "summary": "Receive one delivery report as a query string",
            "parameters": [
                _param(n) for n in ("id", "status", "segment", "segments", "time", "to", "campaign", "error")
            ],
            "responses": _answers(RESULT, 400, 401, 404, 503),
        },
    }
    page = {"type": "object", "properties": {"items": {"type": "array", "items": MESSAGE}, "next_cursor": NULL_STR}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dlr-tracker",
            "version": __version__,
            "description": "Delivery-report tracking for SMS platforms. Every JSON answer is {code, data, message}.",
        },
        "components": {
            "schemas": {"Envelope": _envelope()},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/dlr/{dialect}": ingest,
            "/messages": {
                "post": {
                    "summary": "Register sent messages (object or array)",
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {"oneOf": [REGISTRATION, {"type": "array", "items": REGISTRATION}]}
                            }
                        }
                    },
                    "responses": _answers({}, 207, 400, 401, 413, 415, 503),
                },
                "get": {
                    "summary": "Many messages by id (`ids`), or a filtered, keyset-paginated page",
                    "parameters": [
                        _param("ids"),
                        _param("campaign"),
                        _param("status", schema=STATUS),
                        _param("to"),
                        _param("since"),
                        _param("until"),
                        _param("limit", schema={"type": "integer", "minimum": 1, "maximum": 1000}),
                        _param("cursor"),
                    ],
                    "responses": _answers(page, 400, 401, 503),
                },
            },
            "/messages/{id}": {
                "get": {
                    "summary": "One message's status",
                    "parameters": [_param("id", "path", True)],
                    "responses": _answers(MESSAGE, 401, 404, 503),
                }
            },
            "/messages/{id}/history": {
                "get": {
                    "summary": "Every report and sweep event, oldest first",
                    "parameters": [_param("id", "path", True)],
                    "responses": _answers({}, 401, 404, 503),
                }
            },
            "/campaigns/{campaign}": {
                "get": {
                    "summary": "Campaign statistics",
                    "parameters": [_param("campaign", "path", True)],
                    "responses": _answers({}, 401, 404, 503),
                }
            },
            "/quarantine": {
                "get": {
                    "summary": "Payloads that could not be parsed or validated, newest first",
                    "parameters": [
                        _param("dialect"),
                        _param("limit", schema={"type": "integer", "minimum": 1, "maximum": 1000}),
                        _param("cursor"),
                    ],
                    "responses": _answers({}, 400, 401, 503),
                }
            },
            "/quarantine/{id}/replay": {
                "post": {
                    "summary": "Feed a quarantined payload through ingestion again",
                    "parameters": [_param("id", "path", True, {"type": "integer"})],
                    "responses": _answers({}, 400, 401, 404, 503),
                }
            },
            "/healthz": {"get": {"summary": "Process alive", "responses": _answers({})}},
            "/readyz": {"get": {"summary": "Database reachable and schema at head", "responses": _answers({}, 503)}},
            "/metrics": {
                "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text format"}}}
            },
        },
    }


@cache
def spec() -> bytes:
    return json.dumps(build(), separators=(",", ":")).encode()
