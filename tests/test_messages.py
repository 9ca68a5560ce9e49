"""Registration and the read API: `/messages`, `/campaigns`, `/quarantine`, API keys, readiness."""

from __future__ import annotations

from dataclasses import replace

import pytest
from starlette.testclient import TestClient

from service.access import parse_api_keys
from service.app import create_app
from service.config import Secret, Settings
from tests.conftest import fetch, make_settings


def report(client: TestClient, **fields: object) -> dict:  # type: ignore[type-arg]
    response = client.post("/dlr/generic", json=fields)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_register_then_reports_keep_metadata_and_statuses(client: TestClient) -> None:
    """A registration starts at NEW; reports move it; registering again updates metadata, never status."""
    created = client.post(
        "/messages",
        json={
            "id": "r1",
            "to": "380501112233",
            "campaign": "c1",
            "segments": 2,
            "sent_at": "2026-11-25T10:00:00Z",
            "text": "hello",
        },
    )
    assert created.json() == {"code": 0, "data": {"id": "r1", "status": "NEW", "created": True}, "message": ""}
    report(client, id="r1", status="DELIVRD", segment=1)
    again = client.post("/messages", json={"id": "r1", "campaign": "c2"}).json()["data"]
    assert again == {"id": "r1", "status": "PDLIVRD", "created": False}
    data = client.get("/messages/r1").json()["data"]
    assert data["campaign"] == "c2"
    assert data["to"] == "380501112233"
    assert data["segments_total"] == 2
    assert data["sent_at"].startswith("2026-11-25T10:00:00")
    assert data["expires_at"].startswith("2026-11-26T10:00:00")


def test_registration_after_reports_fills_metadata_and_keeps_status(client: TestClient) -> None:
    """Reports may arrive before the registration: it fills in the metadata and keeps the statuses."""
    report(client, id="early", status="DELIVRD")
    data = client.post("/messages", json={"id": "early", "campaign": "late", "segments": 1}).json()["data"]
    assert data == {"id": "early", "status": "DELIVRD", "created": False}
    assert client.get("/messages/early").json()["data"]["campaign"] == "late"


def test_reregistration_moves_the_deadline_while_open(client: TestClient) -> None:
    """A new sent_at moves expires_at while the message is open, and not once it is final."""
    client.post("/messages", json={"id": "d1", "sent_at": "2026-11-25T10:00:00Z"})
    client.post("/messages", json={"id": "d1", "sent_at": "2026-11-25T12:00:00Z"})
    assert client.get("/messages/d1").json()["data"]["expires_at"].startswith("2026-11-26T12:00:00")
    report(client, id="d1", status="DELIVRD")
    client.post("/messages", json={"id": "d1", "sent_at": "2026-11-25T20:00:00Z"})
    assert client.get("/messages/d1").json()["data"]["expires_at"].startswith("2026-11-26T12:00:00")


def test_mass_registration_answers_per_item(client: TestClient, db: str) -> None:
    """An array registers many at once; a bad item fails alone with code 98."""
    response = client.post("/messages", json=[{"id": "m1"}, {"id": "m2", "segments": 0}, {"id": "m3"}])
    assert response.status_code == 207
    items = response.json()["data"]["items"]
    assert [i["code"] for i in items] == [0, 1, 0]
    assert items[1]["errors"] == {"segments": "must be from 1 to 255"}
    assert [r["id"] for r in fetch(db, "SELECT id FROM messages ORDER BY id")] == ["m1", "m3"]


