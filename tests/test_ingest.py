"""`/dlr/generic` through HTTP against a real PostgreSQL: every encoding, every answer, the status rules."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.conftest import fetch


def post_form(client: TestClient, body: str, **kw: object):  # type: ignore[no-untyped-def]
    return client.post(
        "/dlr/generic", content=body.encode(), headers={"content-type": "application/x-www-form-urlencoded"}, **kw
    )


def message(client: TestClient, message_id: str) -> dict:  # type: ignore[type-arg]
    response = client.get(f"/messages/{message_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_form_report_creates_the_message_and_answers_in_the_envelope(client: TestClient) -> None:
    """A form POST for an unknown id creates the message with the report's status."""
    response = post_form(client, "id=m1&status=ACCEPTD&to=%2B380501234567&campaign=spring+sale")
    assert response.status_code == 200
    assert response.json() == {
        "code": 0,
        "data": {"id": "m1", "status": "ACCEPTD", "applied": True, "reason": None},
        "message": "",
    }
    data = message(client, "m1")
    assert data["status"] == "ACCEPTD"
    assert data["to"] == "+380501234567"
    assert data["campaign"] == "spring sale"
    assert data["final"] is False


def test_json_object_and_get_query_are_the_same_report(client: TestClient) -> None:
    """JSON objects and GET query strings carry the same fields as form bodies."""
    assert client.post("/dlr/generic", json={"id": "j1", "status": "DELIVRD"}).json()["data"]["applied"] is True
    assert client.get("/dlr/generic?id=g1&status=UNDELIV&error=0x0B").json()["data"]["status"] == "UNDELIV"
    assert message(client, "j1")["status"] == "DELIVRD"
    assert message(client, "g1")["error"] == "0x0B"


def test_non_ascii_percent_encoded_form_values_decode_as_utf8(client: TestClient) -> None:
    """Percent-decoding follows the form rules: `%D0%9F` is UTF-8, `+` is a space, `%2B` a plus."""
    post_form(client, "id=%D0%9F%D1%80%D0%B8%D0%B2%D1%96%D1%82+1%2B1&status=ACCEPTD")
    data = message(client, "Привіт 1+1")
    assert data["id"] == "Привіт 1+1"


def test_final_status_never_moves(client: TestClient) -> None:
    """After DELIVRD, an UNDELIV is after_final and DELIVRD again is a duplicate; neither changes anything."""
    post_form(client, "id=m2&status=DELIVRD")
    late = post_form(client, "id=m2&status=UNDELIV").json()["data"]
    again = post_form(client, "id=m2&status=DELIVRD").json()["data"]
    assert late == {"id": "m2", "status": "DELIVRD", "applied": False, "reason": "after_final"}
    assert again == {"id": "m2", "status": "DELIVRD", "applied": False, "reason": "duplicate"}
    assert message(client, "m2")["status"] == "DELIVRD"


def test_stale_reports_are_kept_in_history_and_duplicates_are_not(client: TestClient) -> None:
    """History keeps stale and after_final reports with their reason, and a duplicate only once."""
    for status in ("ACCEPTD", "ENQUEUD", "ACCEPTD", "DELIVRD", "EXPIRED"):
        post_form(client, f"id=h1&status={status}")
    items = client.get("/messages/h1/history").json()["data"]["items"]
    assert [(i["status"], i["applied"], i["reason"]) for i in items] == [
        ("ACCEPTD", True, None),
        ("ENQUEUD", False, "stale"),
        ("DELIVRD", True, None),
        ("EXPIRED", False, "after_final"),
    ]
    assert all(i["source"] == "generic" for i in items)


def test_segments_pdlivrd_then_delivered(client: TestClient) -> None:
    """A 2-part message is PDLIVRD while one part is delivered, DELIVRD once both are."""
    post_form(client, "id=s1&status=ACCEPTD&segments=2")
    first = post_form(client, "id=s1&status=DELIVRD&segment=1").json()["data"]
    assert first["status"] == "PDLIVRD"
    data = message(client, "s1")
    assert data["segments_total"] == 2
    assert [s["status"] for s in data["segments"]] == ["DELIVRD", "ACCEPTD"]
    assert post_form(client, "id=s1&status=DELIVRD&segment=2").json()["data"]["status"] == "DELIVRD"
    assert message(client, "s1")["final_at"] is not None


def test_message_level_pdlivrd(client: TestClient) -> None:
    """PDLIVRD without a segment marks the message partly delivered and moves no segment."""
    post_form(client, "id=p1&status=ACCEPTD")
    assert post_form(client, "id=p1&status=PDLIVRD").json()["data"] == {
        "id": "p1",
        "status": "PDLIVRD",
        "applied": True,
        "reason": None,
    }
    assert [s["status"] for s in message(client, "p1")["segments"]] == ["ACCEPTD"]


