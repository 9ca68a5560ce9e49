"""Security: credentials, replayed webhooks, secrets in the open, and ids that look like SQL.

- A request without credentials or with wrong ones -- the webhook token, the API key, every sender's own
  signature (Twilio, Vonage, Mobizon, Plivo) and Standard Webhooks -- answers 401 (code 8) and leaves no
  trace: no message, no history row, nothing in the quarantine (even when its payload is also unreadable).
- A signed Standard Webhooks request outside its 5-minute window is refused (401, code 8); a replay of a seen
  `webhook-id` inside the window is acknowledged and not applied again, whatever it carries.
- A real `dlr-tracker serve` at LOG_LEVEL=debug, driven through good, bad, refused, failing and outage
  requests, never writes a token, API key, webhook secret or the database password into its log, its answers
  or `/metrics`.
- Ids and campaigns that look like SQL, or are odd (unicode, `%`, `_`, `/`, 255 characters), are stored and
  returned verbatim by every read endpoint.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit, urlunsplit

import httpx2
import pytest
from starlette.testclient import TestClient

from service.access import parse_api_keys
from service.app import create_app
from service.auth import standard_webhook_signature, whsec_key
from service.config import Secret, Settings
from service.dialects import DIALECTS, mobizon, plivo, twilio, vonage
from tests.processes import ServiceProcess, free_port
from tests.reliability.wire import Counts, Reply, check_answer, path_of, rows_of, send

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

TOKEN = "tok-Zq8vN3kLw2"
KANNEL_TOKEN = "tok-kannel-Hy5rT0pX"
API_KEYS = ("key-Vb7nM4cQ1s", "key-second-Ux2eW9")
WHSEC_BODY = base64.b64encode(b"reliability-suite-webhook-key-01").decode()
WHSEC = "whsec_" + WHSEC_BODY
OWN_SECRETS = {
    "twilio": "twilio-auth-Gh3jK8lP",
    "vonage": "vonage-sig-Qw4eR7tY",
    "mobizon": "mobizon-key-Ui9oP2aS",
    "plivo": "plivo-auth-Df6gH1jK",
}
OTHER_WHSEC = "whsec_" + base64.b64encode(b"someone-else's-key-entirely-0001").decode()
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def secure(settings: Settings) -> Settings:
    return replace(
        settings,
        webhook_token=Secret(TOKEN),
        webhook_tokens={"kannel": Secret(KANNEL_TOKEN)},
        api_keys=parse_api_keys(",".join(API_KEYS)),
        webhook_secret=Secret(WHSEC),
        webhook_secrets={name: Secret(value) for name, value in OWN_SECRETS.items()},
        sweep_interval=86400,
    )


@pytest.fixture
def secure_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(secure(settings))) as client:
        yield client


# --- a valid callback of each dialect, and ways to get its credentials wrong -------------------------------


@dataclass
class Call:
    method: str
    path: str
    query: bytes = b""
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def header_list(self) -> list[tuple[bytes, bytes]]:
        return [(k.lower().encode(), v.encode("latin-1")) for k, v in self.headers.items()]


def standard_webhook(body: bytes, webhook_id: str, when: float | None = None, secret: str = WHSEC) -> dict[str, str]:
    stamp = str(int(time.time() if when is None else when))
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + standard_webhook_signature(whsec_key(secret), webhook_id, stamp, body),
    }


def payload(dialect: str, message_id: str, *, broken: bool = False) -> Call:
    """A report of `dialect` in its sender's format, unsigned (`broken`: one the parser refuses)."""
    status = "NOPE" if broken else None
    if dialect == "generic":
        return Call("POST", "/dlr/generic", body=json.dumps({"id": message_id, "status": status or "DELIVRD"}).encode(),
                    headers={"content-type": JSON})  # fmt: skip
    if dialect == "kannel":
        return Call("GET", "/dlr/kannel", query=urlencode({"id": message_id, "type": "x" if broken else "1"}).encode())
    if dialect == "jasmin":
        body = urlencode({"id": "" if broken else message_id, "message_status": "DELIVRD", "level": "2"}).encode()
        return Call("POST", "/dlr/jasmin", body=body, headers={"content-type": FORM})
    if dialect == "smpp":
        text = "garbage" if broken else f"id:{message_id} sub:001 dlvrd:001 stat:DELIVRD err:000"
        return Call("POST", "/dlr/smpp", body=text.encode(), headers={"content-type": "text/plain"})
    if dialect == "infobip":
        report = {"messageId": message_id, "status": {"groupId": 3, "id": 5, "name": "DELIVERED_TO_HANDSET"}}
        body = json.dumps({"results": "x" if broken else [report]}).encode()
        return Call("POST", "/dlr/infobip", body=body, headers={"content-type": JSON})
    if dialect == "twilio":
        body = urlencode({"MessageSid": message_id, "MessageStatus": status or "delivered"}).encode()
        return Call("POST", "/dlr/twilio", body=body, headers={"content-type": FORM})
    if dialect == "vonage":
        params = {"messageId": message_id, "status": status or "delivered", "timestamp": str(int(time.time()))}
        return Call("POST", "/dlr/vonage", body=urlencode(params).encode(), headers={"content-type": FORM})
    if dialect == "mobizon":
        event = {
            "eventId": f"e-{message_id}",
            "eventType": "sms-delivery-report",
            "eventCreateTs": "2026-01-15 11:42:28",
            "attempt": 1,
            "data": {"messageId": message_id, "status": status or "DELIVRD"},
        }
        return Call("POST", "/dlr/mobizon", body=json.dumps(event).encode(), headers={"content-type": JSON})
    if dialect == "plivo":
        body = urlencode({"MessageUUID": message_id, "Status": status or "delivered"}).encode()
        return Call("POST", "/dlr/plivo", body=body, headers={"content-type": FORM})
    raise AssertionError(dialect)