def test_registration_validation(client: TestClient) -> None:
    """A registration without id is code 11 naming it; a bad value is code 1 naming the field."""
    missing = client.post("/messages", json={"to": "1"})
    assert (missing.status_code, missing.json()["code"], missing.json()["data"]) == (400, 11, {"id": "required"})
    bad = client.post("/messages", json={"id": "x", "sent_at": "yesterday"})
    assert (bad.status_code, bad.json()["code"]) == (400, 1)
    assert "sent_at" in bad.json()["data"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"id=f1&segments=2"),
        ("text/plain", b'{"id": "f1"}'),
        (None, b"id=f1&segments=2"),  # no Content-Type and no `{` or `[`: a form, as curl -d sends
    ],
)
def test_registration_is_json_only(client: TestClient, db: str, content_type: str | None, body: bytes) -> None:
    """POST /messages takes JSON (an object or an array; without a Content-Type a body starting `{` or `[`):
    a form or any other body is code 6 (HTTP 415) naming the content type, and registers nothing."""
    headers = {"content-type": content_type} if content_type else {}
    refused = client.post("/messages", content=body, headers=headers)
    assert (refused.status_code, refused.json()["code"]) == (415, 6), refused.text
    assert list(refused.json()["data"]) == ["content-type"]
    assert fetch(db, "SELECT count(*) AS n FROM messages")[0]["n"] == 0
    assert client.post("/messages", content=b'{"id": "f1"}').status_code == 200
    assert (
        client.post("/messages", content=b'[{"id": "f2"}]', headers={"content-type": "application/vnd.x+json"}).json()[
            "code"
        ]
        == 0
    )


def test_history_oldest_first_with_sources_and_times(client: TestClient) -> None:
    """History lists every stored event oldest first with its event time and source."""
    report(client, id="h", status="ACCEPTD", time="2026-11-25T10:00:00Z")
    report(client, id="h", status="DELIVRD", time="2026-11-25T10:00:05Z")
    items = client.get("/messages/h/history").json()["data"]["items"]
    assert [(i["status"], i["event_time"][:19], i["source"]) for i in items] == [
        ("ACCEPTD", "2026-11-25T10:00:00", "generic"),
        ("DELIVRD", "2026-11-25T10:00:05", "generic"),
    ]


def test_many_ids_at_once(client: TestClient) -> None:
    """`?ids=` answers the found messages in the order asked and lists the rest as not_found."""
    report(client, id="a", status="ACCEPTD")
    report(client, id="b", status="DELIVRD")
    data = client.get("/messages?ids=b,zz,a").json()["data"]
    assert [i["id"] for i in data["items"]] == ["b", "a"]
    assert data["not_found"] == ["zz"]
    too_many = client.get("/messages?ids=" + ",".join(str(i) for i in range(101)))
    assert (too_many.status_code, too_many.json()["code"]) == (400, 12)
    # `ids` is a lookup, not a listing: a filter next to it would be silently ignored, so it is refused.
    mixed = client.get("/messages?ids=a,b&status=DELIVRD&limit=5")
    assert (mixed.status_code, mixed.json()["code"]) == (400, 1)
    assert set(mixed.json()["data"]) == {"status", "limit"}
    assert client.get("/messages?ids=a&status=&cursor=").json()["data"]["items"][0]["id"] == "a"


