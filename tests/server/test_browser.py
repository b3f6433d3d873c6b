"""The console and the chat page in real Chromium (Playwright, sync API) against a real
server: decisions made in the browser resume runs, and open run pages follow them live.
Each test writes screenshots of the pages it visits to $KEEL_SCREENSHOTS (the docs' are made
with KEEL_SCREENSHOTS=docs/screenshots), else to a folder under the system's temp directory,
so a test run leaves the working tree as it was."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import Served

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(os.environ.get("KEEL_SCREENSHOTS")
             or Path(tempfile.gettempdir()) / "keel-screenshots")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
LIVE_MS = 15_000

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = sync_api.expect


@pytest.fixture
def browser(served: Served) -> Iterator[Any]:
    """Chromium, started after the server (Playwright's sync API keeps an event loop
    running in this thread, so the server's key set-up must come first)."""
    if not CHROMIUM.exists():
        pytest.skip(f"BROWSER TESTS SKIPPED: no Chromium at {CHROMIUM} (apt-get install "
                    "chromium; .ci/run installs it)")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport=LAPTOP)
    ctx.set_default_timeout(LIVE_MS)
    yield ctx
    ctx.close()


def sign_in(page: Any, served: Served, role: str, next_path: str) -> None:
    page.goto(f"{served.url}/console/login?next={next_path}")
    page.get_by_label("API key").fill(served.keys[("acme", role)])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(re.escape(next_path.split("?")[0])))


def start(served: Served, text: str) -> str:
    with served.client("acme", "operator") as c:
        r = c.post("/v1/runs", json={"agent": "support", "input": text, "wait": True})
        assert r.status_code in (200, 202), r.text
        return str(r.json()["run_id"])


def api(served: Served) -> httpx.Client:
    return served.client("acme", "admin")


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def test_a_reviewer_edits_and_approves_and_the_run_page_follows_live(
        served: Served, context: Any, browser: Any) -> None:
    run_id = start(served, "refund A1 250")
    inbox = context.new_page()
    sign_in(inbox, served, "reviewer", "/console/approvals")
    card = inbox.locator("article.card", has_text=run_id)
    for text in ("refund", '"amount": 250.0', "refund is irreversible", "refund A1 250"):
        expect(card).to_contain_text(text)
    expect(card.locator(".sla")).to_contain_text("due in")
    shot(inbox, "console-approvals.png")

    run_page = context.new_page()
    run_page.goto(f"{served.url}/console/runs/{run_id}")
    expect(run_page.locator("#run-status")).to_have_text("suspended")
    expect(run_page.locator("#timeline")).to_contain_text("Approval requested: refund")

    card.get_by_label("amount").fill("120")
    card.get_by_role("button", name="Approve").click()
    expect(card.locator(".done")).to_contain_text("Approved")

    expect(run_page.locator("#run-status")).to_have_text("completed", timeout=LIVE_MS)
    expect(run_page.locator("#run-output")).to_contain_text("refunded 120.00 on A1")
    expect(run_page.locator("#timeline")).to_contain_text("Approval decided")
    expect(run_page.locator("#timeline")).to_contain_text("Tool result: refund")
    shot(run_page, "console-run.png")
    with api(served) as c:
        journal = c.get(f"/v1/runs/{run_id}/timeline").json()["journal"]
    refunds = [e for e in journal if e["kind"] == "tool" and e["name"] == "refund"
               and e["phase"] == "result"]
    assert refunds and refunds[-1]["data"]["content"] == "refunded 120.00 on A1"

    phone = browser.new_context(viewport=PHONE, is_mobile=True)
    try:
        start(served, "refund B2 75")
        small = phone.new_page()
        sign_in(small, served, "reviewer", "/console/approvals")
        expect(small.locator("article.card").first).to_contain_text("refund")
        width = small.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"] + 1, "the inbox scrolls sideways on a phone"
        shot(small, "console-approvals-phone.png")
    finally:
        phone.close()