def signed(call: Call, dialect: str, *, secret: str | None = None, event: str = "evt") -> Call:
    """`call` signed as its sender signs (with `secret`, or the right one), Standard Webhooks for the others."""
    headers = dict(call.headers)
    body, url = call.body, "http://testserver" + call.path + ("?" + call.query.decode() if call.query else "")
    own = secret if secret is not None else OWN_SECRETS.get(dialect)
    if dialect == "twilio":
        headers[twilio.SIGNATURE_HEADER] = twilio.signature(url, parse_qsl(body.decode()), str(own))
    elif dialect == "vonage":
        params = dict(parse_qsl(body.decode()))
        params["sig"] = vonage.signature(params, str(own), "sha256")
        body = urlencode(params).encode()
    elif dialect == "mobizon":
        event = json.loads(body)
        event["sign"] = mobizon.sign(str(event["eventId"]), str(event["attempt"]), event["eventCreateTs"], str(own))
        body = json.dumps(event).encode()
    elif dialect == "plivo":
        nonce = "nonce-12345"
        headers[plivo.NONCE_HEADER] = nonce
        headers[plivo.SIGNATURE_HEADERS[0]] = plivo.signature_v2(url, nonce, str(own))
    else:
        headers.update(standard_webhook(body, event, secret=secret or WHSEC))
    return replace(call, body=body, headers=headers)


def with_token(call: Call, token: str | None, where: str = "header") -> Call:
    if token is None:
        return call
    if where == "query":
        query = call.query + (b"&" if call.query else b"") + b"token=" + quote_plus(token).encode()
        return replace(call, query=query)
    return replace(call, headers={**call.headers, "authorization": f"Bearer {token}"})


def token_for(dialect: str) -> str:
    return KANNEL_TOKEN if dialect == "kannel" else TOKEN


