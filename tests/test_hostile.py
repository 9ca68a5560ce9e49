"""Hostile clients: everything a broken or malicious sender can put on the wire, against `/dlr/generic`
and the read endpoints' query strings, through the ASGI app and a real PostgreSQL.

What every refused ingest request must show: no 5xx; the `{code, data, message}` envelope with a 4xx
whose code matches the design (1/11 -> 400, 6 -> 415, 12 -> 400 or 413, a batch with no good item 99 ->
400); `data` naming the bad field; no message or history row; and its exact bytes in the quarantine
with the reason (the body-size and batch-size limits excepted: those are refused before anything is
kept). Read endpoints answer a bad query string with code 1, 11 or 12, never a 5xx.

Requests go through `raw_request`, which hands the app the exact bytes given (raw NUL, raw 0xFF,
`%zz`, lying Content-Length): the test client would otherwise encode or refuse them first.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from service.app import create_app
from service.config import Settings
from tests.conftest import fetch

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
HTTP_FOR_CODE = {1: 400, 6: 415, 11: 400, 12: 400, 99: 400}


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: Any

    @property
    def code(self) -> int:
        return int(self.body["code"])

    @property
    def data(self) -> Any:
        return self.body["data"]


def raw_request(
    client: TestClient,
    method: str,
    path: str,
    query: bytes = b"",
    body: bytes = b"",
    content_type: str | bytes | None = None,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> Answer:
    """One request through the running app with exactly these bytes: no client-side encoding or checks."""
    raw_headers = [(b"host", b"testserver")]
    if content_type is not None:
        raw_headers.append(
            (b"content-type", content_type if isinstance(content_type, bytes) else content_type.encode("latin-1"))
        )
    raw_headers.extend(headers)
    if not any(name == b"content-length" for name, _ in raw_headers):
        raw_headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": raw_headers,
        "client": ("testclient", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await client.app(scope, receive, send)

    assert client.portal is not None, "raw_request needs the client's lifespan running (use it inside `with`)"
    client.portal.call(run)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content_type = dict(start["headers"]).get(b"content-type", b"").decode("latin-1")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Answer(start["status"], content_type, json.loads(payload))


def counts(db: str) -> tuple[int, int, int]:
    """How many messages, history rows and quarantined payloads the database holds."""
    row = fetch(
        db,
        "SELECT (SELECT count(*) FROM messages) AS m, (SELECT count(*) FROM history) AS h,"
        " (SELECT count(*) FROM quarantine) AS q",
    )[0]
    return row["m"], row["h"], row["q"]


def assert_envelope(answer: Answer) -> None:
    assert answer.status < 500, answer.body
    assert answer.content_type.startswith("application/json"), answer.content_type
    assert isinstance(answer.body, dict)
    assert set(answer.body) == {"code", "data", "message"}, answer.body
    assert isinstance(answer.body["code"], int)
    assert isinstance(answer.body["message"], str)


def assert_refused(answer: Answer, code: int, field: str | None) -> None:
    """The envelope with the documented code and HTTP status, and `data` naming the bad field."""
    assert_envelope(answer)
    assert (answer.status, answer.code) == (HTTP_FOR_CODE[code], code), answer.body
    assert answer.body["message"]
    if field is not None:
        assert isinstance(answer.data, dict)
        assert field in answer.data, answer.data


def quarantined(db: str) -> list[Any]:
    return fetch(db, "SELECT method, content_type, query, body, error FROM quarantine ORDER BY id")


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


def report(**fields: Any) -> dict[str, Any]:
    """A valid generic report with some fields replaced (None removes the field)."""
    base: dict[str, Any] = {"id": "h1", "status": "DELIVRD"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def post(content_type: str | bytes | None, body: bytes, *expected: Any, id: str) -> Any:
    """A table row for a POST to `/dlr/generic`: no query string, this body."""
    return pytest.param("POST", b"", content_type, body, *expected, id=id)


def get(query: bytes, *expected: Any, id: str) -> Any:
    """A table row for a GET of `/dlr/generic`: this query string, no body."""
    return pytest.param("GET", query, None, b"", *expected, id=id)


# --- ingest: one bad report, refused whole ---------------------------------------------------------

FIELDS = ("id", "status", "segment", "segments", "time", "to", "campaign", "error")
WRONG_TYPES = {"bool": True, "list": ["1"], "dict": {"a": "1"}, "float": 1.5}

WRONG_JSON_TYPES = [
    post(JSON, js(report(**{name: bad})), 1, name, id=f"json-{name}-{kind}")
    for name in FIELDS
    for kind, bad in WRONG_TYPES.items()
]

HOSTILE_INGEST = [
    # required fields missing: code 11, data names the field
    post(JSON, js({"status": "DELIVRD"}), 11, "id", id="json-no-id"),
    post(JSON, js({"id": "h1"}), 11, "status", id="json-no-status"),
    post(JSON, js({"id": None, "status": "DELIVRD"}), 11, "id", id="json-null-id"),
    post(JSON, js({"id": "", "status": "DELIVRD"}), 11, "id", id="json-empty-id"),
    post(FORM, b"status=DELIVRD", 11, "id", id="form-no-id"),
    post(FORM, b"id=&status=DELIVRD", 11, "id", id="form-empty-id"),
    post(FORM, b"id&status=DELIVRD", 11, "id", id="form-id-without-equals"),
    get(b"id=h1", 11, "status", id="get-no-status"),
    get(b"", 11, "id", id="get-empty-query"),
    # whitespace-only id
    post(FORM, b"id=+++&status=DELIVRD", 1, "id", id="form-whitespace-id"),
    get(b"id=%20%09&status=DELIVRD", 1, "id", id="get-whitespace-id"),
    post(JSON, js(report(id=" \t\n")), 1, "id", id="json-whitespace-id"),
    # invalid UTF-8: percent-encoded, raw, overlong, an encoded surrogate, in a key, in JSON
    post(FORM, b"id=%FF&status=DELIVRD", 1, "id", id="form-pct-ff"),
    post(FORM, b"id=\xff\xfe&status=DELIVRD", 1, "id", id="form-raw-ff"),
    post(FORM, b"id=%C0%AF&status=DELIVRD", 1, "id", id="form-overlong"),
    post(FORM, b"id=%ED%A0%80&status=DELIVRD", 1, "id", id="form-utf8-surrogate"),
    post(FORM, b"id=h1&status=DELIVRD&%FF=1", 1, "field name", id="form-bad-utf8-key"),
    get(b"id=%C3%28&status=DELIVRD", 1, "id", id="get-pct-bad-utf8"),
    get(b"id=\xc3\x28&status=DELIVRD", 1, "id", id="get-raw-bad-utf8"),
    post(JSON, b'{"id": "\xff", "status": "DELIVRD"}', 1, "body", id="json-raw-ff"),
    post(JSON, b'{"id": "\\ud800", "status": "DELIVRD"}', 1, "body", id="json-lone-surrogate"),
    post(JSON, b'{"id": "h1", "status": "DELIVRD", "x": "\\udfff"}', 1, "body", id="json-lone-surrogate-unused-field"),
    post(JSON, b'{"\\ud800": 1, "id": "h1", "status": "DELIVRD"}', 1, "body", id="json-lone-surrogate-key"),
    # bad percent-encoding
    post(FORM, b"id=%zz&status=DELIVRD", 1, "id", id="form-pct-zz"),
    post(FORM, b"status=DELIVRD&id=h1%", 1, "id", id="form-trailing-pct"),
    post(FORM, b"status=DELIVRD&id=%4", 1, "id", id="form-pct-one-digit"),
    post(FORM, b"i%zzd=h1&status=DELIVRD", 1, "field name", id="form-pct-in-key"),
    get(b"id=%zz&status=DELIVRD", 1, "id", id="get-pct-zz"),
    get(b"status=DELIVRD&id=h1%", 1, "id", id="get-trailing-pct"),
    get(b"id=%4&status=DELIVRD", 1, "id", id="get-pct-one-digit"),
    get(b"id=%%34%31&status=DELIVRD", 1, "id", id="get-double-pct"),
    # NUL bytes: raw, %00, \u0000 in JSON, in every text field
    post(FORM, b"id=a\x00b&status=DELIVRD", 1, "id", id="form-raw-nul"),
    post(FORM, b"id=a%00b&status=DELIVRD", 1, "id", id="form-pct-nul"),
    post(FORM, b"id=h1&status=DELIVRD&x%00=1", 1, "field name", id="form-nul-in-key"),
    get(b"id=a%00b&status=DELIVRD", 1, "id", id="get-pct-nul"),
    get(b"id=a\x00b&status=DELIVRD", 1, "id", id="get-raw-nul"),
    post(JSON, js(report(id="a\x00b")), 1, "id", id="json-nul-id"),
    post(JSON, js(report(status="DELIVRD\x00")), 1, "status", id="json-nul-status"),
    post(JSON, js(report(to="+1\x00")), 1, "to", id="json-nul-to"),
    post(JSON, js(report(campaign="c\x00")), 1, "campaign", id="json-nul-campaign"),
    post(JSON, js(report(error="e\x00")), 1, "error", id="json-nul-error"),
    post(JSON, js(report(time="2025-11-24T16:00:00\x00")), 1, "time", id="json-nul-time"),
    post(JSON, js(report(segment="1\x00")), 1, "segment", id="json-nul-segment"),
    post(JSON, b'{"id": "a\x00b", "status": "DELIVRD"}', 1, "body", id="json-raw-nul"),
    # huge values
    post(FORM, b"id=" + b"x" * 10_000 + b"&status=DELIVRD", 1, "id", id="form-id-10k"),
    post(JSON, js(report(id="x" * 10_000)), 1, "id", id="json-id-10k"),
    post(JSON, js(report(id=10**4000)), 1, "id", id="json-id-int-4000-digits"),
    post(JSON, b'{"id": ' + b"7" * 5000 + b', "status": "DELIVRD"}', 1, "body", id="json-id-int-5000-digits"),
    post(
        JSON,
        b'{"id": "h1", "status": "DELIVRD", "segment": ' + b"9" * 5000 + b"}",
        1,
        "body",
        id="json-segment-5000-digits",
    ),
    post(JSON, js(report(segment=10**4000)), 1, "segment", id="json-segment-4000-digits"),
    post(FORM, b"id=h1&status=DELIVRD&segment=99999999999999999999", 1, "segment", id="form-segment-20-digits"),
    post(FORM, b"id=h1&status=DELIVRD&segments=256", 1, "segments", id="form-segments-256"),
    post(FORM, b"id=h1&status=DELIVRD&time=1e300", 1, "time", id="form-time-1e300"),
    post(FORM, b"id=h1&status=DELIVRD&time=" + b"9" * 5000, 1, "time", id="form-time-5000-digits"),
    post(FORM, b"id=h1&status=DELIVRD&time=1764_000_000", 1, "time", id="form-time-underscores"),
    post(
        FORM,
        b"id=h1&status=DELIVRD&time=%D9%A1%D9%A7%D9%A6%D9%A4%D9%A0%D9%A0%D9%A0%D9%A0%D9%A0%D9%A0",
        1,
        "time",
        id="form-time-arabic-digits",
    ),
    post(JSON, js(report(time=1e300)), 1, "time", id="json-time-1e300"),
    post(JSON, js(report(time=-99_999_999_999)), 1, "time", id="json-time-year-minus-1199"),
    post(JSON, js(report(time=-70_000_000_000.0)), 1, "time", id="json-time-year-minus-249"),
    post(JSON, js(report(time=10**4000)), 1, "time", id="json-time-4000-digits"),
    post(JSON, js(report(time="0001-01-01T00:00:00+14:00")), 1, "time", id="json-time-year-1"),
    post(JSON, js(report(time="9999-12-31T23:59:59-14:00")), 1, "time", id="json-time-year-9999"),
    post(JSON, js(report(to="1" * 65)), 1, "to", id="json-to-65"),
    post(JSON, js(report(campaign="c" * 256)), 1, "campaign", id="json-campaign-256"),
    post(JSON, b'{"id": "h1", "status": "DELIVRD", "time": 1e400}', 1, "body", id="json-float-overflows-to-inf"),
    post(JSON, b'{"id": "h1", "status": "DELIVRD", "time": NaN}', 1, "body", id="json-nan"),
    post(JSON, b'{"id": "h1", "status": "DELIVRD", "time": Infinity}', 1, "body", id="json-infinity"),
    post(JSON, b'{"id": "h1", "status": "DELIVRD", "segment": -Infinity}', 1, "body", id="json-minus-infinity"),
    # deep nesting
    post(JSON, b"[" * 10_000 + b"]" * 10_000, 1, "body", id="json-array-10k-deep"),
    post(JSON, b'{"a":' * 10_000 + b"1" + b"}" * 10_000, 1, "body", id="json-object-10k-deep"),
    post(
        JSON,
        b'{"id": "h1", "status": "DELIVRD", "x": ' + b"[" * 40 + b"]" * 40 + b"}",
        1,
        "body",
        id="json-40-deep-in-unused-field",
    ),
    post(FORM, b"status=DELIVRD&a" + b"[b]" * 10_000 + b"=1", 11, "id", id="form-key-10k-deep"),
    # statuses
    post(FORM, b"id=h1&status=DELIVERED", 1, "status", id="form-unknown-status"),
    post(FORM, b"id=h1&status=" + b"D" * 10_000, 1, "status", id="form-status-10k"),
    post(FORM, b"id=h1&status=+", 1, "status", id="form-blank-status"),
    post(FORM, b"id=h1&status=del%C4%B1vrd", 1, "status", id="form-status-dotless-i"),
    post(FORM, b"id=h1&status=%C5%BFENT", 1, "status", id="form-status-long-s"),
    get(b"id=h1&status=UNKNOWN", 1, "status", id="get-unknown-status"),
    post(JSON, js(report(status=7)), 1, "status", id="json-status-int"),
    # segments
    post(FORM, b"id=h1&status=PDLIVRD&segment=1", 1, "segment", id="pdlivrd-with-segment"),
    post(FORM, b"id=h1&status=DELIVRD&segment=3&segments=2", 1, "segment", id="segment-past-segments"),
    post(FORM, b"id=h1&status=DELIVRD&segment=0", 1, "segment", id="segment-0"),
    post(FORM, b"id=h1&status=DELIVRD&segment=-1", 1, "segment", id="segment-negative"),
    post(FORM, b"id=h1&status=DELIVRD&segment=%2B1", 1, "segment", id="segment-plus-sign"),
    post(FORM, b"id=h1&status=DELIVRD&segment=1.0", 1, "segment", id="segment-decimal"),
    post(FORM, b"id=h1&status=DELIVRD&segment=%EF%BC%91", 1, "segment", id="segment-fullwidth"),
    post(FORM, b"id=h1&status=DELIVRD&segment=0x1", 1, "segment", id="segment-hex"),
    post(FORM, b"id=h1&status=DELIVRD&segments=0", 1, "segments", id="segments-0"),
    post(JSON, js(report(segment=-1)), 1, "segment", id="json-segment-negative"),
    post(JSON, js(report(segments=0)), 1, "segments", id="json-segments-0"),
    # empty and odd bodies
    post(None, b"", 11, "id", id="empty-body-no-content-type"),
    post(FORM, b"", 11, "id", id="empty-form-body"),
    post(JSON, b"", 1, "body", id="empty-json-body"),
    post(JSON, b" \n\t ", 1, "body", id="whitespace-json-body"),
    post(JSON, b"[]", 1, "body", id="json-empty-array"),
    post(JSON, b'"id=h1&status=DELIVRD"', 1, "body", id="json-top-level-string"),
    post(JSON, b"42", 1, "body", id="json-top-level-number"),
    post(JSON, b"null", 1, "body", id="json-top-level-null"),
    post(JSON, b"true", 1, "body", id="json-top-level-bool"),
    post(JSON, b'{"id": "h1", "status": "DELIVRD"} {}', 1, "body", id="json-trailing-data"),
    post(JSON, b"id=h1&status=DELIVRD", 1, "body", id="form-body-labelled-json"),
    post(FORM, js(report()), 11, "id", id="json-body-labelled-form"),
    post(None, b"[]", 1, "body", id="sniffed-json-empty-array"),
    post("application/vnd.dlr+json", b"{", 1, "body", id="plus-json-broken"),
    # content types
    post("application/xml", b"<dlr id='h1' status='DELIVRD'/>", 6, "content-type", id="xml"),
    post("text/plain", b"id=h1&status=DELIVRD", 6, "content-type", id="text-plain"),
    post("application/octet-stream", b"\x00\x01\x02", 6, "content-type", id="octet-stream"),
    post(
        "multipart/form-data; boundary=XyZ",
        b'--XyZ\r\nContent-Disposition: form-data; name="id"\r\n\r\nh1\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="status"\r\n\r\nDELIVRD\r\n--XyZ--\r\n',
        6,
        "content-type",
        id="multipart",
    ),
    post(
        FORM + "; charset=no-such-charset",
        b"id=h1&status=DELIVRD",
        6,
        "content-type",
        id="form-unknown-charset",
    ),
    post(
        FORM + "; charset=unicode_escape",
        b"id=h%5Cu0000&status=DELIVRD",
        6,
        "content-type",
        id="form-charset-unicode-escape",
    ),
    post(
        FORM + "; charset=utf-16",
        b"id=h1&status=DELIVRD",
        6,
        "content-type",
        id="form-charset-utf-16",
    ),
    post(
        "application/json; charset=latin-1",
        b'{"id": "caf\xe9", "status": "DELIVRD"}',
        1,
        "body",
        id="json-latin-1-bytes",
    ),
    post(b"application/\xe9", b"id=h1&status=DELIVRD", 6, "content-type", id="non-ascii-content-type"),
    post(b"application/x\x00json", b"id=h1&status=DELIVRD", 6, "content-type", id="nul-in-content-type"),
    post(
        FORM.encode() + b"; charset=latin\x001",
        b"id=h1&status=DELIVRD",
        6,
        "content-type",
        id="nul-in-charset",
    ),
    # PHP-style keys clashing
    post(FORM, b"id=1&id[a]=2&status=DELIVRD", 1, "id", id="php-plain-then-bracket"),
    # The same field twice: which one did the sender mean? (Keeping the last applied id=a&id=b to b.)
    post(FORM, b"id=a&id=h1&status=UNDELIV&status=DELIVRD", 1, "id", id="form-duplicate-keys"),
    post(JSON, b'{"id": "a", "status": "UNDELIV", "id": "h1", "status": "DELIVRD"}', 1, "id", id="json-duplicate-keys"),
    post(FORM, b"id[a]=2&id=h1&status=DELIVRD", 1, "id", id="php-bracket-then-plain"),
    post(FORM, b"id=h1&status=DELIVRD&a[]=1&a[b]=2", 1, "a[b]", id="php-list-then-map"),
    post(FORM, b"id=h1&status=DELIVRD&a[b]=1&a[]=2", 1, "a[]", id="php-map-then-list"),
    post(FORM, b"id=h1&status=DELIVRD&a[]=1&a[0]=2", 1, "a[0]", id="php-list-then-index"),
    post(FORM, b"id[]=h1&status=DELIVRD", 1, "id", id="php-id-list"),
    post(FORM, b"id=h1&status[x]=DELIVRD", 1, "status", id="php-status-map"),
    get(b"id=h1&status=DELIVRD&segment[]=1", 1, "segment", id="php-get-segment-list"),
    post(FORM, b"=h1&id=h1&status=DELIVRD", 1, "field name", id="form-empty-key"),
]


@pytest.mark.parametrize(
    ("method", "query", "content_type", "body", "code", "field"), WRONG_JSON_TYPES + HOSTILE_INGEST
)
def test_hostile_report_is_refused_whole_and_quarantined(
    client: TestClient,
    db: str,
    method: str,
    query: bytes,
    content_type: str | bytes | None,
    body: bytes,
    code: int,
    field: str,
) -> None:
    """A bad report gets a 4xx envelope naming the field, changes nothing, and is kept byte for byte."""
    answer = raw_request(client, method, "/dlr/generic", query, body, content_type)
    assert_refused(answer, code, field)
    assert counts(db)[:2] == (0, 0)
    [row] = quarantined(db)
    assert (row["method"], bytes(row["query"]), bytes(row["body"])) == (method, query, body)
    assert field in json.loads(row["error"])


def test_quarantine_lists_refused_payloads_with_their_reason(client: TestClient) -> None:
    """`GET /quarantine` shows a refused payload with its content type, body as text and the reason."""
    raw_request(client, "POST", "/dlr/generic", body=b"id=h1&status=NOPE&x=%FF1", content_type=FORM)
    raw_request(client, "POST", "/dlr/generic", body=b"id=h1&status=NOPE", content_type=FORM)
    answer = raw_request(client, "GET", "/quarantine")
    assert_envelope(answer)
    newest, oldest = answer.data["items"]
    assert (newest["method"], newest["content_type"], newest["body"]) == ("POST", FORM, "id=h1&status=NOPE")
    assert "status" in newest["error"]
    assert oldest["body"] == "id=h1&status=NOPE&x=%FF1"
    assert "x" in oldest["error"]


def test_quarantine_error_is_an_object_naming_the_field(client: TestClient) -> None:
    """A quarantined payload's `error` is the same field -> reason map the sender was answered with."""
    refused = raw_request(client, "POST", "/dlr/generic", body=b"id=h1&status=NOPE", content_type=FORM)
    [item] = raw_request(client, "GET", "/quarantine").data["items"]
    assert item["error"] == refused.data