def test_list_filters_and_keyset_pagination(client: TestClient) -> None:
    """Pages follow next_cursor without gaps or repeats, newest first; filters combine."""
    for i in range(7):
        client.post("/messages", json={"id": f"p{i}", "campaign": "cp", "sent_at": f"2026-11-25T10:0{i}:00Z"})
    client.post("/messages", json={"id": "other", "campaign": "x"})
    report(client, id="p3", status="DELIVRD")
    seen, cursor = [], None
    while True:
        url = "/messages?campaign=cp&limit=3" + (f"&cursor={cursor}" if cursor else "")
        data = client.get(url).json()["data"]
        seen += [i["id"] for i in data["items"]]
        cursor = data["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"p{i}" for i in range(6, -1, -1)]
    delivered = client.get("/messages?campaign=cp&status=DELIVRD").json()["data"]["items"]
    assert [i["id"] for i in delivered] == ["p3"]
    window = client.get("/messages?since=2026-11-25T10:02:00Z&until=2026-11-25T10:04:00Z").json()["data"]
    assert [i["id"] for i in window["items"]] == ["p3", "p2"]
    bad = client.get("/messages?cursor=not-a-cursor")
    assert (bad.status_code, bad.json()["code"]) == (400, 12)
    assert client.get("/messages?limit=5000").json()["code"] == 12


def test_campaign_and_status_pages_follow_the_cursor(client: TestClient) -> None:
    """A campaign listed by status (its keys read from the campaign index first, then the rows) pages newest
    first without gaps or repeats, and a status the campaign has none of gives an empty page."""
    for i in range(9):
        client.post("/messages", json={"id": f"s{i}", "campaign": "cs", "sent_at": f"2026-11-25T10:0{i}:00Z"})
        report(client, id=f"s{i}", status="DELIVRD" if i % 2 else "UNDELIV")
    seen, cursor = [], None
    while True:
        url = "/messages?campaign=cs&status=DELIVRD&limit=2" + (f"&cursor={cursor}" if cursor else "")
        data = client.get(url).json()["data"]
        seen += [(i["id"], i["status"]) for i in data["items"]]
        cursor = data["next_cursor"]
        if cursor is None:
            break
    assert seen == [(f"s{i}", "DELIVRD") for i in (7, 5, 3, 1)]
    assert client.get("/messages?campaign=cs&status=EXPIRED").json()["data"] == {"items": [], "next_cursor": None}


def test_campaign_statistics(client: TestClient) -> None:
    """Campaign stats count by status, the finals, the delivered ratio and delivery-time percentiles."""
    for i in range(4):
        client.post("/messages", json={"id": f"c{i}", "campaign": "spring"})
    report(client, id="c0", status="DELIVRD")
    report(client, id="c1", status="DELIVRD")
    report(client, id="c2", status="UNDELIV")
    data = client.get("/campaigns/spring").json()["data"]
    assert data["total"] == 4
    assert data["by_status"]["DELIVRD"] == 2
    assert data["by_status"]["UNDELIV"] == 1
    assert data["by_status"]["NEW"] == 1
    assert data["final"] == 3
    assert data["delivered_ratio"] == 0.5
    assert data["delivery_seconds"]["p50"] >= 0


def test_quarantine_lists_newest_first_and_replay_applies_then_removes(client: TestClient, db: str) -> None:
    """A quarantined payload that parses now (after a fix) is applied by replay and leaves the quarantine."""
    client.post("/dlr/generic", json={"id": "q1", "status": "BOGUS"})
    client.post(
        "/dlr/generic", content=b"id=q2&status=%zz", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    items = client.get("/quarantine").json()["data"]["items"]
    assert [i["dialect"] for i in items] == ["generic", "generic"]
    assert items[0]["id"] > items[1]["id"]
    assert "status" in items[1]["error"]
    # Replay of a payload that is still invalid fails and keeps it.
    still_bad = client.post(f"/quarantine/{items[1]['id']}/replay")
    assert (still_bad.status_code, still_bad.json()["code"]) == (400, 1)
    # Simulate the fix a replay is for: the stored payload is now one the parser accepts.
    fetch(db, "UPDATE quarantine SET body = $1 WHERE id = $2", b'{"id": "q1", "status": "DELIVRD"}', items[1]["id"])
    replayed = client.post(f"/quarantine/{items[1]['id']}/replay")
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["data"]["items"][0]["status"] == "DELIVRD"
    assert client.get("/messages/q1").json()["data"]["status"] == "DELIVRD"
    assert [i["id"] for i in client.get("/quarantine").json()["data"]["items"]] == [items[0]["id"]]


def test_quarantine_pagination(client: TestClient) -> None:
    """The quarantine pages by cursor, newest first."""
    for i in range(5):
        client.post("/dlr/generic", json={"id": f"z{i}"})
    first = client.get("/quarantine?limit=3").json()["data"]
    second = client.get(f"/quarantine?limit=3&cursor={first['next_cursor']}").json()["data"]
    assert len(first["items"]) == 3
    assert len(second["items"]) == 2
    assert second["next_cursor"] is None


def test_repeated_ids_are_all_read(client: TestClient) -> None:
    """`ids` may be repeated, as requests and httpx send a list (`ids=m1&ids=m2`), with commas inside too
    and as `ids[]=`: every id is looked up, in order, each once -- never only the last one."""
    for message_id in ("m1", "m2", "m3"):
        report(client, id=message_id, status="ACCEPTD")
    data = client.get("/messages", params=[("ids", "m1"), ("ids", "m2"), ("ids", "nope")]).json()["data"]
    assert ([i["id"] for i in data["items"]], data["not_found"]) == (["m1", "m2"], ["nope"])
    data = client.get("/messages?ids=m3,m1&ids=nope&ids[]=m2&ids=m1").json()["data"]
    assert ([i["id"] for i in data["items"]], data["not_found"]) == (["m3", "m1", "m2"], ["nope"])


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/messages?campaign=a&campaign=b", "campaign"),
        ("/messages?status=DELIVRD&limit=5&status=UNDELIV", "status"),
        ("/messages?limit=1&limit=1", "limit"),
        ("/messages?ids=m1&cursor=x&cursor=y", "cursor"),
        ("/quarantine?dialect=smpp&dialect=generic", "dialect"),
        ("/messages/m1?apiKey=k&apiKey=k", "apiKey"),
    ],
)
def test_a_single_valued_read_parameter_given_twice_is_refused(client: TestClient, path: str, name: str) -> None:
    """A parameter read once (a filter, a page size, a cursor, the API key) given twice is code 1 (HTTP 400)
    naming it: which value counts would be a guess, and the last one winning silently filtered wrongly."""
    report(client, id="m1", status="ACCEPTD")
    refused = client.get(path)
    assert (refused.status_code, refused.json()["code"]) == (400, 1), refused.text
    assert list(refused.json()["data"]) == [name]
    assert "given 2 times" in refused.json()["data"][name]