def wrong_ways(dialect: str, message_id: str) -> dict[str, Call]:
    """Every way this suite gets a dialect's credentials wrong, each otherwise a valid (signed) callback."""
    good_token = token_for(dialect)
    base = payload(dialect, message_id)
    ways = {
        "no token": signed(base, dialect),
        "wrong token": with_token(signed(base, dialect), good_token + "x"),
        "token of another dialect": with_token(signed(base, dialect), TOKEN if dialect == "kannel" else KANNEL_TOKEN),
        "token in another case": with_token(signed(base, dialect), good_token.upper()),
        "empty token": with_token(signed(base, dialect), "", where="query"),
        "no signature": with_token(base, good_token),
        "signed with another secret": with_token(
            signed(base, dialect, secret=OTHER_WHSEC if dialect not in OWN_SECRETS else "not-the-secret"), good_token
        ),
        "unreadable payload, no token": signed(payload(dialect, message_id, broken=True), dialect),
        "unreadable payload, no signature": with_token(payload(dialect, message_id, broken=True), good_token),
    }
    tampered = signed(base, dialect)
    if dialect == "vonage":
        tampered = replace(tampered, body=tampered.body.replace(b"status=delivered", b"status=rejected"))
    elif dialect == "mobizon":  # its sign covers eventId, attempt and eventCreateTs (not the data)
        tampered = replace(tampered, body=tampered.body.replace(b'"attempt": 1', b'"attempt": 2'))
    elif dialect == "twilio":
        tampered = replace(tampered, body=tampered.body + b"&ErrorCode=30003")
    elif dialect == "plivo":  # its signature covers the URL and the nonce
        tampered = replace(tampered, headers={**tampered.headers, plivo.NONCE_HEADER: "another-nonce"})
    else:
        tampered = replace(tampered, body=tampered.body + b" ")
    ways["signed, then changed"] = with_token(tampered, good_token)
    return ways


def call(client: TestClient, c: Call) -> Reply:
    path, raw_path = path_of(*c.path.strip("/").split("/"))
    return send(client, c.method, path, raw_path=raw_path, query=c.query, body=c.body, headers=c.header_list())


def test_requests_without_the_right_credentials_store_nothing(secure_client: TestClient, db: str) -> None:
    """Every dialect with token and signatures configured: a request missing or getting wrong the token, the
    sender's own signature (Twilio, Vonage, Mobizon, Plivo) or the Standard Webhooks one answers 401 code 8 and
    stores nothing -- no message, no history row, no quarantine entry, even when its payload is unreadable --
    while the same callback with the right credentials is applied. Reads and registration likewise need the
    API key: without it or with a wrong one, 401 and nothing changes (a replay leaves its payload quarantined)."""
    refused = Counter[str]()
    with rows_of(secure_client, db) as rows:
        for dialect in sorted(DIALECTS):
            for how, bad in wrong_ways(dialect, f"sec-{dialect}").items():
                before = rows.counts()
                reply = call(secure_client, bad)
                envelope = check_answer(reply)
                assert envelope is not None
                assert (reply.status, envelope["code"]) == (401, 8), (dialect, how, envelope)
                assert rows.counts() == before, (dialect, how, "a refused request left a trace")
                refused[dialect] += 1
            # The token in the URL, except for Twilio, whose signature covers the URL: there, in the header.
            where = "header" if dialect == "twilio" else "query"
            good = with_token(signed(payload(dialect, f"sec-{dialect}"), dialect), token_for(dialect), where)
            reply = call(secure_client, good)
            check_answer(reply, plain={b"ACK/Jasmin", b""})
            assert reply.status == 200, (dialect, reply.body)
            assert rows.fetch("SELECT 1 FROM messages WHERE id = $1", f"sec-{dialect}"), dialect
        assert rows.counts().quarantine == 0

        # A quarantined payload for the replay checks: right credentials, unreadable report.
        kept = with_token(signed(payload("generic", "sec-q", broken=True), "generic", event="evt-q"), TOKEN)
        assert call(secure_client, kept).status == 400
        [(quarantine_id,)] = [(r["id"],) for r in rows.fetch("SELECT id FROM quarantine")]

        reads = [
            Call("GET", "/messages", query=b"ids=sec-generic"),
            Call("GET", "/messages", query=b"campaign=x"),
            Call("GET", "/messages/sec-generic"),
            Call("GET", "/messages/sec-generic/history"),
            Call("GET", "/campaigns/x"),
            Call("GET", "/quarantine"),
            Call("POST", f"/quarantine/{quarantine_id}/replay"),
            Call("POST", "/messages", body=b'{"id": "sec-new"}', headers={"content-type": JSON}),
        ]
        wrong_keys: list[tuple[str, dict[str, str], bytes]] = [
            ("no key", {}, b""),
            ("wrong key", {"authorization": "Bearer key-nope"}, b""),
            ("wrong key in the query", {}, b"apiKey=key-nope"),
            ("key in another case", {"authorization": f"Bearer {API_KEYS[0].upper()}"}, b""),
            ("key as Basic", {"authorization": f"Basic {API_KEYS[0]}"}, b""),
            ("webhook token as key", {"authorization": f"Bearer {TOKEN}"}, b""),
        ]
        for read in reads:
            for how, headers, query in wrong_keys:
                before = rows.counts()
                bad = replace(
                    read, headers={**read.headers, **headers}, query=b"&".join(q for q in (read.query, query) if q)
                )
                reply = call(secure_client, bad)
                envelope = check_answer(reply)
                assert envelope is not None
                assert (reply.status, envelope["code"]) == (401, 8), (read.path, how, envelope)
                assert rows.counts() == before, (read.path, how, "a refused request changed data")
                refused["api"] += 1
            ok = call(secure_client, replace(read, headers={**read.headers, "authorization": f"Bearer {API_KEYS[1]}"}))
            assert ok.status in (200, 400, 404), (read.path, ok.body)  # the key works (a replay may still fail)
        assert rows.fetch("SELECT 1 FROM quarantine WHERE id = $1", quarantine_id), "an unauthenticated replay took it"
        assert rows.fetch("SELECT 1 FROM messages WHERE id = 'sec-new'"), "the registration with the key was stored"
    print(
        f"\nRELIABILITY security credentials: refused={sum(refused.values())} (webhooks="
        f"{sum(v for k, v in refused.items() if k != 'api')} across {len(DIALECTS)} dialects, api={refused['api']})"
        " stored=0 quarantined=0"
    )