def test_an_escalation_is_claimed_and_answered_from_the_queue(served: Served,
                                                               context: Any) -> None:
    run_id = start(served, "I want to talk to a human about order A1")
    queue = context.new_page()
    sign_in(queue, served, "reviewer", "/console/escalations")
    card = queue.locator("article.card", has_text=run_id)
    expect(card).to_contain_text("the user asked for a person")
    expect(card).to_contain_text("I want to talk to a human about order A1")
    expect(card).to_contain_text("human_requested")
    shot(queue, "console-escalations.png")

    run_page = context.new_page()
    run_page.goto(f"{served.url}/console/runs/{run_id}")
    expect(run_page.locator("#run-status")).to_have_text("suspended")

    card.get_by_role("button", name="Claim").click()
    expect(card.locator(".claim .msg")).to_contain_text("Claimed")
    expect(card.locator("[data-task-status]")).to_contain_text("claimed by reviewer of acme")
    answer = "A person here: order A1 ships on Monday."
    card.get_by_label("Your answer").fill(answer)
    card.get_by_role("button", name="Send answer").click()
    expect(card.locator(".done")).to_contain_text("Answered")

    expect(run_page.locator("#run-status")).to_have_text("completed", timeout=LIVE_MS)
    expect(run_page.locator("#run-output")).to_contain_text(answer)
    expect(run_page.locator("#timeline")).to_contain_text("Escalation resolved")
    with api(served) as c:
        assert c.get(f"/v1/runs/{run_id}").json()["output"] == answer


def test_the_dashboard_renders_its_svg_plots(served: Served, context: Any) -> None:
    for text in ("where is order A1?", "where is order B2?", "refund A1 250", "hello"):
        start(served, text)
    page = context.new_page()
    sign_in(page, served, "viewer", "/console")
    plots = page.locator("figure.chart svg[role=img]")
    expect(plots).to_have_count(4)
    expect(page.locator("figure.chart svg rect").first).to_be_visible()
    expect(page.locator("#runs-cap")).to_contain_text("Runs per day")
    expect(page.locator("#cost-cap")).to_contain_text("Cost per day by agent")
    shot(page, "console-dashboard.png")

    page.get_by_role("link", name="Runs", exact=True).click()
    expect(page.locator("#runs tbody tr")).to_have_count(4)
    expect(page.locator("#runs")).to_contain_text("suspended")
    shot(page, "console-runs.png")
    with api(served) as c:  # the list follows the run's status without a reload
        task = c.get("/v1/approvals").json()["items"][0]
        assert c.post(f"/v1/approvals/{task['id']}/approve", json={}).status_code == 200
    row = page.locator(f'tr[data-run-id="{task["run_id"]}"] [data-status]')
    try:
        expect(row).to_have_text("completed", timeout=LIVE_MS)
    except AssertionError:
        with api(served) as c:  # say what the run did instead
            run = c.get(f"/v1/runs/{task['run_id']}").json()
        pytest.fail(f"the run is not completed: {run}")

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert not [c for c in context.cookies() if c["name"] in ("keel_session", "keel_csrf")]
    page.goto(f"{served.url}/console/runs")
    expect(page).to_have_url(re.compile(r"/console/login\?next=/console/runs"))


#: records the events the page's EventSources deliver (Playwright's init scripts are not
#: subject to the page's Content-Security-Policy)
RECORD_EVENTS = """
window.__events = [];
const add = EventSource.prototype.addEventListener;
EventSource.prototype.addEventListener = function (type, listener, options) {
  return add.call(this, type, function (event) {
    window.__events.push([type, event.data]);
    return listener.call(this, event);
  }, options);
};
"""