def test_quarantined_latin_1_form_keeps_its_charset(client: TestClient, db: str) -> None:
    """A refused form that declared ISO-8859-1 is kept with its charset, so a replay decodes it the same way."""
    body = b"id=caf%E9&status=NOPE"
    content_type = FORM + "; charset=ISO-8859-1"
    assert_refused(raw_request(client, "POST", "/dlr/generic", body=body, content_type=content_type), 1, "status")
    [row] = quarantined(db)
    assert row["content_type"] == FORM + "; charset=iso-8859-1"
    assert fetch(db, "SELECT message_id FROM quarantine")[0]["message_id"] == "café"


# --- ingest: batches ---------------------------------------------------------------------------------

HOSTILE_BATCHES = [
    pytest.param([1, "x", None, [], True], id="scalars"),
    pytest.param([{"id": True, "status": "DELIVRD"}, {"id": "b2"}, {"status": "NOPE"}], id="bad-objects"),
    pytest.param(
        [{"id": "b1", "status": "PDLIVRD", "segment": 1}, {"id": "b1", "status": "DELIVRD", "segment": 0}],
        id="bad-segments",
    ),
    pytest.param([{"id": "b1", "status": "DELIVRD", "time": -99_999_999_999}], id="time-before-year-1"),
]


@pytest.mark.parametrize("items", HOSTILE_BATCHES)
def test_batch_with_no_good_item_is_99_and_every_item_is_quarantined(
    client: TestClient, db: str, items: list[Any]
) -> None:
    """No valid item: code 99 (HTTP 400), each item's own error, nothing applied, each item quarantined."""
    answer = raw_request(client, "POST", "/dlr/generic", body=js(items), content_type=JSON)
    assert_refused(answer, 99, None)
    results = answer.data["items"]
    assert [r["index"] for r in results] == list(range(len(items)))
    assert all(r["code"] in (1, 11) and r["errors"] for r in results)
    assert counts(db) == (0, 0, len(items))
    kept = [json.loads(bytes(row["body"])) for row in quarantined(db)]
    assert kept == items


