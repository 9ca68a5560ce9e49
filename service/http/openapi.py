"""The OpenAPI 3.1 description served at `/openapi.json`: DESIGN §2, with every field as strict as the code
that reads it (tests/reliability/test_fuzz.py runs schemathesis against this document and must find nothing).

Each sender has its own path (`/dlr/kannel`, ...) with the fields its dialect's `describe` states, the
content types it sends and the answer it gets.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from service import __version__, fields
from service import field_schemas as schemas
from service.dialects import DIALECTS, Dialect
from service.engine import CLOSING_STATUSES
from service.http import messages
from service.http.scopes import ROUTE_SCOPES
from service.payloads import FORM, JSON, TEXT
from service.statuses import Status
from service.subscriptions.model import MAX_CAMPAIGNS
from service.tasks.model import MEDIA_TYPES, ExportFormat, Kind, State

STATUS = {"type": "string", "enum": [s.value for s in Status]}
NULL_STR = {"type": ["string", "null"]}
NULL_TIME = {"type": ["string", "null"], "format": "date-time"}


def _envelope(data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["code", "data", "message"],
        "properties": {"code": {"type": "integer"}, "data": data or {}, "message": {"type": "string"}},
    }


ENVELOPE = {"content": {JSON: {"schema": {"$ref": "#/components/schemas/Envelope"}}}}


def _answers(data: dict[str, Any], *errors: int) -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": "code 0", "content": {JSON: {"schema": _envelope(data)}}}}
    for status in errors:
        out[str(status)] = {"description": "an error in the envelope", **ENVELOPE}
    return out


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
        "text": NULL_STR,
        "version": {"type": "integer", "minimum": 1},
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


def _ingest(dialect: Dialect, max_batch: int) -> dict[str, Any]:
    """One sender's path: the content types it sends, its fields, and how it is answered."""
    media = {FORM: "form", JSON: "json", TEXT: "text"}
    body = {
        kind: {"schema": schema}
        for kind, transport in media.items()
        if (schema := dialect.describe(transport, max_batch)) is not None  # type: ignore[arg-type]
    }
    errors = {str(code): {"description": "an error in the envelope", **ENVELOPE} for code in (400, 401, 413, 415, 503)}
    ack = dialect.ack
    ok: dict[str, Any] = {"description": ack.description}
    if ack.body is None:
        ok |= ENVELOPE
    elif ack.media_type is not None:
        ok["content"] = {ack.media_type: {"schema": {"const": ack.body.decode()}}}
    if ack.refused_too:
        del errors["400"], errors["415"]  # refused payloads are acknowledged too (and quarantined)
    responses = {"200": ok, **errors}
    json_body = body.get(JSON, {}).get("schema", {})
    if "oneOf" in json_body or json_body.get("properties", {}).get("results"):
        responses["207"] = {"description": "code 98: part of the batch applied", **ENVELOPE}
    item: dict[str, Any] = {
        "post": {
            "summary": f"Delivery reports from {dialect.name}",
            "requestBody": {"required": True, "content": body},
            "responses": responses,
        }
    }
    query = dialect.describe("query", max_batch)
    if query is not None:
        item["get"] = {
            "summary": f"One delivery report from {dialect.name} as a query string",
            "parameters": [
                _param(name, required=name in query["required"], schema=schema)
                for name, schema in query["properties"].items()
            ],
            "responses": {k: v for k, v in responses.items() if k not in ("207", "413", "415")},
        }
    return item


def _registration(max_batch: int) -> dict[str, Any]:
    one = schemas.obj(
        ["id"],
        {
            "id": schemas.message_id(False),
            "to": schemas.short(False),
            "campaign": schemas.text(fields.MAX_TEXT, False),
            "segments": schemas.count(False),
            "sent_at": schemas.moment(False),
            "text": schemas.text(messages.MAX_TEXT, False),
        },
    )
    many = {"type": "array", "minItems": 1, "maxItems": max_batch, "items": one}
    return {"required": True, "content": {JSON: {"schema": {"oneOf": [one, many]}}}}


