"""The desk in real Chromium (Playwright): a customer asks for a 2,490.00 refund on the chat
page, two different reviewers approve it in the console, and the customer's page shows the
refund confirmed; the shop's database holds exactly that one refund. Screenshots go where
tests/server/test_browser.py puts its own."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from examples.support_desk import SCENARIOS as S

from keel.server import KeyStore
from tests.server.conftest import ServerThread

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LAPTOP = {"width": 1280, "height": 860}
LIVE_MS = 20_000
SHOTS = Path(os.environ.get("KEEL_SCREENSHOTS")
             or Path(tempfile.gettempdir()) / "keel-screenshots")

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = sync_api.expect


async def _keys(runs_db: Path) -> dict[str, str]:
    async with KeyStore(str(runs_db)) as keys:
        made = {"shop": (await keys.create_key("northwind", "operator", name="shop",
                                               by="test"))[1]}
        for name in ("ana", "ben"):
            made[name] = (await keys.create_key("northwind", "reviewer", name=name,
                                                by="test"))[1]
    return made


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    """The desk with its scripted model, served on 127.0.0.1, and its keys (made before
    Chromium starts: Playwright's sync API keeps an event loop in this thread)."""
    if not CHROMIUM.exists():
        pytest.skip(f"BROWSER TESTS SKIPPED: no Chromium at {CHROMIUM} (apt-get install "
                    "chromium; .ci/run installs it)")
    from examples.support_desk.app import build_app
    from examples.support_desk.scripted import specialist_model

    folder = tmp_path / "desk"
    app = build_app(folder, model=specialist_model(), caps=[])
    keys = asyncio.run(_keys(folder / "runs.db"))
    thread = ServerThread(app)
    url = thread.start()
    try:
        yield url, keys, folder
    finally:
        thread.stop()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def sign_in(page: Any, url: str, key: str) -> None:
    page.goto(f"{url}/console/login?next=/console/approvals")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/console/approvals"))


def test_a_refund_two_reviewers_approve_in_the_console_reaches_the_customer(
        desk: tuple[str, dict[str, str], Path]) -> None:
    url, keys, folder = desk
    who = S["refund_two_approvals"]
    shop_token = httpx.post(f"{url}/v1/auth/token", timeout=30, headers={
        "Authorization": f"Bearer {keys['shop']}"}).json()["token"]
    token = httpx.post(f"{url}/v1/chat/tokens", json={"user": who.customer_id}, timeout=30,
                       headers={"Authorization": f"Bearer {shop_token}"}).json()["token"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        customer, ana, ben = (browser.new_context(viewport=LAPTOP) for _ in range(3))
        for ctx in (customer, ana, ben):
            ctx.set_default_timeout(LIVE_MS)
        try:
            chat = customer.new_page()
            chat.goto(f"{url}/chat/login?next=/chat%3Fagent%3Ddesk#token={token}")
            expect(chat.get_by_label("Message")).to_be_visible()
            chat.get_by_label("Message").fill(f"Refund my order {who.order_id} please")
            chat.get_by_role("button", name="Send").click()
            expect(chat.locator("#chat-notice")).to_contain_text("Waiting for approval")

            first = ana.new_page()
            sign_in(first, url, keys["ana"])
            card = first.locator("article.card", has_text="refund_order")
            expect(card).to_contain_text("2 different people must approve")
            expect(card).to_contain_text(who.order_id)
            card.get_by_role("button", name="Approve").click()
            expect(card.locator("form.approve .msg")).to_contain_text("1 of 2 approved (ana")
            expect(chat.locator("#chat-notice")).to_contain_text("Waiting for approval")
            assert refunds(folder) == []  # one reviewer is not enough
            shot(first, "desk-approval-1-of-2.png")

            second = ben.new_page()
            sign_in(second, url, keys["ben"])
            card = second.locator("article.card", has_text="refund_order")
            expect(card).to_contain_text("1 of 2 approved (ana")
            card.get_by_role("button", name="Approve").click()
            expect(card.locator(".done")).to_contain_text("Approved")

            answers = chat.locator(".msg-agent p")
            expect(answers.last).to_contain_text(
                f"refund of 2490.0 EUR for order {who.order_id} is issued", timeout=LIVE_MS)
            expect(chat.locator("#chat-notice")).to_be_hidden()
            shot(chat, "desk-chat-refund.png")
        finally:
            browser.close()
    assert refunds(folder) == [(who.customer_id, who.order_id, 249000)]


def refunds(folder: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(folder / "desk.db") as conn:
        return conn.execute("SELECT customer_id, order_id, amount_cents FROM effects "
                            "WHERE kind = 'refund'").fetchall()
