"""The console through HTTP: sign-in and its cookie, CSRF, scopes as the API has them, pages, "not found",
escaping, replay (one and all matching), and the JSON API left as it was. (Real browser: test_console_browser.)"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.console import chart
from tests.conftest import fetch

KEYS = "viewer:k-read:read,ops:k-admin:admin,crm:k-reg:register,old:k-old:admin"
HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


def keyed_settings(settings: Settings, keys: str = KEYS, disabled: str = "old") -> Settings:
    configured = Settings.from_env({"DLR_API_KEYS": keys, "DLR_API_KEYS_DISABLED": disabled}, env_file=None)
    return replace(
        settings,
        api_keys=configured.api_keys,
        api_keys_disabled=configured.api_keys_disabled,
        task_poll=0.05,
        task_duty=1.0,
    )


@pytest.fixture
def keyed(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(keyed_settings(settings)), follow_redirects=False) as client:
        yield client


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def sign_in(client: TestClient, key: str, next_page: str = "/console/") -> object:
    page = client.get("/console/login", params={"next": next_page})
    assert page.status_code == 200
    return client.post("/console/login", data={"api_key": key, "csrf": csrf_of(page.text), "next": next_page})


def admin(key: str = "k-admin") -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_login_form_and_cookie_flags(keyed: TestClient) -> None:
    """The sign-in page is a form with a field named api_key; signing in sets an HttpOnly, SameSite=Lax cookie
    scoped to /console that holds the key's name, never the key, and returns to the page asked for."""
    page = keyed.get("/console/login")
    assert page.status_code == 200
    assert 'name="api_key"' in page.text
    assert 'method="post"' in page.text
    answer = sign_in(keyed, "k-admin", "/console/quarantine")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/quarantine"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http here: a Secure cookie would never come back
    assert "k-admin" not in cookie
    assert keyed.get("/console/quarantine").status_code == 200


def test_cookie_is_secure_over_https(settings: Settings) -> None:
    """Over https the session cookie is also Secure."""
    app = create_app(keyed_settings(settings))
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as client:
        assert "Secure" in sign_in(client, "k-read").headers["set-cookie"]


def test_pages_redirect_to_sign_in_and_back(keyed: TestClient) -> None:
    """Without a session every page sends the visitor to the sign-in page, saying where to come back."""
    answer = keyed.get("/console/messages/m 1?x=1")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/login?next=%2Fconsole%2Fmessages%2Fm%201%3Fx%3D1"


@pytest.mark.parametrize(
    ("key", "status", "says"),
    [
        ("wrong", 401, "wrong API key"),
        ("", 401, "wrong API key"),
        ("k-old", 403, "disabled"),
        ("k-reg", 403, "needs the read scope"),
    ],
)
def test_sign_in_refused(keyed: TestClient, key: str, status: int, says: str) -> None:
    """A wrong key, a disabled one, or one that may only register cannot sign in: a page says why."""
    answer = sign_in(keyed, key)
    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("text/html")
    assert says in answer.text
    assert "set-cookie" not in answer.headers


def test_next_never_leaves_the_console(keyed: TestClient) -> None:
    """`next` is followed only to a console page: never another site (no open redirect)."""
    for target in ("https://evil.example/", "//evil.example/console/", "/messages/x", "/console\\@evil"):
        assert sign_in(keyed, "k-read", target).headers["location"] == "/console/"


def test_post_without_csrf_token_changes_nothing(keyed: TestClient, db: str) -> None:
    """A form posted without the session's CSRF token (or with another session's) is refused with a page,
    and the quarantined payload is still there."""
    keyed.post("/dlr/generic", json={"id": "q1", "status": "BOGUS"})
    [(item_id,)] = fetch(db, "SELECT id FROM quarantine")
    sign_in(keyed, "k-admin")
    for data in ({}, {"csrf": "forged"}, {"csrf": ""}):
        answer = keyed.post(f"/console/quarantine/{item_id}/replay", data=data)
        assert answer.status_code == 403
        assert "CSRF" in answer.text
        assert "nothing was changed" in answer.text
        assert keyed.post("/console/quarantine/replay", data=data).status_code == 403
    assert len(fetch(db, "SELECT id FROM quarantine")) == 1
    assert fetch(db, "SELECT count(*) AS n FROM tasks")[0]["n"] == 0


def test_login_needs_its_csrf_token_too(keyed: TestClient) -> None:
    """Signing in is a change too: a login form posted from elsewhere (no token) is refused."""
    answer = keyed.post("/console/login", data={"api_key": "k-admin"})
    assert answer.status_code == 403
    assert "set-cookie" not in answer.headers