def test_batch_with_an_unencodable_item_is_refused_whole(client: TestClient, db: str) -> None:
    """A lone surrogate anywhere in a batch refuses the whole body (it could not be stored or answered)."""
    body = b'[{"id": "b1", "status": "DELIVRD"}, {"id": "\\ud800", "status": "DELIVRD"}]'
    answer = raw_request(client, "POST", "/dlr/generic", body=body, content_type=JSON)
    assert_refused(answer, 1, "body")
    assert counts(db) == (0, 0, 1)
    assert bytes(quarantined(db)[0]["body"]) == body


def test_batch_over_the_size_limit_is_code_12_and_quarantined_whole(settings: Settings, db: str) -> None:
    """Past DLR_MAX_BATCH the batch is refused with code 12 before any item is applied, and kept whole in the
    quarantine like every refused payload; once the limit allows it, its replay applies it."""
    body = js([{"id": f"b{i}", "status": "DELIVRD"} for i in range(4)])
    with TestClient(create_app(replace(settings, max_batch=3))) as client:
        answer = raw_request(client, "POST", "/dlr/generic", body=body, content_type=JSON)
        assert_refused(answer, 12, "batch")
        assert counts(db) == (0, 0, 1)
        [row] = quarantined(db)
        assert (bytes(row["body"]), json.loads(row["error"])) == (body, {"batch": "4 items; at most 3"})
        [item] = client.get("/quarantine").json()["data"]["items"]
        assert client.post(f"/quarantine/{item['id']}/replay").json()["code"] == 12  # still too large
    with TestClient(create_app(settings)) as client:
        replayed = client.post(f"/quarantine/{item['id']}/replay").json()
        assert (replayed["code"], len(replayed["data"]["items"])) == (0, 4)
    assert counts(db) == (4, 4, 0)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([], id="honest-length"),
        pytest.param([(b"content-length", b"10")], id="length-understated"),
        pytest.param([(b"content-length", b"\xb2")], id="length-superscript-two"),
        pytest.param([(b"content-length", b"-1")], id="length-negative"),
        pytest.param([(b"content-length", b"99999999999999999999999")], id="length-huge"),
    ],
)
def test_body_over_the_size_limit_is_413_whatever_content_length_says(
    settings: Settings, db: str, headers: list[tuple[bytes, bytes]]
) -> None:
    """Past DLR_MAX_BODY_BYTES: code 12 and HTTP 413, never buffered, never kept, however the length lies."""
    with TestClient(create_app(replace(settings, max_body_bytes=1024))) as client:
        body = b"id=h1&status=DELIVRD&to=" + b"1" * 2000
        answer = raw_request(client, "POST", "/dlr/generic", body=body, content_type=FORM, headers=headers)
    assert_envelope(answer)
    assert (answer.status, answer.code) == (413, 12)
    assert counts(db) == (0, 0, 0)


