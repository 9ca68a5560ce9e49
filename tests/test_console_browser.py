"""The console in a real browser: headless Chromium (Debian's `chromium` package) driven by Playwright, against a
real `dlr-tracker serve` process. Sign-in, search, a message's timeline, a campaign's chart, replays (one, and all
matching as a task), a read-only key, escaping (a payload's `<script>` shown, never run) and 375 px screens.

Skipped without /usr/bin/chromium (`.ci/run` installs it) or the playwright package. With DLR_SCREENSHOTS=1 the
screenshots are written to docs/console/ (the README shows them); otherwise to the test's temporary folder.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.console import chart
from tests.conftest import REPO, _admin, make_settings
from tests.processes import ServiceProcess

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("no /usr/bin/chromium (Debian's chromium package; .ci/run installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package (the test extra)")

# Headless, and quiet on a machine without a network: no background fetches, updates or sync.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
KEYS = "support:k-read:read,ops:k-admin:admin"
HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
WIDE, NARROW = {"width": 1024, "height": 768}, {"width": 375, "height": 740}


def _seed(settings: Settings) -> None:
    """What the pages show: a message with every kind of history row, a campaign with delivery times spread
    over minutes and hours, quarantined payloads (one hostile, some that parse once the batch limit is higher),
    and a subscription whose deliveries fail."""
    admin = {"authorization": "Bearer k-admin"}
    now = int(time.time())
    with TestClient(create_app(replace(settings, max_batch=1))) as client:
        for n in range(3):  # refused under DLR_MAX_BATCH=1, quarantined; they parse under the service's limit
            pair = [{"id": f"late-{n}a", "status": "DELIVRD"}, {"id": f"late-{n}b", "status": "DELIVRD"}]
            client.post("/dlr/generic", json=pair)
    with TestClient(create_app(settings)) as client:
        client.post("/dlr/generic", json={"id": "evil-1", "status": HOSTILE, "to": HOSTILE})
        client.post("/messages", json={"id": "SM-1001", "to": "+380501234567", "segments": 2}, headers=admin)
        for report in (
            {"id": "SM-1001", "status": "ACCEPTD", "segment": 1},
            {"id": "SM-1001", "status": "ENQUEUD", "segment": 1},  # stale
            {"id": "SM-1001", "status": "DELIVRD", "segment": 1, "time": now},
            {"id": "SM-1001", "status": "UNDELIV", "segment": 1},  # after_final
        ):
            client.post("/dlr/generic", json=report)
        client.post("/dlr/smpp", content=b"id:SM-1001 sub:001 dlvrd:000 submit date:2601011200 stat:UNKNOWN err:000")
        # Sent two days ago: the sweep expires it (the message lifetime is one day).
        client.post(
            "/messages", json={"id": "SM-0999", "to": "+380501234567", "sent_at": now - 2 * 86400}, headers=admin
        )
        client.post("/dlr/generic", json={"id": "SM-0999", "status": "ACCEPTD"})
        batch = [
            {"id": f"sale-{i:03}", "campaign": "spring-sale", "to": f"+38050{i:07}", "sent_at": now - 30000}
            for i in range(120)
        ]
        assert client.post("/messages", json=batch, headers=admin).json()["code"] == 0
        took = [2, 4, 8, 12, 20, 25, 40, 50, 90, 100, 200, 400, 1000, 2000, 5000, 12000]
        reports = []
        for i in range(120):
            if i % 10 == 9:
                reports.append({"id": f"sale-{i:03}", "status": "UNDELIV", "error": "011"})
            elif i % 10 != 8:
                reports.append({"id": f"sale-{i:03}", "status": "DELIVRD", "time": now - 30000 + took[(i * 7) % 16]})
        for report in reports:
            client.post("/dlr/generic", json=report)
    with TestClient(create_app(replace(settings, subscription_allow_private=True))) as client:
        client.post(
            "/subscriptions",
            json={"url": "http://127.0.0.1:9/dlr-status", "description": "CRM status sync", "filter": {"final": True}},
            headers=admin,
        )


@pytest.fixture(scope="module")
def service(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    asyncio.run(
        _admin(
            database_url,
            "TRUNCATE messages, history, quarantine, sender_events, events, subscriptions, deliveries, tasks,"
            " task_output RESTART IDENTITY",
        )
    )
    settings = replace(make_settings(database_url), **_keys())
    _seed(settings)
    process = ServiceProcess(
        tmp_path_factory.mktemp("console-service"),
        env={
            "DATABASE_URL": database_url,
            "DLR_API_KEYS": KEYS,
            "DLR_SWEEP_INTERVAL": "0.5",
            "DLR_SUBSCRIPTION_ALLOW_PRIVATE": "true",
            "DLR_DELIVERY_SCHEDULE": "0",
            "DLR_TASK_POLL": "0.1",
        },
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def _keys() -> dict[str, Any]:
    configured = Settings.from_env({"DLR_API_KEYS": KEYS}, env_file=None)
    return {"api_keys": configured.api_keys}


@pytest.fixture(scope="module")
def browser(service: ServiceProcess) -> Iterator[Any]:
    """After the service: Playwright's sync API runs an event loop in this thread, where the seeding's own
    asyncio.run() could not start one."""
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    if os.environ.get("DLR_SCREENSHOTS") == "1":
        folder = REPO / "docs" / "console"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return tmp_path


def _page(browser: Any, viewport: dict[str, int] = WIDE) -> Any:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(15_000)
    return page


def _sign_in(page: Any, service: ServiceProcess, key: str, path: str = "/console/") -> None:
    page.goto(service.url + path)
    assert "/console/login" in page.url
    page.fill("input[name=api_key]", key)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(re.escape(service.url + path.split("?")[0])))


def _no_horizontal_scroll(page: Any) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"{page.url} is {width}px wide at {page.viewport_size['width']}px"


def test_sign_in_and_search(browser: Any, service: ServiceProcess, shots: Path) -> None:
    """Signing in with a key returns to the page asked for; a recipient search lists their messages, and a
    message id goes straight to its page."""
    page = _page(browser)
    page.goto(service.url + "/console/")
    page.screenshot(path=shots / "login.png")
    _sign_in(page, service, "k-admin")
    cookies = page.context.cookies()
    [session] = [c for c in cookies if c["name"] == "dlr_console"]
    assert session["httpOnly"]
    assert session["sameSite"] == "Lax"
    assert "k-admin" not in session["value"]
    page.fill("input[name=q]", "+380501234567")
    page.click("form.search button")
    page.wait_for_selector("table.list")
    assert page.locator("table.list tbody tr").count() == 2
    page.screenshot(path=shots / "search.png")
    page.fill("input[name=q]", "SM-1001")
    page.click("form.search button")
    page.wait_for_url(f"{service.url}/console/messages/SM-1001")
    page.goto(service.url + "/console/messages/NO-SUCH-ID")
    assert page.locator("h1").inner_text() == "Message not found"
    page.context.close()


def test_message_timeline(browser: Any, service: ServiceProcess, shots: Path) -> None:
    """A message's page shows its segments and a timeline of its history: applied, stale, after_final, a raw
    sender status that maps to none, and the sweep's verdict on an expired message; it fits a 375 px screen."""
    page = _page(browser)
    _sign_in(page, service, "k-read", "/console/messages/SM-1001")
    kinds = page.locator("ol.timeline .kind").all_inner_texts()
    assert [k.lower() for k in kinds] == ["applied", "stale", "applied", "after_final", "unmapped"]
    assert "UNKNOWN" in page.locator("ol.timeline").inner_text()
    assert page.locator("table.segments tbody tr").count() == 2
    page.screenshot(path=shots / "message.png", full_page=True)
    deadline = time.monotonic() + 30
    while "sweep" not in [k.lower() for k in page.locator("ol.timeline .kind").all_inner_texts()]:
        assert time.monotonic() < deadline, "the sweep did not expire SM-0999"
        time.sleep(0.3)
        page.goto(service.url + "/console/messages/SM-0999")
    assert "EXPIRED" in page.locator("dl.facts").inner_text()
    page.set_viewport_size(NARROW)
    page.goto(service.url + "/console/messages/SM-1001")
    _no_horizontal_scroll(page)
    page.screenshot(path=shots / "message-375.png", full_page=True)
    page.context.close()