def test_standard_webhooks_replays(secure_client: TestClient, db: str) -> None:
    """A signed Standard Webhooks request older or newer than 5 minutes is refused (401 code 8) and leaves no trace;
    a replay of a seen `webhook-id` inside the window is acknowledged and not applied again -- byte for byte, or
    re-signed with other data for the same message; a signed batch's replay applies none of its items again."""
    auth = {"authorization": f"Bearer {TOKEN}"}

    def post(body: bytes, headers: dict[str, str]) -> Reply:
        c = Call("POST", "/dlr/generic", body=body, headers={"content-type": JSON, **auth, **headers})
        return call(secure_client, c)

    with rows_of(secure_client, db) as rows:
        body = b'{"id": "rp-1", "status": "ACCEPTD"}'
        for offset in (-301, 301, -3600, -86400 * 365):
            before = rows.counts()
            reply = post(body, standard_webhook(body, f"evt-old{offset}", time.time() + offset))
            envelope = check_answer(reply)
            assert envelope is not None
            assert (reply.status, envelope["code"]) == (401, 8), (offset, envelope)
            assert rows.counts() == before, offset
        inside = standard_webhook(body, "evt-1", time.time() - 290)
        first = post(body, inside)
        assert first.json["data"] == {"id": "rp-1", "status": "ACCEPTD", "applied": True, "reason": None}
        before = rows.counts()
        again = post(body, inside)  # the very same request, as a sender's retry or an attacker's replay
        assert (again.status, again.json["data"]["applied"], again.json["data"]["reason"]) == (200, False, "duplicate")
        other = b'{"id": "rp-1", "status": "DELIVRD"}'
        changed = post(other, standard_webhook(other, "evt-1"))  # same event id, other data
        assert (changed.status, changed.json["data"]["applied"]) == (200, False), changed.json
        assert rows.counts() == before, "a replay added a row"
        assert rows.fetch("SELECT status FROM messages WHERE id = 'rp-1'")[0]["status"] == "ACCEPTD"

        batch = b'[{"id": "rp-2", "status": "ACCEPTD"}, {"id": "rp-3", "status": "DELIVRD"}]'
        headers = standard_webhook(batch, "evt-batch")
        assert [i["applied"] for i in post(batch, headers).json["data"]["items"]] == [True, True]
        before = rows.counts()
        replayed = post(batch, headers)
        assert [i["applied"] for i in replayed.json["data"]["items"]] == [False, False]
        assert rows.counts() == before
        assert rows.counts().quarantine == 0
    print("\nRELIABILITY security replay: outside window refused=4/4, replays applied again=0/3")


# --- secrets in the open: a real service at debug level --------------------------------------------------


def with_password(dsn: str, password: str) -> str:
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    host = parts.netloc.rpartition("@")[2]  # as given: empty when the server is reached over a socket
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