@pytest.mark.parametrize(
    ("method", "path", "names"),
    [
        ("GET", "/messages?updated_since=2026-01-01", ["updated_since"]),
        ("GET", "/messages?campaign=c&stauts=DELIVRD&sort=asc", ["stauts", "sort"]),
        ("GET", "/messages?ids=m1&verbose=1", ["verbose"]),
        ("GET", "/messages/m1?fields=status", ["fields"]),
        ("GET", "/messages/m1/history?limit=5", ["limit"]),
        ("GET", "/campaigns/c?since=2026-01-01", ["since"]),
        ("GET", "/quarantine?status=DELIVRD", ["status"]),
        ("POST", "/messages?campaign=c", ["campaign"]),
        ("POST", "/quarantine/1/replay?force=1", ["force"]),
    ],
)
def test_unknown_read_parameters_are_refused(client: TestClient, method: str, path: str, names: list[str]) -> None:
    """A query parameter the endpoint does not read is code 1 naming each one, as Stripe does: a misspelt
    filter (`updated_since=`) must not answer the whole list as if it were filtered."""
    report(client, id="m1", status="ACCEPTD", campaign="c")
    refused = client.request(method, path, json={"id": "m1"} if method == "POST" else None)
    assert (refused.status_code, refused.json()["code"]) == (400, 1), refused.text
    assert sorted(refused.json()["data"]) == sorted(names)
    assert "not a parameter of this endpoint" in refused.json()["data"][names[0]]


def test_the_api_key_parameter_is_known_wherever_keys_are_read(settings: Settings) -> None:
    """`apiKey=` is a parameter of every endpoint that reads API keys, next to its own ones; an unknown
    parameter is refused only once the caller is authenticated (401 first)."""
    keyed = replace(settings, api_keys=parse_api_keys("k1"))
    with TestClient(create_app(keyed)) as client:
        client.post("/dlr/generic", json={"id": "m1", "status": "ACCEPTD", "campaign": "c"})
        for path in ("/messages/m1", "/messages/m1/history", "/messages?ids=m1", "/messages?limit=1", "/campaigns/c"):
            joiner = "&" if "?" in path else "?"
            assert client.get(f"{path}{joiner}apiKey=k1").status_code == 200, path
        assert client.get("/quarantine?dialect=smpp&apiKey=k1").status_code == 200
        assert client.post("/messages?apiKey=k1", json={"id": "m2"}).status_code == 200
        assert client.get("/messages?updated_since=x").status_code == 401
        assert client.get("/messages?updated_since=x&apiKey=k1").json()["code"] == 1