# --- ingest: odd but valid ---------------------------------------------------------------------------

ACCEPTED_ODDITIES = [
    get(b"id=h1&status=+delivrd+", "h1", "DELIVRD", id="status-case-and-spaces"),
    post(FORM, b"&&id=h1&&status=DELIVRD&&", "h1", "DELIVRD", id="form-empty-pairs"),
    post(
        FORM + "; charset=latin-1",
        b"id=caf%E9&status=DELIVRD",
        "café",
        "DELIVRD",
        id="form-latin-1-honoured",
    ),
    post(
        'Application/X-WWW-Form-URLEncoded; Charset="ISO-8859-1"',
        b"id=h1&status=DELIVRD",
        "h1",
        "DELIVRD",
        id="form-quoted-charset-mixed-case",
    ),
    post(
        FORM + "; charset=UTF-8",
        b"id=caf%C3%A9&status=DELIVRD",
        "café",
        "DELIVRD",
        id="form-utf-8-charset",
    ),
    post("application/json; charset=utf-8", js(report(id="h1")), "h1", "DELIVRD", id="json-utf-8-charset"),
    post(";", b"id=h1&status=DELIVRD", "h1", "DELIVRD", id="empty-media-type-sniffed-form"),
    post(None, b'  {"id": "h1", "status": "DELIVRD"}', "h1", "DELIVRD", id="sniffed-json"),
    post(
        FORM, b"id=h1&status=DELIVRD&junk" + b"[x]" * 10_000 + b"=1", "h1", "DELIVRD", id="deep-php-key-in-unused-field"
    ),
    post(FORM, b"id=h1&status=DELIVRD&segment=" + b"0" * 5000 + b"1", "h1", "DELIVRD", id="segment-5000-zeros-1"),
    post(JSON, js(report(id=12345)), "12345", "DELIVRD", id="json-int-id-as-text"),
    post(JSON, js(report(id="  h1 ")), "  h1 ", "DELIVRD", id="id-kept-exactly"),
    post(JSON, js(report(segment=2.0, segments=3)), "h1", "PDLIVRD", id="json-integral-float-segment"),
]


