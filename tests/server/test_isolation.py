"""A tenant sees and acts only on its own objects: for every endpoint that names an object,
another tenant's token gets 404, exactly as for an id that does not exist, and nothing in
the store changes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keel.store import SQLiteStore, TaskFilter
from tests.server.conftest import Served


def _snapshot(served: Served) -> Any:
    async def go() -> Any:
        async with SQLiteStore(served.db) as store:
            runs = await store.list_runs()
            journals = {r.run_id: await store.read_journal(r.run_id) for r in runs}
            tasks = await store.list_tasks(TaskFilter(limit=1000))
            return runs, journals, tasks
    return asyncio.run(go())


@pytest.fixture
def acme_objects(served: Served) -> dict[str, str]:
    with served.client("acme", "operator") as c:
        done = c.post("/v1/runs", json={"agent": "support", "input": "order Z9?",
                                        "conversation": "acme-conv", "wait": True}).json()
        gated = c.post("/v1/runs", json={"agent": "support", "input": "refund Z9 900",
                                         "wait": True}).json()
        human = c.post("/v1/runs", json={"agent": "support", "input": "I want to talk to a "
                                         "human", "wait": True}).json()
    with served.client("acme", "admin") as a:
        approval = a.get("/v1/approvals").json()["items"][0]["id"]
        escalation = a.get("/v1/escalations").json()["items"][0]["id"]
    assert gated["status"] == human["status"] == "suspended"
    return {"run": done["run_id"], "gated": gated["run_id"], "approval": approval,
            "escalation": escalation, "conversation": "acme-conv"}


def _requests(o: dict[str, str]) -> list[tuple[str, str, Any]]:
    return [
        ("get", f"/v1/runs/{o['run']}", None),
        ("get", f"/v1/runs/{o['run']}/result", None),
        ("get", f"/v1/runs/{o['run']}/timeline", None),
        ("get", f"/v1/runs/{o['run']}/events", None),
        ("post", f"/v1/runs/{o['gated']}/cancel", {"reason": "x"}),
        ("get", f"/v1/conversations/{o['conversation']}", None),
        ("delete", f"/v1/conversations/{o['conversation']}", None),
        ("get", f"/v1/approvals/{o['approval']}", None),
        ("post", f"/v1/approvals/{o['approval']}/approve", {}),
        ("post", f"/v1/approvals/{o['approval']}/deny", {"comment": "no"}),
        ("get", f"/v1/escalations/{o['escalation']}", None),
        ("post", f"/v1/escalations/{o['escalation']}/claim", None),
        ("post", f"/v1/escalations/{o['escalation']}/answer", {"answer": "hi"}),
        ("post", f"/v1/escalations/{o['escalation']}/resolve", {"note": "go"}),
        ("post", f"/v1/escalations/{o['escalation']}/dismiss", {"comment": "x"}),
    ]


def test_another_tenant_gets_404_on_every_object_and_nothing_changes(
        served: Served, acme_objects: dict[str, str]) -> None:
    before = _snapshot(served)
    with served.client("globex", "admin") as g:
        for method, path, body in _requests(acme_objects):
            r = g.request(method, path, json=body)
            assert r.status_code == 404, (path, r.status_code, r.text)
            assert r.json()["error"]["type"] == "not_found"
            unknown = g.request(method, path.replace(acme_objects["run"], "0" * 28), json=body)
            if acme_objects["run"] in path:  # the same answer as for an id that is not there
                assert unknown.json()["error"]["message"].replace("0" * 28, "ID") == (
                    r.json()["error"]["message"].replace(acme_objects["run"], "ID"))
    assert _snapshot(served) == before


def test_lists_stats_and_costs_hold_only_the_callers_tenant(
        served: Served, acme_objects: dict[str, str]) -> None:
    with served.client("globex", "operator") as g:
        g.post("/v1/runs", json={"agent": "support", "input": "hello", "wait": True})
    with served.client("globex", "admin") as g:
        runs = g.get("/v1/runs").json()["runs"]
        assert [r["tenant"] for r in runs] == ["globex"]
        assert g.get("/v1/runs", params={"conversation": "acme-conv"}).json()["runs"] == []
        assert g.get("/v1/approvals").json()["items"] == []
        assert g.get("/v1/escalations").json()["items"] == []
        assert g.get("/v1/conversations").json()["conversations"] == []
        assert g.get("/v1/stats").json()["total"]["runs"] == 1
        assert {r["agent"] for r in g.get("/v1/costs").json()["rows"]} == {"support"}
        assert all(e["tenant"] == "globex" for e in g.get("/v1/audit").json()["entries"])
        assert all(k["tenant"] == "globex" for k in g.get("/v1/keys").json()["keys"])
    with served.client("acme", "admin") as a:
        assert {r["tenant"] for r in a.get("/v1/runs").json()["runs"]} == {"acme"}
        assert a.get("/v1/stats").json()["total"]["runs"] == 3