def test_disabled_or_removed_key_loses_the_console_at_once(settings: Settings) -> None:
    """The cookie names the key: a key disabled later is refused (code 14's page), a key removed or given a new
    secret is signed out, on the very next request."""
    app = create_app(keyed_settings(settings, disabled=""))
    with TestClient(app, follow_redirects=False) as client:
        sign_in(client, "k-admin")
        cookie = client.cookies["dlr_console"]
        assert client.get("/console/").status_code == 200
    with TestClient(create_app(keyed_settings(settings, disabled="ops")), follow_redirects=False) as client:
        client.cookies.set("dlr_console", cookie, path="/console")
        answer = client.get("/console/")
        assert answer.status_code == 403
        assert "ops is disabled" in answer.text
    for keys in ("viewer:k-read:read", "viewer:k-read:read,ops:k-new:admin"):
        with TestClient(create_app(keyed_settings(settings, keys, "")), follow_redirects=False) as client:
            client.cookies.set("dlr_console", cookie, path="/console")
            answer = client.get("/console/")
            assert answer.status_code == 303
            assert answer.headers["location"].startswith("/console/login")


def test_the_sign_in_page_signs_no_one_out(keyed: TestClient) -> None:
    """Opening the sign-in page while signed in keeps the session (and says who is signed in)."""
    sign_in(keyed, "k-read")
    assert "signed in as <strong>viewer</strong>" in keyed.get("/console/login").text
    assert keyed.get("/console/").status_code == 200


def test_sign_out(keyed: TestClient) -> None:
    """Signing out (a form with its token) ends the session."""
    sign_in(keyed, "k-read")
    page = keyed.get("/console/")
    answer = keyed.post("/console/logout", data={"csrf": csrf_of(page.text)})
    assert answer.status_code == 303
    assert keyed.get("/console/").status_code == 303


def test_read_key_sees_messages_but_not_the_quarantine(keyed: TestClient, db: str) -> None:
    """A read key has the API's read scope in the console: messages and campaigns, no quarantine, no
    subscriptions, no replay button anywhere, and a replay posted anyway is refused (nothing changed)."""
    keyed.post("/dlr/generic", json={"id": "q1", "status": "BOGUS"})
    keyed.post("/messages", json={"id": "m1", "campaign": "c1"}, headers=admin())
    sign_in(keyed, "k-read")
    page = keyed.get("/console/messages/m1")
    assert page.status_code == 200
    assert "Quarantine" not in page.text
    assert "Replay" not in page.text
    assert keyed.get("/console/campaigns/c1").status_code == 200
    for path in ("/console/quarantine", "/console/subscriptions"):
        answer = keyed.get(path)
        assert answer.status_code == 403
        assert "needs the admin scope" in answer.text
        assert "Replay" not in answer.text
    [(item_id,)] = fetch(db, "SELECT id FROM quarantine")
    answer = keyed.post(f"/console/quarantine/{item_id}/replay", data={"csrf": csrf_of(page.text)})
    assert answer.status_code == 403
    assert len(fetch(db, "SELECT id FROM quarantine")) == 1