@pytest.mark.parametrize(("method", "query", "content_type", "body", "message_id", "status"), ACCEPTED_ODDITIES)
def test_odd_but_unambiguous_reports_are_accepted(
    client: TestClient,
    db: str,
    method: str,
    query: bytes,
    content_type: str | None,
    body: bytes,
    message_id: str,
    status: str,
) -> None:
    """Duplicate keys (the last wins, as PHP has it), declared charsets, sniffed bodies: applied, not kept."""
    answer = raw_request(client, method, "/dlr/generic", query, body, content_type)
    assert_envelope(answer)
    assert (answer.status, answer.code) == (200, 0), answer.body
    assert answer.data["id"] == message_id
    assert answer.data["status"] == status
    assert [r["id"] for r in fetch(db, "SELECT id FROM messages")] == [message_id]
    assert counts(db)[2] == 0


# --- read endpoints' query strings --------------------------------------------------------------------


def cursor(value: Any) -> bytes:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return b"cursor=" + base64.urlsafe_b64encode(raw).rstrip(b"=")


HOSTILE_READS = [
    # /messages?ids=
    pytest.param("/messages", b"ids=", 11, "ids", id="ids-empty"),
    pytest.param("/messages", b"ids=,,,", 11, "ids", id="ids-only-commas"),
    pytest.param("/messages", b"ids=" + b",".join(b"m%d" % i for i in range(101)), 12, "ids", id="ids-101"),
    pytest.param("/messages", b"ids[a]=x", 1, "ids[a]", id="ids-map"),
    pytest.param("/messages", b"ids=a%00b", 1, "ids", id="ids-nul"),
    pytest.param("/messages", b"ids=%FF", 1, "ids", id="ids-bad-utf8"),
    # /messages page: limits
    pytest.param("/messages", b"limit=0", 1, "limit", id="limit-0"),
    pytest.param("/messages", b"limit=-1", 1, "limit", id="limit-negative"),
    pytest.param("/messages", b"limit=abc", 1, "limit", id="limit-abc"),
    pytest.param("/messages", b"limit=1.5", 1, "limit", id="limit-decimal"),
    pytest.param("/messages", b"limit[]=5", 1, "limit[]", id="limit-list"),
    pytest.param("/messages", b"limit=1001", 12, "limit", id="limit-1001"),
    pytest.param("/messages", b"limit=1000000000", 12, "limit", id="limit-10-9"),
    # time range
    pytest.param("/messages", b"since=2025-01-02&until=2025-01-01", 12, "since", id="since-after-until"),
    pytest.param("/messages", b"since=2025-01-01&until=2025-01-01", 12, "since", id="since-equals-until"),
    pytest.param("/messages", b"since=yesterday", 1, "since", id="since-garbage"),
    pytest.param("/messages", b"until=1e300", 1, "until", id="until-1e300"),
    pytest.param("/messages", b"since=-99999999999", 1, "since", id="since-negative"),
    pytest.param("/messages", b"since=0001-01-01T00:00:00%2B14:00", 1, "since", id="since-year-1"),
    pytest.param("/messages", b"until=" + b"9" * 5000, 1, "until", id="until-5000-digits"),
    # filters
    pytest.param("/messages", b"status=NOPE", 1, "status", id="status-unknown"),
    pytest.param("/messages", b"status[]=DELIVRD", 1, "status[]", id="status-list"),
    pytest.param("/messages", b"campaign=" + b"c" * 100_000, 1, "campaign", id="campaign-100k"),
    pytest.param("/messages", b"to=" + b"1" * 65, 1, "to", id="to-65"),
    pytest.param("/messages", b"campaign=a%00", 1, "campaign", id="campaign-nul"),
    # cursors
    pytest.param("/messages", b"cursor=!!!", 12, "cursor", id="cursor-not-base64"),
    pytest.param("/messages", b"cursor=" + b"A" * 3000, 12, "cursor", id="cursor-3000-chars"),
    pytest.param("/messages", cursor(b"\xff\xfe"), 12, "cursor", id="cursor-not-utf8"),
    pytest.param("/messages", cursor([]), 12, "cursor", id="cursor-empty-list"),
    pytest.param("/messages", cursor(5), 12, "cursor", id="cursor-number"),
    pytest.param("/messages", cursor(["2025-01-01T00:00:00", "m1"]), 12, "cursor", id="cursor-naive-time"),
    pytest.param("/messages", cursor(["2025-01-01T00:00:00+00:00", 5]), 12, "cursor", id="cursor-id-not-text"),
    pytest.param("/messages", cursor(["2025-01-01T00:00:00+00:00", "m\x00"]), 12, "cursor", id="cursor-nul-id"),
    pytest.param("/messages", cursor(["2025-01-01T00:00:00+00:00", "m1", "x"]), 12, "cursor", id="cursor-3-items"),
    pytest.param("/messages", cursor([1, "m1"]), 12, "cursor", id="cursor-time-not-text"),
    # every query string: bad encodings and clashing keys
    pytest.param("/messages", b"campaign=%zz", 1, "campaign", id="messages-pct-zz"),
    pytest.param("/messages", b"campaign=%", 1, "campaign", id="messages-trailing-pct"),
    pytest.param("/messages", b"campaign=%4", 1, "campaign", id="messages-pct-one-digit"),
    pytest.param("/messages", b"campaign=\xff", 1, "campaign", id="messages-raw-ff"),
    pytest.param("/messages", b"campaign=a\x00", 1, "campaign", id="messages-raw-nul"),
    pytest.param("/messages", b"%FF=1", 1, "field name", id="messages-bad-key"),
    pytest.param("/messages", b"a[]=1&a[b]=2", 1, "a[b]", id="messages-php-clash"),
    # unknown and repeated parameters: refused, never ignored or last-wins
    pytest.param("/messages", b"x=1&" * 100_000, 1, "x", id="messages-100k-unknown-params"),
    pytest.param(
        "/messages", b"campaign=c&campaign=c&" * 10_000 + b"limit=5", 1, "campaign", id="messages-duplicate-keys"
    ),
    # /quarantine
    pytest.param("/quarantine", b"limit=0", 1, "limit", id="quarantine-limit-0"),
    pytest.param("/quarantine", b"limit=abc", 1, "limit", id="quarantine-limit-abc"),
    pytest.param("/quarantine", b"limit=1001", 12, "limit", id="quarantine-limit-1001"),
    pytest.param("/quarantine", b"dialect=" + b"d" * 300, 1, "dialect", id="quarantine-dialect-300"),
    pytest.param("/quarantine", b"dialect=%00", 1, "dialect", id="quarantine-dialect-nul"),
    pytest.param("/quarantine", b"dialect=%zz", 1, "dialect", id="quarantine-pct-zz"),
    pytest.param("/quarantine", b"dialect[]=generic", 1, "dialect[]", id="quarantine-dialect-list"),
    pytest.param("/quarantine", b"dialect=\xc3", 1, "dialect", id="quarantine-raw-bad-utf8"),
    pytest.param("/quarantine", b"x=1&" * 100_000, 1, "x", id="quarantine-100k-unknown-params"),
]