def test_report_segment_past_known_total_grows_the_message(client: TestClient) -> None:
    """A report for segment 3 of a message known with 1 part makes it a 3-part message."""
    post_form(client, "id=g3&status=ACCEPTD")
    post_form(client, "id=g3&status=DELIVRD&segment=3")
    data = message(client, "g3")
    assert data["segments_total"] == 3
    assert data["status"] == "PDLIVRD"


def test_event_time_sets_sent_at_and_expiry(client: TestClient) -> None:
    """A report-created message takes its sending time from the report's event time (unix or ISO)."""
    post_form(client, "id=t1&status=ACCEPTD&time=1764000000")
    data = message(client, "t1")
    assert data["sent_at"].startswith("2025-11-24T16:00:00")
    assert data["expires_at"].startswith("2025-11-25T16:00:00")
    post_form(client, "id=t2&status=ACCEPTD&time=2025-11-24T18:00:00%2B02:00")
    assert message(client, "t2")["sent_at"].startswith("2025-11-24T16:00:00")


def test_batch_all_good_answers_code_0_with_per_item_results(client: TestClient) -> None:
    """A JSON array is a batch: per-item results in order, code 0 when every item succeeded."""
    response = client.post("/dlr/generic", json=[{"id": "b1", "status": "ACCEPTD"}, {"id": "b1", "status": "DELIVRD"}])
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 0
    assert [(i["index"], i["status"], i["applied"]) for i in body["data"]["items"]] == [
        (0, "ACCEPTD", True),
        (1, "DELIVRD", True),
    ]


def test_batch_partly_valid_answers_98_and_quarantines_the_bad_item(client: TestClient, db: str) -> None:
    """One bad item fails alone (code 98, HTTP 207); the others are applied; the bad one is quarantined."""
    response = client.post("/dlr/generic", json=[{"id": "b2", "status": "DELIVRD"}, {"id": "b3", "status": "NOPE"}])
    assert response.status_code == 207
    body = response.json()
    assert body["code"] == 98
    assert body["data"]["items"][1]["code"] == 1
    assert "status" in body["data"]["items"][1]["errors"]
    assert message(client, "b2")["status"] == "DELIVRD"
    assert client.get("/messages/b3").status_code == 404
    quarantined = client.get("/quarantine").json()["data"]["items"]
    assert len(quarantined) == 1
    assert '"NOPE"' in quarantined[0]["body"]


def test_batch_all_bad_answers_99(client: TestClient) -> None:
    """When no item is valid the answer is code 99, HTTP 400, each item with its error."""
    response = client.post("/dlr/generic", json=[{"status": "DELIVRD"}, 5])
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 99
    assert body["data"]["items"][0] == {"index": 0, "code": 11, "errors": {"id": "required"}}
    assert body["data"]["items"][1]["errors"] == {"item": "must be a JSON object"}


def test_batch_size_limit(settings, db: str) -> None:  # type: ignore[no-untyped-def]
    """More items than DLR_MAX_BATCH: code 12 and nothing applied."""
    from dataclasses import replace

    from service.app import create_app

    with TestClient(create_app(replace(settings, max_batch=2))) as client:
        response = client.post("/dlr/generic", json=[{"id": f"x{i}", "status": "ACCEPTD"} for i in range(3)])
        assert response.status_code == 400
        assert response.json()["code"] == 12
    assert fetch(db, "SELECT count(*) AS n FROM messages")[0]["n"] == 0


def test_body_size_limit_is_413_code_12(settings, db: str) -> None:  # type: ignore[no-untyped-def]
    """A body over DLR_MAX_BODY_BYTES is refused with code 12 and HTTP 413 before it is parsed."""
    from dataclasses import replace

    from service.app import create_app

    with TestClient(create_app(replace(settings, max_body_bytes=1024))) as client:
        response = post_form(client, "id=big&status=ACCEPTD&to=" + "1" * 2000)
        assert response.status_code == 413
        assert response.json()["code"] == 12


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("POST", "/dlr/nosuch", 404, 4),
        ("GET", "/no/such/route", 404, 4),
        ("DELETE", "/dlr/generic", 405, 5),
        ("PUT", "/messages", 405, 5),
        ("GET", "/messages/unknown-id", 404, 2),
        ("GET", "/messages/unknown-id/history", 404, 2),
        ("GET", "/campaigns/unknown", 404, 2),
        ("POST", "/quarantine/999/replay", 404, 2),
    ],
)
def test_errors_are_enveloped(client: TestClient, method: str, path: str, status: int, code: int) -> None:
    """Unknown routes, dialects, methods and ids answer in the envelope with the documented code."""
    response = client.request(method, path)
    assert response.status_code == status
    body = response.json()
    assert body["code"] == code
    assert set(body) == {"code", "data", "message"}
    assert body["message"]