DB_PASSWORD = "dbpass-Kx93mWq7"


def secret_values() -> dict[str, str]:
    return {
        "DLR_WEBHOOK_TOKEN": TOKEN,
        "DLR_WEBHOOK_TOKEN_KANNEL": KANNEL_TOKEN,
        "DLR_API_KEYS[0]": API_KEYS[0],
        "DLR_API_KEYS[1]": API_KEYS[1],
        "DLR_WEBHOOK_SECRET": WHSEC,
        "DLR_WEBHOOK_SECRET (key)": WHSEC_BODY,
        **{f"DLR_WEBHOOK_SECRET_{k.upper()}": v for k, v in OWN_SECRETS.items()},
        "DATABASE_URL password": DB_PASSWORD,
    }


def leaks(text: str) -> list[str]:
    lowered = text.lower()
    return [name for name, value in secret_values().items() if value.lower() in lowered]


def test_secrets_stay_out_of_logs_answers_and_metrics(tmp_path: Path, db: str, database_outage: Any) -> None:
    """A real `dlr-tracker serve` at LOG_LEVEL=debug with every secret set (tokens, API keys, webhook secrets, a
    password in DATABASE_URL) serves good, unauthenticated, refused, quarantined, oversized, crashing and
    outage-time requests -- with tokens and keys in URLs too -- then stops; neither its output, nor any answer
    (body or header), nor `/metrics` contains a secret. A service that cannot reach its database at start does
    not print the password either."""
    env = {
        "DATABASE_URL": with_password(db, DB_PASSWORD),
        "LOG_LEVEL": "debug",
        "DLR_WEBHOOK_TOKEN": TOKEN,
        "DLR_WEBHOOK_TOKEN_KANNEL": KANNEL_TOKEN,
        "DLR_API_KEYS": ",".join(API_KEYS),
        "DLR_WEBHOOK_SECRET": WHSEC,
        **{f"DLR_WEBHOOK_SECRET_{k.upper()}": v for k, v in OWN_SECRETS.items()},
        "DLR_DB_TIMEOUT": "1",
        "DLR_SWEEP_INTERVAL": "1",
    }
    service = ServiceProcess(tmp_path, env=env, name="secrets")
    answers: list[tuple[str, str]] = []
    try:
        service.wait_ready()
        with httpx2.Client(base_url=service.url, timeout=10) as http:

            def go(c: Call, headers: dict[str, str] | None = None) -> httpx2.Response:
                url = c.path + ("?" + c.query.decode() if c.query else "")
                try:
                    r = http.request(c.method, url, content=c.body, headers={**c.headers, **(headers or {})})
                except httpx2.TransportError:  # a connection the server closed (after a 500, a 413): once more
                    r = http.request(c.method, url, content=c.body, headers={**c.headers, **(headers or {})})
                answers.append((c.path, f"{r.status_code} {dict(r.headers)} {r.text}"))
                return r

            key = {"authorization": f"Bearer {API_KEYS[0]}"}
            for dialect in sorted(DIALECTS):
                base = payload(dialect, f"leak-{dialect}")
                go(base)  # no credentials
                go(with_token(signed(base, dialect, secret="wrong-secret" if dialect in OWN_SECRETS else OTHER_WHSEC),
                              token_for(dialect), "query"))  # fmt: skip
                # A signature over the URL (Twilio, Plivo) covers scheme, host and port as received.
                good = signed(payload(dialect, f"leak-{dialect}"), dialect)
                if dialect in ("twilio", "plivo"):
                    good = _resigned_for(good, dialect, service.url)
                assert go(with_token(good, token_for(dialect))).status_code == 200, (dialect, answers[-1][1])
                go(with_token(signed(payload(dialect, "leak-bad", broken=True), dialect), token_for(dialect), "query"))
            go(Call("POST", "/dlr/generic", query=f"token={TOKEN}".encode(), body=b"x" * (1024 * 1024 + 1),
                    headers={"content-type": FORM}))  # fmt: skip
            for query in (f"apiKey={API_KEYS[1]}", "apiKey=wrong", ""):
                go(Call("GET", "/messages", query=f"ids=leak-generic&{query}".encode()))
                go(Call("GET", "/quarantine", query=query.encode()))
            go(Call("GET", "/messages/leak-generic/history"), key)
            go(Call("GET", "/campaigns/none"), key)
            go(Call("GET", "/messages/a%00b", query=f"apiKey={API_KEYS[0]}".encode()))  # a known 500: logs a traceback
            go(Call("DELETE", "/messages", query=f"apiKey={API_KEYS[0]}".encode()))
            with database_outage():
                for _ in range(3):
                    go(Call("GET", "/messages/leak-generic", query=f"apiKey={API_KEYS[1]}".encode()))
                    go(
                        with_token(
                            signed(payload("generic", "leak-outage"), "generic", event="evt-out"), TOKEN, "query"
                        )
                    )
                    go(Call("GET", "/readyz"))
            service.wait_ready()
            metrics = go(Call("GET", "/metrics")).text
            go(Call("GET", "/openapi.json"))
    finally:
        service.stop(signal.SIGTERM)
    log = service.log.read_text(errors="replace")
    lines = log.count("\n")
    assert "debug" in log, "the service did not log at debug level"

    # A service that cannot reach its database at start: the password stays out of what it prints too.
    closed = with_password(f"postgresql://dlr@127.0.0.1:{free_port()}/nowhere", DB_PASSWORD)
    broken = ServiceProcess(tmp_path, env={**env, "DATABASE_URL": closed}, name="unreachable")
    try:
        broken.proc.wait(20)  # it gives up at once; if it kept retrying, what it printed so far is checked
    except subprocess.TimeoutExpired:
        pass
    finally:
        broken.stop(signal.SIGKILL)
    failed_start = broken.log.read_text(errors="replace")

    # `GET /quarantine` shows a quarantined request's query string, token and all: a known leak pinned by
    # test_quarantine_keeps_no_webhook_token, left out here so that this test watches everything else.
    found = {
        "log": leaks(log),
        "answers": leaks("\n".join(text for path, text in answers if path != "/quarantine")),
        "metrics": leaks(metrics),
        "failed start": leaks(failed_start),
    }
    print(
        f"\nRELIABILITY security secrets: leaked={sum(map(len, found.values()))} (log lines={lines},"
        f" answers={len(answers)}, metrics bytes={len(metrics)}, failed-start lines={failed_start.count(chr(10))})"
    )
    assert not any(found.values()), found