# A page size as requests.page_limit reads it: 1..1000 (MAX_PAGE of both listings), leading zeros allowed,
# empty for the default.
LIMIT = {"type": "string", "pattern": "^(0*([1-9][0-9]{0,2}|1000))?$"}


# Seconds a long poll may wait: 0..30, as http/events._wait reads them.
WAIT = "^((30(\\.0{1,5})?)|([12]?[0-9](\\.[0-9]{1,5})?))?$"
EVENT = {
    "type": "object",
    "required": ["id", "type", "timestamp", "data"],
    "properties": {
        "id": {"type": "string"},
        "type": {"const": "message.status_changed"},
        "timestamp": {"type": "string", "format": "date-time"},
        "data": {
            "allOf": [MESSAGE],
            "properties": {
                "previous_status": {"anyOf": [STATUS, {"type": "null"}]},
                "source": {"type": "string"},
            },
        },
    },
}


SUBSCRIPTION_FILTER = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "properties": {
        "final": {"type": ["boolean", "null"]},
        "statuses": {"type": ["array", "null"], "minItems": 1, "items": STATUS},
        "campaigns": {
            "type": ["array", "null"],
            "minItems": 1,
            "maxItems": MAX_CAMPAIGNS,
            "items": {"type": "string", "minLength": 1, "maxLength": fields.MAX_TEXT, "pattern": schemas.NUL_FREE},
        },
    },
}
# http(s), a host, no credentials or fragment; whether the host resolves to a global address is checked when
# it is registered (state, not shape).
SUBSCRIPTION_URL = {"type": "string", "maxLength": 2000, "pattern": "^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[!-~]*)?$"}
# whsec_ + base64 of 24 to 64 bytes (signing.secret_problem): 8 to 21 groups of four, then the padded tail.
_B64 = "[A-Za-z0-9+/]"
WHSEC = {
    "type": "string",
    "pattern": (
        f"^whsec_(?:(?:{_B64}{{4}}){{8,20}}(?:{_B64}{{2}}==|{_B64}{{3}}=)?|(?:{_B64}{{4}}){{21}}(?:{_B64}{{2}}==)?)$"
    ),
}
SUBSCRIPTION = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "url": {"type": "string"},
        "description": NULL_STR,
        "filter": {"type": "object"},
        "enabled": {"type": "boolean"},
        "disabled_reason": NULL_STR,
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "failing_since": NULL_TIME,
    },
}
DELIVERY = {
    "type": "object",
    "properties": {
        "event_id": {"type": "string"},
        "event_at": {"type": "string", "format": "date-time"},
        "state": {"enum": ["pending", "delivered", "failed"]},
        "attempts": {"type": "array"},
        "next_attempt_at": NULL_TIME,
    },
}
ID_CURSOR = {"type": "string", "pattern": "^(0*[1-9][0-9]{0,17})?$"}