@pytest.mark.parametrize(("path", "query", "code", "field"), HOSTILE_READS)
def test_hostile_read_query_is_refused_in_the_envelope(
    client: TestClient, path: str, query: bytes, code: int, field: str
) -> None:
    """A bad read query string: code 1, 11 or 12 naming the parameter, never a 5xx."""
    assert_refused(raw_request(client, "GET", path, query), code, field)


@pytest.mark.parametrize(
    ("path", "query", "field"),
    [
        pytest.param("/messages", b"limit=" + b"1" + b"0" * 30, "limit", id="limit-10-30"),
        pytest.param("/quarantine", b"limit=" + b"1" + b"0" * 30, "limit", id="quarantine-limit-10-30"),
        pytest.param("/quarantine", b"cursor=abc", "cursor", id="quarantine-abc"),
        pytest.param("/quarantine", b"cursor=0", "cursor", id="quarantine-0"),
        pytest.param("/quarantine", b"cursor=-5", "cursor", id="quarantine-neg"),
    ],
)
def test_limits_and_bad_cursors_are_code_12(client: TestClient, path: str, query: bytes, field: str) -> None:
    """DESIGN §2: a page size past the maximum and a bad cursor are code 12, however far off they are."""
    assert_refused(raw_request(client, "GET", path, query), 12, field)