def _resigned_for(c: Call, dialect: str, base_url: str) -> Call:
    """Twilio and Plivo sign the URL they call: sign it for the real service's host and port."""
    url = base_url + c.path
    headers = dict(c.headers)
    if dialect == "twilio":
        headers[twilio.SIGNATURE_HEADER] = twilio.signature(url, parse_qsl(c.body.decode()), OWN_SECRETS["twilio"])
    else:
        headers[plivo.SIGNATURE_HEADERS[0]] = plivo.signature_v2(url, headers[plivo.NONCE_HEADER], OWN_SECRETS["plivo"])
    return replace(c, headers=headers)


def test_quarantine_keeps_no_webhook_token(secure_client: TestClient, db: str) -> None:
    """A refused payload whose sender put the webhook token in the URL (as Kannel's dlr-url does) is quarantined
    without the token: neither the row nor `GET /quarantine` holds it."""
    broken = with_token(
        signed(payload("kannel", "tok-1", broken=True), "kannel", event="evt-tok"), KANNEL_TOKEN, "query"
    )
    assert call(secure_client, broken).status == 400
    listing = call(secure_client, Call("GET", "/quarantine", headers={"authorization": f"Bearer {API_KEYS[0]}"}))
    assert listing.status == 200, listing.body
    assert listing.json["data"]["items"], listing.body
    with rows_of(secure_client, db) as rows:
        stored = b"".join(bytes(r["query"]) for r in rows.fetch("SELECT query FROM quarantine"))
    assert KANNEL_TOKEN.encode() not in stored
    assert KANNEL_TOKEN not in listing.body.decode()


# --- ids that look like SQL ------------------------------------------------------------------------------