def _subscriptions() -> dict[str, Any]:
    sub_id = _param("id", "path", True, {"type": "integer", "minimum": 1})
    description = schemas.text(1000, False)
    with_secret = {"allOf": [SUBSCRIPTION], "properties": {"secret": {"type": "string"}}}
    return {
        "/subscriptions": {
            "post": {
                "summary": "Subscribe a URL to the events matching a filter; the answer shows the secret (only now)",
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "required": ["url"],
                                "additionalProperties": False,
                                "properties": {
                                    "url": SUBSCRIPTION_URL,
                                    "description": description,
                                    "filter": SUBSCRIPTION_FILTER,
                                    "secret": {"anyOf": [WHSEC, {"type": "null"}]},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": {"description": "code 0: created", "content": {JSON: {"schema": _envelope(with_secret)}}},
                    **{
                        str(c): {"description": "an error in the envelope", **ENVELOPE}
                        for c in (400, 401, 413, 415, 503)
                    },
                },
            },
            "get": {
                "summary": "Subscriptions, by id (never their secrets)",
                "parameters": [_param("limit", schema=LIMIT), _param("cursor", schema=ID_CURSOR)],
                "responses": _answers(
                    {"type": "object", "properties": {"items": {"type": "array", "items": SUBSCRIPTION}}}, 400, 401, 503
                ),
            },
        },
        "/subscriptions/{id}": {
            "get": {
                "summary": "One subscription",
                "parameters": [sub_id],
                "responses": _answers(SUBSCRIPTION, 401, 404, 503),
            },
            "patch": {
                "summary": "Change a subscription's url, description, filter or enabled",
                "parameters": [sub_id],
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "minProperties": 1,
                                "additionalProperties": False,
                                "properties": {
                                    "url": SUBSCRIPTION_URL,
                                    "description": description,
                                    "filter": SUBSCRIPTION_FILTER,
                                    "enabled": {"type": "boolean"},
                                },
                            }
                        }
                    },
                },
                "responses": _answers(SUBSCRIPTION, 400, 401, 404, 413, 415, 503),
            },
            "delete": {
                "summary": "Delete a subscription and its deliveries",
                "parameters": [sub_id],
                "responses": _answers({}, 401, 404, 503),
            },
        },
        "/subscriptions/{id}/rotate-secret": {
            "post": {
                "summary": "A new secret (shown only now); the old one also signs for 24 hours",
                "parameters": [sub_id],
                "requestBody": {
                    "required": False,
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {"secret": {"anyOf": [WHSEC, {"type": "null"}]}},
                            }
                        }
                    },
                },
                "responses": _answers(with_secret, 400, 401, 404, 413, 415, 503),
            }
        },
        "/subscriptions/{id}/deliveries": {
            "get": {
                "summary": "Each event's delivery with its attempts, newest first",
                "parameters": [
                    sub_id,
                    _param("state", schema={"type": "string", "enum": ["", "pending", "delivered", "failed"]}),
                    _param("limit", schema=LIMIT),
                    _param("cursor", schema=ID_CURSOR),
                ],
                "responses": _answers(
                    {"type": "object", "properties": {"items": {"type": "array", "items": DELIVERY}}},
                    400,
                    401,
                    404,
                    503,
                ),
            }
        },
        "/subscriptions/{id}/replay": {
            "post": {
                "summary": "Queue deliveries again: events from `since` on, or those of `event_ids`",
                "parameters": [sub_id],
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": {
                                "oneOf": [
                                    {
                                        "type": "object",
                                        "required": ["since"],
                                        "additionalProperties": False,
                                        "properties": {"since": {"type": "string", "pattern": f"^({schemas.ISO})$"}},
                                    },
                                    {
                                        "type": "object",
                                        "required": ["event_ids"],
                                        "additionalProperties": False,
                                        "properties": {
                                            "event_ids": {
                                                "type": "array",
                                                "minItems": 1,
                                                "maxItems": 100,
                                                "items": {"type": "string", "pattern": "^[0-9]{1,20}-[0-9]{1,19}$"},
                                            }
                                        },
                                    },
                                ]
                            }
                        }
                    },
                },
                "responses": _answers({}, 400, 401, 404, 413, 415, 503),
            }
        },
    }


TASK = {
    "type": "object",
    "required": ["id", "kind", "state", "progress", "result", "error", "created_at", "started_at", "finished_at"],
    "properties": {
        "id": {"type": "integer"},
        "kind": {"type": "string", "enum": [k.value for k in Kind]},
        "state": {"type": "string", "enum": [s.value for s in State]},
        "progress": {
            "type": "object",
            "properties": {"done": {"type": "integer"}, "total": {"type": ["integer", "null"]}},
        },
        "result": {"type": ["object", "null"]},
        "error": NULL_STR,
        "created_at": {"type": "string", "format": "date-time"},
        "started_at": NULL_TIME,
        "finished_at": NULL_TIME,
    },
}


def _task_request(summary: str, body: dict[str, Any], required: bool, *path: dict[str, Any]) -> dict[str, Any]:
    """A mass operation: a JSON object asks for it (no other field), code 100 (HTTP 202) answers its task id."""
    schema = {"type": "object", "additionalProperties": False, **body}
    accepted = _envelope({"type": "object", "required": ["task_id"], "properties": {"task_id": {"type": "integer"}}})
    responses = _answers({}, 400, 401, 404, 413, 415, 503)
    del responses["200"]
    return {
        "post": {
            "summary": summary,
            "parameters": list(path),
            "requestBody": {"required": required, "content": {JSON: {"schema": schema}}},
            "responses": {
                "202": {
                    "description": "code 100: sent for background execution",
                    "content": {JSON: {"schema": accepted}},
                },
                **responses,
            },
        }
    }