def test_unsupported_content_type_is_415_code_6_and_quarantined(client: TestClient) -> None:
    """A body in a format the dialect does not read is refused with code 6 and kept."""
    response = client.post("/dlr/generic", content=b"<dlr/>", headers={"content-type": "application/xml"})
    assert response.status_code == 415
    assert response.json()["code"] == 6
    assert client.get("/quarantine").json()["data"]["items"][0]["body"] == "<dlr/>"


def test_webhook_token_is_required_when_configured(settings, db: str) -> None:  # type: ignore[no-untyped-def]
    """With DLR_WEBHOOK_TOKEN set, ingest without it is code 8 / 401 and stores nothing."""
    from dataclasses import replace

    from service.app import create_app
    from service.config import Secret

    with TestClient(create_app(replace(settings, webhook_token=Secret("s3cret")))) as client:
        denied = client.get("/dlr/generic?id=a1&status=ACCEPTD")
        wrong = client.get("/dlr/generic?id=a1&status=ACCEPTD&token=nope")
        assert (denied.status_code, denied.json()["code"]) == (401, 8)
        assert wrong.status_code == 401
        assert fetch(db, "SELECT count(*) AS n FROM messages")[0]["n"] == 0
        assert client.get("/dlr/generic?id=a1&status=ACCEPTD&token=s3cret").status_code == 200
        bearer = client.post(
            "/dlr/generic", json={"id": "a2", "status": "ACCEPTD"}, headers={"authorization": "Bearer s3cret"}
        )
        assert bearer.status_code == 200


def test_request_id_is_echoed(client: TestClient) -> None:
    """X-Request-ID is returned as given, or made when absent."""
    assert client.get("/healthz", headers={"x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"
    assert len(client.get("/healthz").headers["x-request-id"]) == 32


def test_head_never_stores_a_report(client: TestClient, db: str) -> None:
    """HEAD on /dlr/* (which Starlette would route like GET) is 405 and stores nothing."""
    response = client.head("/dlr/generic?id=h&status=DELIVRD")
    assert response.status_code == 405
    assert fetch(db, "SELECT count(*) AS n FROM messages")[0]["n"] == 0


def test_oversized_batch_is_refused_before_it_is_parsed(settings, db: str) -> None:  # type: ignore[no-untyped-def]
    """A batch past DLR_MAX_BATCH is code 12 whatever its items look like (none is read), and is
    quarantined whole, as every refused payload is."""
    from dataclasses import replace

    from service.app import create_app

    with TestClient(create_app(replace(settings, max_batch=5))) as client:
        response = client.post("/dlr/generic", json=[{}] * 6)
        assert (response.status_code, response.json()["code"]) == (400, 12)
        assert response.json()["data"] == {"batch": "6 items; at most 5"}
    assert fetch(db, "SELECT count(*) AS n FROM quarantine")[0]["n"] == 1


def test_a_report_for_an_unknown_id_that_says_new_is_kept(client: TestClient) -> None:
    """The report that creates a message is applied and kept in the history even when it says NEW."""
    answer = client.post("/dlr/generic", json={"id": "n1", "status": "NEW"}).json()["data"]
    assert answer == {"id": "n1", "status": "NEW", "applied": True, "reason": None}
    assert [h["status"] for h in client.get("/messages/n1/history").json()["data"]["items"]] == ["NEW"]
    again = client.post("/dlr/generic", json={"id": "n1", "status": "NEW"}).json()["data"]
    assert again["reason"] == "duplicate"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("id=a&id=b&status=DELIVRD", "id"),
        ("id=a&status=DELIVRD&status=UNDELIV", "status"),
        ("id=a&status=DELIVRD&status=DELIVRD", "status"),
        ("id=a&status=DELIVRD&x=1&x[y]=2", "x"),
    ],
)
def test_a_report_field_given_twice_is_refused_and_quarantined(
    client: TestClient, db: str, body: str, field: str
) -> None:
    """`id=a&id=b` is no report of a or of b: code 1 naming the field, nothing applied, the payload kept."""
    client.post("/messages", json=[{"id": "a"}, {"id": "b"}])
    answer = client.post("/dlr/generic", content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    assert (answer.status_code, answer.json()["code"], list(answer.json()["data"])) == (400, 1, [field])
    assert {r["status"] for r in fetch(db, "SELECT status FROM messages")} == {"NEW"}
    assert [bytes(r["body"]).decode() for r in fetch(db, "SELECT body FROM quarantine")] == [body]
    get = client.get("/dlr/generic?" + body)
    assert (get.status_code, get.json()["code"]) == (400, 1)