def test_an_id_ending_in_history_is_read_by_its_encoded_path(client: TestClient) -> None:
    """`GET /messages/x%2Fhistory` is message `x/history` (an encoded slash belongs to the id), while
    `/messages/x/history` is still x's history and `/messages/x%2Fhistory/history` that of `x/history`."""
    report(client, id="x", status="ACCEPTD")
    report(client, id="x/history", status="DELIVRD")
    one = client.get("/messages/x%2Fhistory")
    assert one.status_code == 200, one.text
    assert (one.json()["data"]["id"], one.json()["data"]["status"]) == ("x/history", "DELIVRD")
    assert [e["status"] for e in client.get("/messages/x/history").json()["data"]["items"]] == ["ACCEPTD"]
    assert [e["status"] for e in client.get("/messages/x%2Fhistory/history").json()["data"]["items"]] == ["DELIVRD"]
    assert [e["status"] for e in client.get("/messages/x/histor%79").json()["data"]["items"]] == ["ACCEPTD"]
    assert client.get("/messages/y%2Fhistory").json()["code"] == 2


def test_api_keys_guard_reads_and_registration(settings: Settings) -> None:
    """With DLR_API_KEYS set, reads and registration need a key (Bearer or apiKey=), ingest does not."""
    keyed = replace(settings, api_keys=parse_api_keys("k1,k2"))
    with TestClient(create_app(keyed)) as client:
        assert client.post("/dlr/generic", json={"id": "k", "status": "ACCEPTD"}).status_code == 200
        for method, path in [
            ("GET", "/messages/k"),
            ("GET", "/messages?ids=k"),
            ("POST", "/messages"),
            ("GET", "/campaigns/x"),
            ("GET", "/quarantine"),
            ("GET", "/messages/k/history"),
        ]:
            denied = client.request(method, path)
            assert (denied.status_code, denied.json()["code"]) == (401, 8), path
        assert client.get("/messages/k", headers={"authorization": "Bearer k2"}).status_code == 200
        assert client.get("/messages/k?apiKey=k1").status_code == 200
        assert client.get("/messages/k?apiKey=k3").status_code == 401
        assert client.get("/healthz").status_code == 200


def test_readyz_fails_while_schema_is_behind(fresh_database) -> None:  # type: ignore[no-untyped-def]
    """/readyz answers 503 on a database without the schema, 200 once migrated; /healthz stays up."""
    from service import database

    dsn = fresh_database()
    with TestClient(create_app(make_settings(dsn))) as client:
        behind = client.get("/readyz")
        assert behind.status_code == 503
        assert behind.json()["code"] == 10
        assert client.get("/healthz").status_code == 200
        database.migrate(dsn)
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["data"]["ready"] is True


def test_database_down_is_503_code_10_with_retry_after(settings: Settings, database_outage) -> None:  # type: ignore[no-untyped-def]
    """When the database refuses connections, ingest answers 503 code 10 with Retry-After, not 500,
    and the service recovers by itself once the database is back."""
    with TestClient(create_app(settings)) as client:
        with database_outage():
            response = client.post("/dlr/generic", json={"id": "down", "status": "ACCEPTD"})
            assert response.status_code == 503
            assert response.json()["code"] == 10
            assert response.headers["retry-after"]
            assert client.get("/readyz").status_code == 503
            assert client.get("/healthz").status_code == 200
        assert client.post("/dlr/generic", json={"id": "down", "status": "ACCEPTD"}).status_code == 200
        assert client.get("/readyz").status_code == 200


def test_a_read_during_an_outage_says_the_database_is_unavailable(settings: Settings, database_outage) -> None:  # type: ignore[no-untyped-def]
    """A read while the database is away is 503 code 10 with Retry-After, like a write, but its message
    says the database is unavailable (a read saves nothing); a registration still says it could not save."""
    with TestClient(create_app(settings)) as client, database_outage():
        for path in (
            "/messages/m1",
            "/messages/m1/history",
            "/messages?ids=m1",
            "/messages",
            "/campaigns/c",
            "/quarantine",
        ):
            read = client.get(path)
            assert (read.status_code, read.json()["code"]) == (503, 10), path
            assert read.headers["retry-after"]
            assert read.json()["message"] == "database unavailable, retry later", path
        write = client.post("/messages", json={"id": "m1"})
        assert (write.status_code, write.json()["code"]) == (503, 10)
        assert write.json()["message"].startswith("could not save")


