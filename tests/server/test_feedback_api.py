"""``POST`` / ``GET /v1/runs/{run_id}/feedback``: feedback given over HTTP is kept in the store
with the run's tenant and counted in ``keel_feedback_total``; another tenant's run is 404 (as
an unknown id) and nothing is written; malformed, empty and oversized bodies are refused;
viewers may read but not give; comments come back masked; the routes are in the OpenAPI."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keel.store import Feedback, SQLiteStore
from tests.server.conftest import Served


def _stored(served: Served) -> list[Feedback]:
    async def go() -> list[Feedback]:
        async with SQLiteStore(served.db) as store:
            return await store.list_feedback()
    return asyncio.run(go())


@pytest.fixture
def run_id(served: Served) -> str:
    with served.client("acme", "operator") as c:
        r = c.post("/v1/runs", json={"agent": "support", "input": "hello there", "wait": True})
    assert r.status_code == 200, r.text
    return str(r.json()["run_id"])


def _metric(served: Served, thumbs: str) -> float:
    with served.client("acme", "admin") as a:
        text = a.get("/metrics").text
    for line in text.splitlines():
        if line.startswith("keel_feedback_total{") and 'agent="support"' in line \
                and f'thumbs="{thumbs}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_feedback_is_kept_counted_and_read_back(served: Served, run_id: str) -> None:
    before = _metric(served, "down")
    with served.client("acme", "operator") as c:
        r = c.post(f"/v1/runs/{run_id}/feedback",
                   json={"thumbs": "down", "score": 0.25, "by": "user-7",
                         "comment": "wrong; mail me at jane.doe@example.com",
                         "feedback_id": "fb-1", "metadata": {"page": "chat"}})
        assert r.status_code == 201, r.text
        again = c.post(f"/v1/runs/{run_id}/feedback", json={"thumbs": "up",
                                                            "feedback_id": "fb-1"})
        assert again.status_code == 200 and again.json()["thumbs"] == "down"
    body = r.json()
    assert (body["feedback_id"], body["thumbs"], body["score"], body["by"], body["negative"]) \
        == ("fb-1", "down", 0.25, "user-7", True)
    assert "jane.doe@example.com" not in body["comment"] and "[EMAIL]" in body["comment"]
    [kept] = _stored(served)
    assert (kept.run_id, kept.tenant, kept.thumbs, kept.by) == (run_id, "acme", "down",
                                                               "user-7")
    assert kept.comment == "wrong; mail me at jane.doe@example.com", "kept as written"
    assert _metric(served, "down") == before + 1
    with served.client("acme", "viewer") as v:
        listed = v.get(f"/v1/runs/{run_id}/feedback")
    assert listed.status_code == 200
    data = listed.json()
    assert [i["feedback_id"] for i in data["items"]] == ["fb-1"]
    assert data["summary"]["negative_rate"] == 1.0 and data["summary"]["down"] == 1


def test_the_caller_is_the_default_giver(served: Served, run_id: str) -> None:
    with served.client("acme", "reviewer") as c:
        r = c.post(f"/v1/runs/{run_id}/feedback", json={"thumbs": "up"})
    assert r.status_code == 201, r.text
    assert r.json()["by"].startswith("reviewer of acme (key ")


def test_another_tenants_run_is_not_found_and_nothing_is_written(
        served: Served, run_id: str) -> None:
    with served.client("globex", "admin") as g:
        foreign = g.post(f"/v1/runs/{run_id}/feedback", json={"thumbs": "down"})
        unknown = g.post(f"/v1/runs/{'0' * 28}/feedback", json={"thumbs": "down"})
        read = g.get(f"/v1/runs/{run_id}/feedback")
    assert foreign.status_code == unknown.status_code == read.status_code == 404
    assert foreign.json()["error"]["message"].replace(run_id, "ID") == \
        unknown.json()["error"]["message"].replace("0" * 28, "ID")
    assert _stored(served) == []


BAD_BODIES: list[tuple[Any, int]] = [
    ({}, 400),
    ({"comment": ""}, 400),
    ({"thumbs": "meh"}, 422),
    ({"score": 2}, 422),
    ({"score": -0.1}, 422),
    ({"score": "high"}, 422),
    ({"thumbs": "up", "extra": 1}, 422),
    ({"comment": "x" * 10_000}, 422),
    ({"thumbs": "up", "by": "b" * 500}, 422),
    ({"thumbs": "up", "feedback_id": "bad id!"}, 422),
    ({"thumbs": "up", "metadata": {"x": "y" * 20_000}}, 400),
    ({"thumbs": "up", "metadata": [1]}, 422),
    (["thumbs", "up"], 422),
]


def test_bad_bodies_are_refused(served: Served, run_id: str) -> None:
    with served.client("acme", "operator") as c:
        for body, status in BAD_BODIES:
            r = c.post(f"/v1/runs/{run_id}/feedback", json=body)
            assert r.status_code == status, (body, r.text)
            assert r.json()["error"]["status"] == status
    assert _stored(served) == []


def test_malformed_json_and_roles(served: Served, run_id: str) -> None:
    with served.client("acme", "operator") as c:
        r = c.post(f"/v1/runs/{run_id}/feedback", content=b"{not json",
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 422
        bad_id = c.post("/v1/runs/bad%20id/feedback", json={"thumbs": "up"})
        assert bad_id.status_code == 422
    with served.client("acme", "viewer") as v:
        r = v.post(f"/v1/runs/{run_id}/feedback", json={"thumbs": "up"})
        assert r.status_code == 403 and "may not give feedback" in r.json()["error"]["message"]
    assert _stored(served) == []


def test_routes_are_in_the_openapi(served: Served) -> None:
    with served.client("acme", "viewer") as c:
        spec = c.get("/openapi.json").json()
    ops = spec["paths"]["/v1/runs/{run_id}/feedback"]
    assert set(ops) == {"get", "post"}
    assert "GiveFeedback" in spec["components"]["schemas"]