def test_deeply_nested_cursor_is_a_bad_cursor(client: TestClient) -> None:
    """A cursor that decodes to deeply nested JSON is a bad cursor (code 12), not a crash."""
    assert_refused(raw_request(client, "GET", "/messages", cursor(b"[" * 1500)), 12, "cursor")


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(["0001-01-01T00:00:00+14:00", "m1"], id="year-1-east"),
        pytest.param(["9999-12-31T23:59:59-14:00", "m1"], id="year-9999-west"),
        pytest.param(b'["2025-01-01T00:00:00+00:00", "\\ud800"]', id="lone-surrogate-id"),
    ],
)
def test_cursor_the_database_cannot_take_is_a_bad_cursor(client: TestClient, value: Any) -> None:
    """A cursor whose time cannot exist in UTC, or whose id is not text, is a bad cursor (code 12)."""
    assert_refused(raw_request(client, "GET", "/messages", cursor(value)), 12, "cursor")


@pytest.mark.parametrize(
    ("path", "query"),
    [
        pytest.param("/messages", b"ids=" + b"x" * 255, id="ids-one-long"),
        pytest.param("/messages", b"ids=" + b"a," * 50_000, id="ids-50k-copies-of-one"),
        pytest.param("/messages", b"status=delivrd&since=1764000000&until=2099-12-31", id="messages-filters"),
        pytest.param("/quarantine", b"cursor=99999999999&limit=1000", id="quarantine-cursor-11-digits"),
        pytest.param("/quarantine", b"limit=" + b"0" * 10_000 + b"5", id="quarantine-limit-10k-zeros-5"),
    ],
)
def test_long_but_valid_read_queries_answer(client: TestClient, path: str, query: bytes) -> None:
    """Long query strings of known parameters are read, not refused, and answer code 0."""
    answer = raw_request(client, "GET", path, query)
    assert_envelope(answer)
    assert (answer.status, answer.code) == (200, 0), answer.body


# --- properties: random bytes, random content types, random query strings -----------------------------

INGEST_TOKENS = [
    b"id=",
    b"status=",
    b"DELIVRD",
    b"PDLIVRD",
    b"delivrd",
    b"segment=",
    b"segments=",
    b"time=",
    b"to=",
    b"campaign=",
    b"error=",
    b"&",
    b"=",
    b"+",
    b"%",
    b"%zz",
    b"%4",
    b"%00",
    b"%FF",
    b"%C3%A9",
    b"%2B",
    b"[",
    b"]",
    b"[]",
    b"[a]",
    b"\x00",
    b"\xff",
    b"{",
    b"}",
    b"[",
    b",",
    b":",
    b'"id"',
    b'"status"',
    b'"DELIVRD"',
    b'"segment"',
    b'"time"',
    b"1",
    b"2",
    b"0",
    b"-1",
    b"1.5",
    b"1e400",
    b"NaN",
    b"Infinity",
    b'"\\ud800"',
    b'"\\u0000"',
    b"null",
    b"true",
    b"99999999999999999999",
    b"1764000000",
    b'"2025-11-24T16:00:00Z"',
    b" ",
]
CONTENT_TYPES = [
    None,
    FORM,
    JSON,
    "application/json; charset=utf-8",
    FORM + "; charset=latin-1",
    FORM + "; charset=bogus",
    "text/plain",
    "application/xml",
    "multipart/form-data",
    "application/problem+json",
    "",
    ";",
    "*/*",
]


def byte_soup(tokens: list[bytes]) -> st.SearchStrategy[bytes]:
    """Random bytes, or random joins of tokens that sometimes make a valid report: both ends of the space."""
    return st.one_of(
        st.binary(max_size=200),
        st.lists(st.one_of(st.sampled_from(tokens), st.binary(max_size=4)), max_size=24).map(b"".join),
    )