def test_campaign_chart(browser: Any, service: ServiceProcess, shots: Path) -> None:
    """A campaign's page breaks it down by status and draws its delivery times as a histogram: one bar per
    span, drawn in proportion, at 1024 and at 375 px."""
    page = _page(browser)
    _sign_in(page, service, "k-read", "/console/campaigns/spring-sale")
    svg = page.locator("svg#delivery-histogram")
    assert svg.is_visible()
    bars = page.locator("svg#delivery-histogram rect")
    assert bars.count() == len(chart.BOUNDS)
    counts = [int(bars.nth(i).get_attribute("data-count") or 0) for i in range(bars.count())]
    heights = [bars.nth(i).bounding_box()["height"] for i in range(bars.count())]
    assert sum(counts) == 96
    tallest = counts.index(max(counts))
    assert heights[tallest] == max(heights) > 0
    assert "DELIVRD" in page.locator("table.breakdown").inner_text()
    page.screenshot(path=shots / "campaign.png", full_page=True)
    page.set_viewport_size(NARROW)
    page.reload()
    _no_horizontal_scroll(page)
    assert page.locator("svg#delivery-histogram").bounding_box()["width"] <= NARROW["width"]
    page.context.close()


def test_quarantine_escapes_payloads_and_replays(browser: Any, service: ServiceProcess, shots: Path) -> None:
    """The quarantine shows a payload holding `<script>` and an `<img onerror>` as text and runs neither; one
    payload is replayed by its button, then all matching as a task whose page follows it to done."""
    page = _page(browser)
    _sign_in(page, service, "k-admin", "/console/quarantine")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    body = page.locator("article.quarantined pre.payload").all_inner_texts()
    assert any("<script>window.__pwned=1</script>" in text for text in body)
    assert page.locator("article.quarantined img").count() == 0
    assert page.locator("article.quarantined script").count() == 0
    page.screenshot(path=shots / "quarantine.png", full_page=True)
    _no_horizontal_scroll(page)
    before = page.locator("article.quarantined").count()
    assert before == 4
    # The oldest is a replayable batch (newest first: it is the last card).
    page.locator("article.quarantined").last.locator("button.replay").click()
    page.wait_for_selector("text=It parsed and left the quarantine")
    assert page.locator("table.list a.id").all_inner_texts() == ["late-0a", "late-0b"]
    page.goto(service.url + "/console/quarantine")
    assert page.locator("article.quarantined").count() == before - 1
    page.on("dialog", lambda dialog: dialog.accept())
    page.select_option("form.replay-all select[name=dialect]", "generic")
    page.click("form.replay-all button[type=submit]")
    page.wait_for_url(re.compile(r".*/console/tasks/\d+$"))
    page.wait_for_selector("dd.task-state:text('done')", timeout=30_000)
    assert "replayed" in page.locator("dl.facts").inner_text()
    page.screenshot(path=shots / "task.png")
    page.goto(service.url + "/console/quarantine")
    left = page.locator("article.quarantined").all_inner_texts()
    assert len(left) == 1  # the hostile one still fails: it stays
    assert page.evaluate("typeof window.__pwned") == "undefined"
    page.context.close()