def test_the_chat_streams_answers_and_says_when_a_person_must_approve(
        served: Served, context: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.server import apps

    monkeypatch.setitem(apps.DELAY, "s", 0.5)  # the stream is open before the model answers
    context.add_init_script(RECORD_EVENTS)
    page = context.new_page()
    sign_in(page, served, "operator", "/chat?agent=support")
    page.get_by_label("Message").fill("hello there")
    page.get_by_role("button", name="Send").click()
    answers = page.locator(".msg-agent p")
    expect(answers.last).to_have_text("You said: hello there", timeout=LIVE_MS)
    seen = page.evaluate("window.__events.map(e => e[0])")
    assert "delta" in seen, seen
    assert seen.index("delta") < seen.index("result")
    monkeypatch.setitem(apps.DELAY, "s", 0.0)
    expect(page).to_have_url(re.compile(r"/chat/[0-9a-f]{32}\?agent=support"))
    first = page.url

    page.goto(f"{served.url}/chat?agent=support")  # a new conversation
    page.get_by_label("Message").fill("refund A1 250")
    page.get_by_role("button", name="Send").click()
    notice = page.locator("#chat-notice")
    expect(notice).to_contain_text(re.compile("a person has been asked to approve this", re.I))
    shot(page, "chat.png")
    with api(served) as c:
        items = c.get("/v1/approvals").json()["items"]
        assert len(items) == 1
        assert c.post(f"/v1/approvals/{items[0]['id']}/approve", json={}).status_code == 200
    expect(answers.last).to_contain_text("refunded 250.00 on A1", timeout=LIVE_MS)
    expect(notice).to_be_hidden()
    assert page.url != first
    conversation = page.url.split("/chat/")[1].split("?")[0]
    with api(served) as c:
        turns = c.get(f"/v1/conversations/{conversation}").json()["runs"]
    assert [(t["input"], t["status"]) for t in turns] == [("refund A1 250", "completed")]

    page.goto(f"{served.url}/chat?agent=support")
    page.get_by_label("Message").fill("I want to talk to a human")
    page.get_by_label("Message").press("Enter")  # Enter sends
    expect(notice).to_contain_text(re.compile("a person has taken over", re.I))
    with api(served) as c:
        item = c.get("/v1/escalations", params={"status": "open"}).json()["items"][0]
        assert c.post(f"/v1/escalations/{item['id']}/answer",
                      json={"answer": "Hi, Ana here. How can I help?"}).status_code == 200
    expect(answers.last).to_have_text("Hi, Ana here. How can I help?", timeout=LIVE_MS)
    expect(notice).to_be_hidden()

    page.goto(first)  # an earlier conversation, rendered by the server
    expect(page.locator(".msg-agent p").last).to_have_text("You said: hello there")


def test_the_approve_form_works_with_the_keyboard_alone(served: Served, context: Any) -> None:
    run_id = start(served, "refund A1 250")
    page = context.new_page()
    sign_in(page, served, "reviewer", "/console/approvals")
    cookies = {c["name"]: c for c in context.cookies()}
    assert cookies["keel_session"]["httpOnly"] and cookies["keel_session"]["sameSite"] == "Strict"
    assert not cookies["keel_csrf"]["httpOnly"] and cookies["keel_csrf"]["sameSite"] == "Strict"
    page.locator("body").focus()
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.arg") == "amount":
            break
    else:
        pytest.fail("Tab never reached the amount field")
    page.keyboard.press("Control+A")
    page.keyboard.type("99")
    page.keyboard.press("Tab")  # the comment
    page.keyboard.type("checked the receipt")
    page.keyboard.press("Tab")  # the Approve button
    assert page.evaluate("document.activeElement.textContent") == "Approve"
    page.keyboard.press("Enter")
    expect(page.locator(".done")).to_contain_text("Approved")
    with api(served) as c:
        task = c.get("/v1/approvals", params={"status": "resolved"}).json()["items"][0]
    assert task["run_id"] == run_id
    assert task["resolution"]["edited"] is True
    assert task["resolution"]["arguments"] == {"order": "A1", "amount": 99}
    assert task["resolution"]["comment"] == "checked the receipt"


def test_refusals_are_shown_and_an_operator_cancels_from_the_run_page(served: Served,
                                                                      context: Any) -> None:
    run_id = start(served, "refund A1 250")
    page = context.new_page()
    sign_in(page, served, "reviewer", "/console/approvals")
    form = page.locator("form.approve")
    form.get_by_label("amount").fill("a lot")
    form.get_by_role("button", name="Approve").click()
    expect(form.locator(".msg")).to_have_text("amount must be a number")
    with api(served) as c:  # a colleague decides first
        task = c.get("/v1/approvals").json()["items"][0]
        assert c.post(f"/v1/approvals/{task['id']}/deny",
                      json={"comment": "no receipt"}).status_code == 200
    form.get_by_label("amount").fill("100")
    form.get_by_role("button", name="Approve").click()
    expect(form.locator(".msg")).to_contain_text("already decided")

    other = start(served, "refund B2 30")
    expect(page.locator("#queue-live")).to_contain_text("1 new approval waiting",
                                                        timeout=LIVE_MS)
    operator = context.browser.new_context(viewport=LAPTOP)
    try:
        run_page = operator.new_page()
        sign_in(run_page, served, "operator", f"/console/runs/{other}")
        expect(run_page.locator("#run-status")).to_have_text("suspended")
        run_page.get_by_label("Reason to cancel").fill("customer withdrew")
        run_page.get_by_role("button", name="Cancel run").click()
        expect(run_page.locator("#run-status")).to_have_text("cancelled", timeout=LIVE_MS)
        expect(run_page.get_by_role("button", name="Cancel run")).to_be_disabled()
    finally:
        operator.close()
    with api(served) as c:
        assert c.get(f"/v1/runs/{other}").json()["status"] == "cancelled"
        assert c.get(f"/v1/runs/{run_id}").json()["status"] != "suspended"


def test_a_customer_chats_waits_for_approval_and_sees_the_outcome(
        served: Served, context: Any) -> None:
    with served.client("acme", "operator") as shop:  # the shop's backend mints the token
        token = shop.post("/v1/chat/tokens", json={"user": "cust-ana"}).json()["token"]
    page = context.new_page()
    page.goto(f"{served.url}/chat?agent=support")
    expect(page).to_have_url(re.compile(r"/chat/login\?next=/chat"))
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Start chatting").click()
    expect(page.get_by_role("heading", name="Chat with support")).to_be_visible()
    expect(page.get_by_role("link", name="Runs", exact=True)).to_have_count(0)

    page.get_by_role("button", name="Send").click()  # nothing written: refused here
    expect(page.locator("#send .msg")).to_have_text("Write a message first.")
    page.get_by_label("Message").fill("hello <b>bold</b> <img src=x onerror=alert(1)>")
    page.get_by_role("button", name="Send").click()
    answers = page.locator(".msg-agent p")
    expect(answers.last).to_have_text("You said: hello <b>bold</b> <img src=x onerror=alert(1)>")
    assert page.locator(".messages b, .messages img").count() == 0  # text, never HTML

    page.goto(f"{served.url}/chat?agent=support")  # a new conversation
    page.get_by_label("Message").fill("refund A1 250")
    page.get_by_role("button", name="Send").click()
    notice = page.locator("#chat-notice")
    expect(notice).to_contain_text("Waiting for approval")
    shot(page, "chat-customer.png")
    with served.client("acme", "reviewer") as staff:
        items = staff.get("/v1/approvals").json()["items"]
        assert len(items) == 1 and items[0]["run_id"]
        assert staff.post(f"/v1/approvals/{items[0]['id']}/approve",
                          json={}).status_code == 200
    expect(answers.last).to_have_text("Done: refunded 250.00 on A1", timeout=LIVE_MS)
    expect(notice).to_be_hidden()

    page.goto(f"{served.url}/chat?agent=support")
    page.get_by_label("Message").fill("I want to talk to a human")
    page.get_by_label("Message").press("Enter")
    expect(notice).to_contain_text("a person will get back to you")
    with served.client("acme", "reviewer") as staff:
        item = staff.get("/v1/escalations", params={"status": "open"}).json()["items"][0]
        assert staff.post(f"/v1/escalations/{item['id']}/answer",
                          json={"answer": "Ana here."}).status_code == 200
    expect(answers.last).to_have_text("Ana here.", timeout=LIVE_MS)
    with served.client("acme", "admin") as c:
        runs = c.get("/v1/runs").json()["runs"]
    assert [(r["user"], r["status"]) for r in runs] == [("cust-ana", "completed")] * 3
    assert len({r["conversation"] for r in runs}) == 3

    other = context.browser.new_context(viewport=LAPTOP)  # a link signs in too
    try:
        with served.client("acme", "operator") as shop:
            bo = shop.post("/v1/chat/tokens", json={"user": "cust-bo"}).json()["token"]
        linked = other.new_page()
        linked.goto(f"{served.url}/chat/login?next=/chat%3Fagent%3Dsupport#token={bo}")
        expect(linked.get_by_role("heading", name="Chat with support")).to_be_visible()
        assert bo not in linked.url
        expect(linked.locator("header .who")).to_contain_text("cust-bo")
    finally:
        other.close()


def test_a_flow_graph_is_drawn_and_its_counts_follow_new_runs(served: Served,
                                                              context: Any) -> None:
    start(served, "where is order A1?")
    page = context.new_page()
    sign_in(page, served, "viewer", "/console/flows")
    page.get_by_role("link", name="support").click()
    graph = page.locator("figure.flow svg[role=img]")
    expect(graph).to_be_visible()
    lookup = page.locator('svg [data-count-node="support/tool:lookup"]')
    expect(lookup).to_have_text("1")
    expect(page.locator('svg [data-count-node="support"]')).to_have_text("1")
    expect(page.locator('svg g.node.r-irreversible')).to_contain_text("refund")
    start(served, "where is order B2?")
    start(served, "refund A1 40")
    expect(lookup).to_have_text("2", timeout=LIVE_MS)  # without a reload
    expect(page.locator('svg [data-count-node="support/tool:refund"]')).to_have_text("1")
    expect(page.locator("#flow-runs")).to_have_text("3")
    shot(page, "console-flows.png")