@hypothesis.settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "POST"]),
    query=byte_soup(INGEST_TOKENS),
    body=byte_soup(INGEST_TOKENS),
    content_type=st.one_of(st.sampled_from(CONTENT_TYPES), st.text(max_size=30).map(lambda t: t.encode("utf-8"))),
)
def test_random_ingest_requests_never_break_the_rules(
    client: TestClient, db: str, method: str, query: bytes, body: bytes, content_type: str | bytes | None
) -> None:
    """Whatever arrives: an envelope, no 5xx, and a refused request changes no message and is quarantined."""
    messages_before, _, kept_before = counts(db)
    answer = raw_request(client, method, "/dlr/generic", query, body, content_type)
    assert_envelope(answer)
    hypothesis.event(f"code {answer.code}")
    messages_after, _, kept_after = counts(db)
    if answer.code in (0, 98):
        assert answer.status in (200, 207)
        return
    assert (answer.status, answer.code) == (HTTP_FOR_CODE[answer.code], answer.code), answer.body
    assert messages_after == messages_before
    expected = len(answer.data["items"]) if answer.code == 99 else 1
    assert kept_after - kept_before == expected


READ_TOKENS = [
    b"ids=",
    b"limit=",
    b"cursor=",
    b"since=",
    b"until=",
    b"status=",
    b"campaign=",
    b"to=",
    b"dialect=",
    b"apiKey=",
    b"&",
    b"=",
    b",",
    b"%",
    b"%zz",
    b"%00",
    b"%FF",
    b"%2B",
    b"[",
    b"]",
    b"[]",
    b"\x00",
    b"\xff",
    b"0",
    b"1",
    b"-1",
    b"1001",
    b"abc",
    b"2025-01-01",
    b"1e300",
    b"DELIVRD",
    b"WyIyMDI1LTAxLTAxVDAwOjAwOjAwKzAwOjAwIiwibTEiXQ",
    b"W1tbW1tbW1s",
    b"99999999999",
    b"+",
]


@hypothesis.settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/messages", "/quarantine"]), query=byte_soup(READ_TOKENS))
def test_random_read_query_strings_answer_in_the_envelope(client: TestClient, path: str, query: bytes) -> None:
    """Any query string on a read endpoint: success, or code 1, 11 or 12 with HTTP 400, never a 5xx."""
    answer = raw_request(client, "GET", path, query)
    assert_envelope(answer)
    hypothesis.event(f"code {answer.code}")
    assert (answer.status, answer.code) in {(200, 0), (400, 1), (400, 11), (400, 12)}, answer.body


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["1", "2", "255", "256", "0", "-1", " 1 ", "1764000000", "2025-11-24T16:00:00Z", "PDLIVRD"]),
)
FIELD_VALUES = st.one_of(
    SCALARS,
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(min_size=1, max_size=3), st.text(max_size=3), max_size=2),
)
VALID_VALUES = {
    "id": ["h1", "h2", "Привіт 1+1"],
    "status": ["DELIVRD", "acceptd", " UNDELIV ", "PDLIVRD"],
    "segment": [1, 2, "2"],
    "segments": [2, 3, "3"],
    "time": [1764000000, "1764000000.5", "2025-11-24T16:00:00Z", "2025-11-24T18:00:00+02:00"],
    "to": ["+380501234567"],
    "campaign": ["spring sale"],
    "error": ["0x0B"],
}
# Each field valid half the time and anything the other half: both answers get exercised.
REPORTS = st.fixed_dictionaries(
    {name: st.one_of(st.sampled_from(VALID_VALUES[name]), FIELD_VALUES) for name in ("id", "status")},
    optional={
        name: st.one_of(st.sampled_from(VALID_VALUES[name]), FIELD_VALUES)
        for name in ("segment", "segments", "time", "to", "campaign", "error")
    },
)


def form_encode(data: dict[str, Any]) -> bytes:
    """`data` as the platform's form encoding: lists as `k[]`, maps as `k[name]`, None left out."""
    from urllib.parse import quote_plus

    pairs: list[tuple[str, str]] = []
    for key, value in data.items():
        if isinstance(value, list):
            pairs.extend((f"{key}[]", str(v)) for v in value)
        elif isinstance(value, dict):
            pairs.extend((f"{key}[{k}]", str(v)) for k, v in value.items())
        elif value is not None:
            pairs.append((key, str(value)))
    return "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in pairs).encode()


@hypothesis.settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=REPORTS, encoding=st.sampled_from(["json", "form", "get"]))
def test_random_field_values_are_applied_or_refused_whole(
    client: TestClient, db: str, data: dict[str, Any], encoding: str
) -> None:
    """Any mix of field values: applied (the message exists), or refused naming only real fields, kept, no change."""
    messages_before, _, kept_before = counts(db)
    if encoding == "json":
        answer = raw_request(client, "POST", "/dlr/generic", body=js(data), content_type=JSON)
    elif encoding == "form":
        answer = raw_request(client, "POST", "/dlr/generic", body=form_encode(data), content_type=FORM)
    else:
        answer = raw_request(client, "GET", "/dlr/generic", query=form_encode(data))
    assert_envelope(answer)
    hypothesis.event(f"code {answer.code}")
    messages_after, _, kept_after = counts(db)
    if answer.code == 0:
        assert answer.status == 200
        assert fetch(db, "SELECT 1 FROM messages WHERE id = $1", answer.data["id"])
        assert kept_after == kept_before
        return
    assert (answer.status, answer.code) in {(400, 1), (400, 11)}, answer.body
    # A value that cannot be decoded is named by its raw form key (`status[]`), anything else by its field.
    assert {name.partition("[")[0] for name in answer.data} <= {*FIELDS, "field name"}, answer.data
    assert messages_after == messages_before
    assert kept_after == kept_before + 1