def test_search_by_id_recipient_and_campaign(keyed: TestClient) -> None:
    """A message id goes straight to its page; a recipient lists their messages; a campaign links to its page;
    nothing found says so."""
    keyed.post(
        "/messages",
        json=[{"id": "a/1", "to": "+380501", "campaign": "spring"}, {"id": "a2", "to": "+380501"}],
        headers=admin(),
    )
    sign_in(keyed, "k-read")
    answer = keyed.get("/console/", params={"q": "a/1"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/messages/a%2F1"
    assert keyed.get(answer.headers["location"]).status_code == 200
    listed = keyed.get("/console/", params={"q": "+380501"}).text
    assert "/console/messages/a%2F1" in listed
    assert "/console/messages/a2" in listed
    assert "/console/campaigns/spring" in keyed.get("/console/", params={"q": "spring"}).text
    assert "Nothing found" in keyed.get("/console/", params={"q": "nobody"}).text


def test_message_page_shows_segments_and_a_timeline(keyed: TestClient) -> None:
    """The message page: status, segments and every history row (applied, stale, after_final) with the
    sender's raw status."""
    keyed.post("/messages", json={"id": "m1", "segments": 2, "to": "+380"}, headers=admin())
    for report in (
        {"id": "m1", "status": "ACCEPTD", "segment": 1},
        {"id": "m1", "status": "DELIVRD", "segment": 1},
        {"id": "m1", "status": "ENQUEUD", "segment": 2},
        {"id": "m1", "status": "ACCEPTD", "segment": 2},
        {"id": "m1", "status": "ENQUEUD", "segment": 2},
        {"id": "m1", "status": "UNDELIV", "segment": 1},
    ):
        assert keyed.post("/dlr/generic", json=report).status_code == 200
    sign_in(keyed, "k-read")
    page = keyed.get("/console/messages/m1").text
    assert "PDLIVRD" in page
    assert "Segments (2)" in page
    kinds = re.findall(r'<span class="kind">([^<]+)</span>', page)
    assert kinds == ["applied", "applied", "applied", "applied", "stale", "after_final"]
    assert "sender said" in page


def test_unknown_message_is_a_not_found_page(keyed: TestClient) -> None:
    """An unknown message, campaign, task or console path is a 404 page, not the JSON envelope; the JSON API
    still answers JSON."""
    sign_in(keyed, "k-admin")
    for path in ("/console/messages/nope", "/console/campaigns/nope", "/console/tasks/999", "/console/nope"):
        answer = keyed.get(path)
        assert answer.status_code == 404, path
        assert answer.headers["content-type"].startswith("text/html")
        assert "not found" in answer.text.lower()
    assert "Message not found" in keyed.get("/console/messages/nope").text
    api = keyed.get("/messages/nope", headers=admin())
    assert api.status_code == 404
    assert api.json()["code"] == 2
    assert keyed.get("/nope").json()["code"] == 4
    wrong_method = keyed.delete("/console/quarantine")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["content-type"].startswith("text/html")


def test_campaign_page_draws_the_delivery_histogram(keyed: TestClient) -> None:
    """The campaign page breaks the campaign down by status and draws delivery times as an SVG histogram:
    one bar per span, each holding its count."""
    now = int(time.time())
    keyed.post(
        "/messages",
        json=[{"id": f"c{i}", "campaign": "spring", "sent_at": now - 1000} for i in range(5)],
        headers=admin(),
    )
    for i, took in enumerate((3, 3, 20, 4000)):
        keyed.post("/dlr/generic", json={"id": f"c{i}", "status": "DELIVRD", "time": now - 1000 + took})
    sign_in(keyed, "k-read")
    page = keyed.get("/console/campaigns/spring").text
    assert 'id="delivery-histogram"' in page
    counts = [int(n) for n in re.findall(r'data-count="(\d+)"', page)]
    assert len(counts) == len(chart.BOUNDS)
    assert counts[0] == 2
    assert counts[2] == 1
    assert counts[9] == 1
    assert sum(counts) == 4
    assert "4 delivered messages" in page
    assert "80.0%" in page


def test_payloads_are_shown_escaped(keyed: TestClient, db: str) -> None:
    """A quarantined payload holding markup is shown as text: escaped in the page, never markup."""
    keyed.post("/dlr/generic", json={"id": HOSTILE, "status": HOSTILE})
    keyed.post("/messages", json={"id": "m<b>1", "to": HOSTILE, "text": HOSTILE}, headers=admin())
    sign_in(keyed, "k-admin")
    page = keyed.get("/console/quarantine")
    assert "<script>window.__pwned" not in page.text
    assert "<img src=x" not in page.text
    assert html.escape("<script>window.__pwned=1</script>", quote=False) in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    message = keyed.get("/console/messages/m%3Cb%3E1").text
    assert "<script>window.__pwned" not in message
    assert "m&lt;b&gt;1" in message


def test_replay_one_and_all_matching(settings: Settings, db: str) -> None:
    """Replay buttons: one payload (it parses now and leaves the quarantine, its message shows the report) and
    all matching as a task whose page follows it to done."""
    with TestClient(create_app(replace(keyed_settings(settings), max_batch=1))) as client:
        for n in range(3):  # batches of two: refused under max_batch=1, quarantined
            client.post(
                "/dlr/generic", json=[{"id": f"r{n}a", "status": "DELIVRD"}, {"id": f"r{n}b", "status": "DELIVRD"}]
            )
    ids = [r["id"] for r in fetch(db, "SELECT id FROM quarantine ORDER BY id")]
    assert len(ids) == 3
    with TestClient(create_app(keyed_settings(settings)), follow_redirects=False) as client:
        sign_in(client, "k-admin")
        page = client.get("/console/quarantine")
        assert page.text.count('class="replay"') == 3
        token = csrf_of(page.text)
        answer = client.post(f"/console/quarantine/{ids[0]}/replay", data={"csrf": token})
        assert answer.status_code == 200, answer.text
        assert "/console/messages/r0a" in answer.text
        assert client.get("/messages/r0a", headers=admin()).json()["data"]["status"] == "DELIVRD"
        again = client.post(f"/console/quarantine/{ids[0]}/replay", data={"csrf": token})
        assert again.status_code == 404
        queued = client.post("/console/quarantine/replay", data={"csrf": token, "dialect": "generic"})
        assert queued.status_code == 303
        task_page = queued.headers["location"]
        assert re.fullmatch(r"/console/tasks/\d+", task_page)
        deadline = time.monotonic() + 30
        while '<dd class="task-state">done</dd>' not in (text := client.get(task_page).text):
            assert time.monotonic() < deadline, text
            time.sleep(0.05)
        assert "replayed" in text
    assert fetch(db, "SELECT id FROM quarantine") == []


def test_replay_all_refuses_bad_fields_with_a_page(keyed: TestClient) -> None:
    """A misspelt time in the replay-all form is a page naming the field; no task is queued."""
    sign_in(keyed, "k-admin")
    token = csrf_of(keyed.get("/console/quarantine").text)
    answer = keyed.post("/console/quarantine/replay", data={"csrf": token, "since": "yesterday"})
    assert answer.status_code == 400
    assert "since" in answer.text


def test_subscriptions_page_shows_deliveries_and_failures(settings: Settings, db: str) -> None:
    """Subscriptions with their latest deliveries and failures (a subscriber that refuses connections)."""
    configured = replace(
        keyed_settings(settings),
        subscription_allow_private=True,
        delivery_schedule=(0,),
        subscription_dispatch="on",  # no `serve` here to start a dispatching process
    )
    with TestClient(create_app(configured), follow_redirects=False) as client:
        created = client.post(
            "/subscriptions", json={"url": "http://127.0.0.1:9/hook", "description": "crm <b>"}, headers=admin()
        )
        assert created.status_code == 201, created.text
        client.post("/dlr/generic", json={"id": "s1", "status": "DELIVRD"})
        sign_in(client, "k-admin")
        deadline = time.monotonic() + 30
        while 'class="d-failed"' not in (page := client.get("/console/subscriptions").text):
            assert time.monotonic() < deadline, page
            time.sleep(0.1)
    assert "http://127.0.0.1:9/hook" in page
    assert "crm &lt;b&gt;" in page
    assert "Latest failures" in page


def test_open_service_has_an_open_console(client: TestClient) -> None:
    """Without DLR_API_KEYS the API is open to anyone with every scope, and so is the console: no sign-in,
    replay buttons shown, and forms still need their CSRF token (a cookie is issued for it)."""
    client.post("/dlr/generic", json={"id": "q1", "status": "BOGUS"})
    page = client.get("/console/quarantine", follow_redirects=False)
    assert page.status_code == 200
    assert 'class="replay"' in page.text
    assert "dlr_console" in page.headers["set-cookie"]
    assert "open: no API keys" in page.text
    assert client.post("/console/quarantine/replay", data={}).status_code == 403
    assert "no API keys" in client.get("/console/login").text


def test_static_files_are_served_from_the_package(client: TestClient) -> None:
    """The stylesheet and the script come from the service itself; pages reference nothing elsewhere."""
    assert client.get("/console/static/console.css").headers["content-type"].startswith("text/css")
    assert client.get("/console/static/console.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/console/static/nope.js").status_code == 404
    page = client.get("/console/").text
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_session_cookies_cannot_be_forged_or_kept_forever(settings: Settings) -> None:
    """A cookie whose payload was changed (another key's name), signed under other secrets, or older than
    the session's lifetime is no session; the cookie names the key and never holds it."""
    from service.console.session import MAX_AGE, Sessions

    keyed = keyed_settings(settings)
    sessions = Sessions(keyed)
    read, admin_key = keyed.api_keys[0], keyed.api_keys[1]
    now = time.time()
    cookie = sessions.encode(sessions.new(read, now))
    assert sessions.decode(cookie, now) is not None
    assert "k-read" not in cookie
    payload, signature = cookie.split(".")
    forged = sessions.encode(sessions.new(admin_key, now)).split(".")[0] + "." + signature
    assert sessions.decode(forged, now) is None
    assert sessions.decode(payload + ".", now) is None
    assert Sessions(replace(keyed, api_keys=keyed.api_keys[:2])).decode(cookie, now) is None
    assert sessions.decode(cookie, now + MAX_AGE + 1) is None
    token = sessions.csrf_token(sessions.decode(cookie, now))  # type: ignore[arg-type]
    assert not sessions.csrf_ok(sessions.new(read, now), token)  # another session's token
