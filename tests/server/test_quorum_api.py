"""N-of-M approvals over HTTP and in the console: a refund that needs two reviewers shows
``reviewers`` and ``reviews`` in ``/v1/approvals`` and ``/v1/approvals/{id}``; the first
approval answers 200 with the request still open; the same reviewer again is a 409 naming
them; the run's own user is refused; the second reviewer's approval runs the refund once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel import Agent
from keel.runtime import ApprovalPolicy, ApprovalRule
from keel.server import App, KeyStore
from keel.store import SQLiteStore
from keel.testing import FunctionModel
from tests.server.apps import _think, lookup, refund
from tests.server.conftest import ServerThread

POLICY = ApprovalPolicy(rules=(
    ApprovalRule("refund", lambda a: a["amount"] > 100, "refunds over 100"),
    ApprovalRule("refund", lambda a: a["amount"] > 1000, "refunds over 1000", reviewers=2)))


class Desk:
    def __init__(self, url: str, db: str, keys: dict[str, tuple[str, str]]) -> None:
        self.url, self.db, self.keys = url, db, keys

    def client(self, name: str) -> httpx.Client:
        secret = self.keys[name][1]
        token = httpx.post(f"{self.url}/v1/auth/token",
                           headers={"Authorization": f"Bearer {secret}"}).json()["token"]
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {token}"})

    def who(self, name: str) -> str:
        return f"{name} (key {self.keys[name][0]})"


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    db = str(tmp_path / "runs.db")

    async def make() -> dict[str, tuple[str, str]]:
        out = {}
        async with KeyStore(db) as keys:
            for name, role in (("ana", "reviewer"), ("bob", "reviewer"), ("ops", "operator"),
                               ("eve", "reviewer")):
                tenant = "globex" if name == "eve" else "acme"
                key, secret = await keys.create_key(tenant, role, name=name, by="test")
                out[name] = (key.key_id, secret)
        return out

    keys = asyncio.run(make())
    agent = Agent("support", model=FunctionModel(_think), tools=[lookup, refund],
                  approval=POLICY)
    thread = ServerThread(App([agent], store=db))
    url = thread.start()
    try:
        yield Desk(url, db, keys)
    finally:
        thread.stop()


def _start(desk: Desk, text: str, user: str | None = None) -> dict[str, Any]:
    with desk.client("ops") as c:
        r = c.post("/v1/runs", json={"agent": "support", "input": text, "wait": True,
                                     **({"user": user} if user else {})})
        assert r.status_code in (200, 202), r.text
        return r.json()  # type: ignore[no-any-return]


def _approval_of(c: httpx.Client, run_id: str) -> dict[str, Any]:
    return next(t for t in c.get("/v1/approvals").json()["items"] if t["run_id"] == run_id)


def test_two_reviewers_over_http(desk: Desk) -> None:
    run = _start(desk, "refund A1 5000")
    small = _start(desk, "refund A2 500")
    assert run["status"] == "suspended"
    with desk.client("ana") as ana:
        listed = _approval_of(ana, run["run_id"])
        assert listed["reviewers"] == 2 and listed["reviews"] == []
        assert listed["progress"] == "0 of 2 approved"
        one = _approval_of(ana, small["run_id"])
        assert one["reviewers"] == 1 and one["reviews"] == [] and one["progress"] is None
        task_id = listed["id"]
        first = ana.post(f"/v1/approvals/{task_id}/approve", json={"comment": "looks right"})
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["status"] == "open" and body["reviewers"] == 2
        assert [(r["by"], r["approved"], r["comment"]) for r in body["reviews"]] == [
            (desk.who("ana"), True, "looks right")]
        assert body["progress"] == f"1 of 2 approved ({desk.who('ana')})"
        again = ana.post(f"/v1/approvals/{task_id}/approve", json={})
        assert again.status_code == 409
        assert "has already approved" in again.json()["error"]["message"]
        shown = ana.get(f"/v1/approvals/{task_id}").json()
        assert shown["status"] == "open" and len(shown["reviews"]) == 1
        assert ana.get(f"/v1/runs/{run['run_id']}").json()["status"] == "suspended"
    with desk.client("eve") as eve:  # another tenant sees nothing of it
        assert eve.get(f"/v1/approvals/{task_id}").status_code == 404
        assert eve.post(f"/v1/approvals/{task_id}/approve", json={}).status_code == 404
    with desk.client("bob") as bob:
        done = bob.post(f"/v1/approvals/{task_id}/approve", json={})
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "resolved"
        assert [r["by"] for r in done.json()["reviews"]] == [desk.who("ana"), desk.who("bob")]
        deadline = time.monotonic() + 15
        while bob.get(f"/v1/runs/{run['run_id']}").json()["status"] != "completed":
            assert time.monotonic() < deadline, "the run did not go on after two approvals"
            time.sleep(0.05)

    async def journal() -> list[Any]:
        async with SQLiteStore(desk.db) as store:
            return await store.read_journal(run["run_id"])

    entries = asyncio.run(journal())
    decision = next(e for e in entries if e.kind == "approval" and e.phase == "result")
    assert [r["by"] for r in decision.data["reviews"]] == [desk.who("ana"), desk.who("bob")]
    assert sum(1 for e in entries if e.kind == "tool" and e.name == "refund"
               and e.phase == "result") == 1


def test_the_runs_own_user_may_not_approve(desk: Desk) -> None:
    run = _start(desk, "refund A1 5000", user=desk.who("ana"))
    with desk.client("ana") as ana:
        task_id = _approval_of(ana, run["run_id"])["id"]
        own = ana.post(f"/v1/approvals/{task_id}/approve", json={})
        assert own.status_code == 400
        assert "cannot approve their own request" in own.json()["error"]["message"]
        edited = ana.post(f"/v1/approvals/{task_id}/approve",
                          json={"edited_args": {"order": "A1", "amount": 10}})
        assert edited.status_code == 400
        assert ana.get(f"/v1/approvals/{task_id}").json()["reviews"] == []


def test_the_console_page_shows_the_progress(desk: Desk) -> None:
    run = _start(desk, "refund A1 5000")
    with desk.client("ana") as ana:
        task_id = _approval_of(ana, run["run_id"])["id"]
        assert ana.post(f"/v1/approvals/{task_id}/approve", json={"comment": "<b>ok</b>"}
                        ).status_code == 200
    with httpx.Client(base_url=desk.url, timeout=30, follow_redirects=False) as browser:
        r = browser.post("/console/login", data={"api_key": desk.keys["bob"][1],
                                                 "next": "/console"})
        assert r.status_code == 303
        for path in ("/console/approvals", f"/console/approvals/{task_id}"):
            page = browser.get(path).text
            assert "2 different people must approve" in page
            assert f"1 of 2 approved ({desk.who('ana')})" in page
            assert "&lt;b&gt;ok&lt;/b&gt;" in page and "<b>ok</b>" not in page
            assert "one of 2 reviewers" in page