def test_read_only_key(browser: Any, service: ServiceProcess, shots: Path) -> None:
    """A read key sees messages and campaigns, no quarantine or subscriptions link and no replay button; the
    quarantine's address answers a page saying it needs the admin scope."""
    page = _page(browser)
    _sign_in(page, service, "k-read", "/console/messages/SM-1001")
    nav = page.locator("header.top nav").inner_text()
    assert "Search" in nav
    assert "Quarantine" not in nav
    assert "Subscriptions" not in nav
    assert page.locator("button.replay").count() == 0
    response = page.goto(service.url + "/console/quarantine")
    assert response.status == 403
    assert "needs the admin scope" in page.locator("p.error").inner_text()
    assert page.locator("button.replay").count() == 0
    page.screenshot(path=shots / "read-only.png")
    page.context.close()


def test_subscriptions_and_sign_out(browser: Any, service: ServiceProcess, shots: Path) -> None:
    """The subscriptions page lists each with its latest deliveries and failures; signing out ends the session."""
    page = _page(browser)
    _sign_in(page, service, "k-admin", "/console/subscriptions")
    deadline = time.monotonic() + 30
    while page.locator("td.d-failed").count() == 0:
        assert time.monotonic() < deadline, "no failed delivery shown"
        time.sleep(0.3)
        page.reload()
    assert "CRM status sync" in page.locator("article.subscription").inner_text()
    page.screenshot(path=shots / "subscriptions.png", full_page=True)
    page.set_viewport_size(NARROW)
    page.reload()
    _no_horizontal_scroll(page)
    page.set_viewport_size(WIDE)
    page.click("header.top button.link")
    page.wait_for_url(re.compile(r".*/console/login$"))
    page.goto(service.url + "/console/subscriptions")
    assert "/console/login" in page.url
    page.context.close()