def test_connections_dropped_under_load_are_503_or_applied_never_500(settings: Settings, drop_connections) -> None:  # type: ignore[no-untyped-def]
    """Server sessions ended under load (a restart, a failover) break pooled connections in several
    ways inside asyncpg, idle or mid-statement; each request must get a retryable 503 code 10 or be
    applied, never a 500, and everything acknowledged must be stored."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    done = threading.Event()

    def sender(worker: int) -> list[tuple[str, int, int | None]]:
        answers = []
        sent = 0
        while not done.is_set():
            message_id = f"drop{worker}-{sent}"
            sent += 1
            response = client.post("/dlr/generic", json={"id": message_id, "status": "DELIVRD"})
            code = response.json()["code"] if response.status_code in (200, 503) else None
            answers.append((message_id, response.status_code, code))
        return answers

    with TestClient(create_app(settings)) as client, ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(sender, worker) for worker in range(4)]
        for _ in range(15):
            time.sleep(0.05)
            drop_connections()
        done.set()
        answers = [answer for future in futures for answer in future.result()]
        assert {(status, code) for _, status, code in answers} <= {(200, 0), (503, 10)}, answers
        applied = [message_id for message_id, status, _ in answers if status == 200]
        assert client.post("/dlr/generic", json={"id": "after", "status": "ACCEPTD"}).status_code == 200
        assert applied, "no report was applied at all"
        for start in range(0, len(applied), 100):
            page = client.get("/messages", params={"ids": ",".join(applied[start : start + 100])}).json()["data"]
            assert page["not_found"] == []
            assert {message["status"] for message in page["items"]} == {"DELIVRD"}


def test_campaign_statistics_are_at_most_ttl_old(settings: Settings) -> None:
    """Campaign stats may come from memory for DLR_CAMPAIGN_STATS_TTL seconds, then are counted afresh."""
    import time

    with TestClient(create_app(replace(settings, campaign_stats_ttl=0.3))) as client:
        client.post("/messages", json={"id": "t1", "campaign": "ttl"})
        assert client.get("/campaigns/ttl").json()["data"]["total"] == 1
        client.post("/messages", json={"id": "t2", "campaign": "ttl"})
        assert client.get("/campaigns/ttl").json()["data"]["total"] == 1  # from memory
        deadline = time.monotonic() + 5
        while client.get("/campaigns/ttl").json()["data"]["total"] != 2:
            assert time.monotonic() < deadline, "stats never refreshed"
            time.sleep(0.05)
    with TestClient(create_app(replace(settings, campaign_stats_ttl=0))) as client:
        client.post("/messages", json={"id": "t3", "campaign": "ttl"})
        assert client.get("/campaigns/ttl").json()["data"]["total"] == 3


def test_openapi_states_the_credentials_each_endpoint_takes(settings: Settings) -> None:
    """With keys and a token configured, /openapi.json says so per operation: an API key (bearer or `apiKey=`)
    with the scope the operation needs for the API, the webhook token (bearer or `token=`) for every sender's
    path, none for the operational endpoints; unconfigured, the operations are open (`{}`), as they are."""
    from dataclasses import replace

    secured = replace(settings, api_keys=parse_api_keys("k"), webhook_token=Secret("t"))
    with TestClient(create_app(secured)) as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert paths["/messages/{id}"]["get"]["security"] == [{"apiKey": ["read"]}, {"apiKeyParameter": ["read"]}]
    assert paths["/messages"]["post"]["security"] == [{"apiKey": ["register"]}, {"apiKeyParameter": ["register"]}]
    assert paths["/quarantine"]["get"]["x-scope"] == "admin"
    assert paths["/dlr/kannel"]["post"]["security"] == [{"webhookToken": []}, {"webhookTokenParameter": []}]
    assert paths["/healthz"]["get"]["security"] == []
    with TestClient(create_app(settings)) as client:
        open_paths = client.get("/openapi.json").json()["paths"]
    assert open_paths["/messages/{id}"]["get"]["security"] == [{}]
    assert open_paths["/dlr/generic"]["post"]["security"] == [{}]