def _tasks() -> dict[str, Any]:
    campaign = _param("campaign", "path", True)
    task_id = _param("id", "path", True, {"type": "integer"})
    return {
        "/campaigns/{campaign}/export": _task_request(
            "Export every message of a campaign (csv or ndjson) in the background",
            {
                "required": ["format"],
                "properties": {"format": {"type": "string", "enum": [f.value for f in ExportFormat]}},
            },
            True,
            campaign,
        ),
        "/campaigns/{campaign}/close": _task_request(
            "Resolve every open message of a campaign now, as the expiry sweep would, in the background",
            {
                "required": ["status"],
                "properties": {"status": {"type": "string", "enum": sorted(s.value for s in CLOSING_STATUSES)}},
            },
            True,
            campaign,
        ),
        "/quarantine/replay": _task_request(
            "Replay every matching quarantined payload in the background; what still fails stays",
            {
                "properties": {
                    "dialect": {"anyOf": [{"type": "string", "enum": sorted(DIALECTS)}, schemas.NULL]},
                    "since": schemas.moment(False),
                    "until": schemas.moment(False),
                }
            },
            False,
        ),
        "/tasks/{id}": {
            "get": {
                "summary": "A background task: state, progress, result, error",
                "parameters": [task_id],
                "responses": _answers(TASK, 401, 404, 503),
            },
            "delete": {
                "summary": "Cancel a task that has not finished (code 15 once it has)",
                "parameters": [task_id],
                "responses": _answers(TASK, 401, 404, 409, 503),
            },
        },
        "/tasks/{id}/result": {
            "get": {
                "summary": "An export's output, streamed (code 15 until the export is done)",
                "parameters": [task_id],
                "responses": {
                    "200": {
                        "description": "the export: CSV with a header row, or NDJSON",
                        "content": {MEDIA_TYPES[f].split(";")[0]: {"schema": {"type": "string"}} for f in ExportFormat},
                    },
                    **{str(c): {"description": "an error in the envelope", **ENVELOPE} for c in (401, 404, 409, 503)},
                },
            }
        },
    }


def _status_filter() -> dict[str, Any]:
    return {"type": "string", "enum": ["", *(s.value for s in Status)]}