ODD_IDS = [
    "'; DROP TABLE messages;--",
    "x' OR '1'='1",
    "Robert'); DROP TABLE history;--",
    "$1",
    "%",
    "_",
    "\\",
    '"quoted"',
    "a/b",
    "a?b#c&d=e",
    "a%2Fb",
    " padded ",
    "+plus+",
    "0042",
    "Привіт, світ",
    "😀 émoji é",  # a precomposed é and an e with a combining accent
    "مرحبا",
    "x" * 255,
    "я" * 255,
]
ODD_CAMPAIGNS = ["'; DROP TABLE messages;--", "x' OR '1'='1", "$1", "%", "_", "Кампанія ☀", "c" * 255]


def test_sql_looking_and_odd_ids_are_kept_verbatim(settings: Settings, db: str) -> None:
    """Ids and campaigns such as `'; DROP TABLE messages;--`, `x' OR '1'='1`, `$1`, `%`, `_`, unicode and
    255-character ones are stored exactly, and every read endpoint returns them exactly: `/messages/{id}`,
    `/messages/{id}/history`, `/messages?ids=`, `/messages?campaign=` (no wildcard: `%` matches only `%`),
    `/campaigns/{c}`; a refused report with such an id is shown verbatim by `/quarantine`."""
    json_type = [(b"content-type", JSON.encode())]
    form_type = [(b"content-type", FORM.encode())]
    with TestClient(create_app(replace(settings, sweep_interval=86400))) as client, rows_of(client, db) as rows:
        campaign_of = {mid: ODD_CAMPAIGNS[i % len(ODD_CAMPAIGNS)] for i, mid in enumerate(ODD_IDS)}
        registered = send(
            client,
            "POST",
            "/messages",
            body=json.dumps([{"id": m, "campaign": c, "to": "+1"} for m, c in campaign_of.items()]).encode(),
            headers=json_type,
        )
        assert registered.status == 200, registered.body
        for mid in ODD_IDS:
            reported = send(
                client,
                "POST",
                "/dlr/generic",
                body=urlencode({"id": mid, "status": "DELIVRD"}).encode(),
                headers=form_type,
            )
            assert (reported.status, reported.json["data"]["id"]) == (200, mid), reported.body
        checked = 0
        for mid, campaign in campaign_of.items():
            assert [r["campaign"] for r in rows.fetch("SELECT campaign FROM messages WHERE id = $1", mid)] == [campaign]
            path, raw = path_of("messages", mid)
            one = send(client, "GET", path, raw_path=raw).json["data"]
            assert (one["id"], one["campaign"], one["status"]) == (mid, campaign, "DELIVRD"), one
            path, raw = path_of("messages", mid, "history")
            history = send(client, "GET", path, raw_path=raw)
            assert history.status == 200, history.body
            assert history.json["data"]["items"][-1]["status"] == "DELIVRD", history.body
            if "," not in mid:  # a comma separates ids in `ids=`
                many = send(client, "GET", "/messages", query=b"ids=" + quote_plus(mid).encode()).json["data"]
                assert ([i["id"] for i in many["items"]], many["not_found"]) == ([mid], []), many
            checked += 1
        for campaign in ODD_CAMPAIGNS:
            members = sorted(m for m, c in campaign_of.items() if c == campaign)
            listed = send(client, "GET", "/messages", query=b"limit=1000&campaign=" + quote_plus(campaign).encode())
            assert sorted(i["id"] for i in listed.json["data"]["items"]) == members, (campaign, listed.body)
            assert {i["campaign"] for i in listed.json["data"]["items"]} == {campaign}
            path, raw = path_of("campaigns", campaign)
            stats = send(client, "GET", path, raw_path=raw).json["data"]
            assert (stats["campaign"], stats["total"]) == (campaign, len(members)), stats
        refused = json.dumps({"id": "'; DROP TABLE quarantine;--", "status": "NOPE"}, ensure_ascii=False)
        assert send(client, "POST", "/dlr/generic", body=refused.encode(), headers=json_type).status == 400
        [kept] = send(client, "GET", "/quarantine").json["data"]["items"]
        assert kept["body"] == refused
        assert rows.counts() == Counts(len(ODD_IDS), len(ODD_IDS), 1), "every table is there, with every row"
    print(
        f"\nRELIABILITY security odd ids: ids={checked}/{len(ODD_IDS)} campaigns={len(ODD_CAMPAIGNS)}"
        " verbatim on /messages/{id}, /history, ?ids=, ?campaign=, /campaigns/{c}, /quarantine"
    )