def build(max_batch: int, api_keys: bool = False, webhook_token: bool = False) -> dict[str, Any]:
    page = {"type": "object", "properties": {"items": {"type": "array", "items": MESSAGE}, "next_cursor": NULL_STR}}
    many = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": MESSAGE}, "not_found": {"type": "array"}},
    }
    ids = f"^[^\\x00,]+(,[^\\x00,]+){{0,{messages.MAX_IDS - 1}}}$"
    paths: dict[str, Any] = {f"/dlr/{name}": _ingest(dialect, max_batch) for name, dialect in sorted(DIALECTS.items())}
    paths |= {
        "/messages": {
            "post": {
                "summary": "Register sent messages (object or array)",
                "requestBody": _registration(max_batch),
                "responses": _answers({}, 207, 400, 401, 413, 415, 503),
            },
            "get": {
                "summary": "Many messages by id (`ids`, alone), or a filtered, keyset-paginated page",
                "parameters": [
                    _param("ids", schema={"type": "string", "pattern": ids}),
                    _param("campaign", schema=schemas.text(fields.MAX_TEXT, True)),
                    _param("status", schema=_status_filter()),
                    _param("to", schema=schemas.short(True)),
                    _param("since", schema=schemas.moment(True)),
                    _param("until", schema=schemas.moment(True)),
                    _param("limit", schema=LIMIT),
                    # Opaque: only a next_cursor the service handed out is valid.
                    _param("cursor", schema={"type": "string", "maxLength": 2000, "pattern": "^[A-Za-z0-9_-]*$"}),
                ],
                "responses": _answers({"anyOf": [page, many]}, 400, 401, 503),
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
        "/events": {
            "get": {
                "summary": "Every committed change of a message, gap-free, in commit order (long-poll with wait)",
                "parameters": [
                    # An event's id or a next_cursor as handed out, or `latest`.
                    _param("after", schema={"type": "string", "pattern": "^(latest|[0-9]{1,18}-[0-9]{1,18})?$"}),
                    _param("limit", schema=LIMIT),
                    _param("campaign", schema=schemas.text(fields.MAX_TEXT, True)),
                    _param("final", schema={"type": "string", "enum": ["", "true", "false"]}),
                    _param("wait", schema={"type": "string", "pattern": WAIT}),
                ],
                "responses": _answers(
                    {
                        "type": "object",
                        "properties": {
                            "items": {"type": "array", "items": EVENT},
                            "next_cursor": {"type": "string"},
                        },
                    },
                    400,
                    401,
                    503,
                ),
            }
        },
        "/quarantine": {
            "get": {
                "summary": "Payloads that could not be parsed or validated, newest first",
                "parameters": [
                    _param("dialect", schema=schemas.text(fields.MAX_TEXT, True)),
                    _param("limit", schema=LIMIT),
                    _param("cursor", schema={"type": "string", "pattern": "^(0*[1-9][0-9]{0,17})?$"}),
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
        **_subscriptions(),
        **_tasks(),
        "/healthz": {"get": {"summary": "Process alive", "responses": _answers({})}},
        "/readyz": {"get": {"summary": "Database reachable and schema at head", "responses": _answers({}, 503)}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text format"}}}},
    }
    _secure(paths, api_keys, webhook_token)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dlr-tracker",
            "version": __version__,
            "description": "Delivery-report tracking for SMS platforms. Every JSON answer is {code, data, message}.",
        },
        "components": {
            "schemas": {"Envelope": _envelope()},
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "an API key (DLR_API_KEYS)"},
                "apiKeyParameter": {"type": "apiKey", "in": "query", "name": "apiKey"},
                "webhookToken": {"type": "http", "scheme": "bearer", "description": "DLR_WEBHOOK_TOKEN[_<DIALECT>]"},
                "webhookTokenParameter": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
        "paths": paths,
    }


OPERATIONAL = ("/healthz", "/readyz", "/metrics", "/openapi.json")


def _secure(paths: dict[str, Any], api_keys: bool, webhook_token: bool) -> None:
    """Each operation's credentials, as this service is configured: an API key (bearer or `apiKey=`) with the
    scope the operation needs (`http/scopes.ROUTE_SCOPES`, listed as the requirement's role, as OpenAPI 3.1
    allows, and as `x-scope`) for the API, the webhook token (bearer or `token=`) for `/dlr/*`, nothing for
    the operational endpoints. Where none is configured the operation is open (`{}`): the document says what
    this deployment asks for."""
    ingest: list[dict[str, list[str]]] = (
        [{"webhookToken": []}, {"webhookTokenParameter": []}] if webhook_token else [{}]
    )
    for path, item in paths.items():
        for method, operation in item.items():
            if path in OPERATIONAL:
                operation["security"] = []
            elif path.startswith("/dlr/"):
                operation["security"] = ingest
            else:
                scope = ROUTE_SCOPES[method.upper(), _ROUTE_TEMPLATES.get(path, path)]
                operation["x-scope"] = str(scope)
                role = [str(scope)]
                operation["security"] = [{"apiKey": role}, {"apiKeyParameter": role}] if api_keys else [{}]


# The document's paths where they are written differently from the routes' templates.
_ROUTE_TEMPLATES = {
    "/messages/{id}": "/messages/{id:anything}",
    "/messages/{id}/history": "/messages/{id:anything}/history",
    "/campaigns/{campaign}": "/campaigns/{campaign:anything}",
    "/campaigns/{campaign}/export": "/campaigns/{campaign:anything}/export",
    "/campaigns/{campaign}/close": "/campaigns/{campaign:anything}/close",
}


@cache
def spec(max_batch: int, api_keys: bool = False, webhook_token: bool = False) -> bytes:
    return json.dumps(build(max_batch, api_keys, webhook_token), separators=(",", ":")).encode()
