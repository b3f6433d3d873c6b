"""The HTTP API over real HTTP: every endpoint with every role, and what it wrote."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from keel.server import KeyStore
from keel.store import SQLiteStore
from tests.server.conftest import ROLES, Served


def _run(c: httpx.Client, text: str, **extra: Any) -> dict[str, Any]:
    r = c.post("/v1/runs", json={"agent": "support", "input": text, "wait": True, **extra})
    assert r.status_code in (200, 202), r.text
    return r.json()  # type: ignore[no-any-return]


def _stored(served: Served, run_id: str) -> Any:
    async def go() -> Any:
        async with SQLiteStore(served.db) as store:
            return await store.get_run(run_id), await store.read_journal(run_id)
    return asyncio.run(go())


def _until(fn: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_openapi_lists_the_v1_api(served: Served) -> None:
    spec = httpx.get(f"{served.url}/openapi.json").json()
    paths = set(spec["paths"])
    for path in ("/v1/runs", "/v1/runs/{run_id}", "/v1/runs/{run_id}/events",
                 "/v1/runs/{run_id}/timeline", "/v1/runs/{run_id}/cancel",
                 "/v1/approvals/{task_id}/approve", "/v1/escalations/{task_id}/claim",
                 "/v1/conversations/{conversation_id}/messages", "/v1/stats", "/v1/costs",
                 "/v1/auth/token", "/v1/health", "/v1/ready", "/metrics"):
        assert path in paths, path


def test_a_run_is_started_read_and_its_timeline_shown(served: Served) -> None:
    with served.client("acme", "operator") as c:
        body = _run(c, "where is order A1?", user="u-7", conversation="conv-1")
        run_id = body["run_id"]
        assert body["status"] == "completed"
        got = c.get(f"/v1/runs/{run_id}").json()
        assert (got["tenant"], got["user"], got["conversation"]) == ("acme", "u-7", "conv-1")
        result = c.get(f"/v1/runs/{run_id}/result").json()
        assert result["output"] == "Done: order A1: shipped <b>on time</b>"
        journal = c.get(f"/v1/runs/{run_id}/timeline").json()["journal"]
        kinds = [(e["kind"], e["phase"]) for e in journal]
        assert ("model", "result") in kinds and ("tool", "result") in kinds
    record, entries = _stored(served, run_id)
    assert record.tenant == "acme" and record.status == "completed"
    assert len(entries) == len(journal)


def test_an_async_start_answers_at_once_with_the_run_id(served: Served) -> None:
    with served.client("acme", "operator") as c:
        r = c.post("/v1/runs", json={"agent": "support", "input": "hello"})
        assert r.status_code == 202
        run_id = r.json()["run_id"]
        assert r.headers["location"] == f"/v1/runs/{run_id}"
        done = _until(lambda: c.get(f"/v1/runs/{run_id}").json()["status"] == "completed")
        assert done


def test_runs_are_listed_newest_first_a_page_at_a_time_without_repeats(served: Served) -> None:
    with served.client("acme", "operator") as c:
        ids = [_run(c, f"hello {i}")["run_id"] for i in range(7)]
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = c.get("/v1/runs", params=params).json()
            seen += [r["run_id"] for r in page["runs"]]
            if len(seen) == 3:  # a run started between pages must not shift the next one
                _run(c, "a newcomer")
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == list(reversed(ids))
        assert c.get("/v1/runs", params={"cursor": "garbage!"}).status_code == 400
        listed = c.get("/v1/runs", params={"status": "completed", "agent": "support"}).json()
        assert all(r["status"] == "completed" for r in listed["runs"])


def test_an_approval_is_listed_shown_edited_approved_and_the_run_completes(
        served: Served) -> None:
    with served.client("acme", "operator") as op:
        run = _run(op, "refund A1 250")
    assert run["status"] == "suspended"
    with served.client("acme", "reviewer") as rv:
        items = rv.get("/v1/approvals").json()["items"]
        (task,) = [t for t in items if t["run_id"] == run["run_id"]]
        shown = rv.get(f"/v1/approvals/{task['id']}").json()
        assert shown["data"]["tool"] == "refund"
        assert shown["data"]["arguments"] == {"order": "A1", "amount": 250.0}
        assert shown["run"]["input"] == "refund A1 250"
        bad = rv.post(f"/v1/approvals/{task['id']}/approve",
                      json={"edited_args": {"order": "A1", "amount": "lots"}})
        assert bad.status_code == 400 and "amount" in bad.json()["error"]["message"]
        ok = rv.post(f"/v1/approvals/{task['id']}/approve",
                     json={"edited_args": {"order": "A1", "amount": 120}, "comment": "half"})
        assert ok.status_code == 200, ok.text
        again = rv.post(f"/v1/approvals/{task['id']}/deny", json={"comment": "no"})
        assert again.status_code == 409
        done = _until(lambda: rv.get(f"/v1/runs/{run['run_id']}").json()["status"]
                      == "completed")
        assert done
        assert rv.get(f"/v1/runs/{run['run_id']}").json()["output"] == (
            "Done: refunded 120.00 on A1")
    _, entries = _stored(served, run["run_id"])
    decision = next(e for e in entries if e.kind == "approval" and e.phase == "result")
    assert decision.data["by"].startswith("reviewer of acme (key ") and decision.data["approved"]


def test_a_denial_needs_a_comment(served: Served) -> None:
    with served.client("acme", "operator") as op:
        run = _run(op, "refund A2 300")
    with served.client("acme", "reviewer") as rv:
        (task,) = [t for t in rv.get("/v1/approvals").json()["items"]
                   if t["run_id"] == run["run_id"]]
        assert rv.post(f"/v1/approvals/{task['id']}/deny", json={}).status_code == 422
        assert rv.post(f"/v1/approvals/{task['id']}/deny",
                       json={"comment": "too much"}).status_code == 200
    record, _ = _stored(served, run["run_id"])
    assert record.status in ("running", "completed", "failed")


def test_an_escalation_is_claimed_and_answered(served: Served) -> None:
    with served.client("acme", "operator") as op:
        run = _run(op, "I want to talk to a human please")
    assert run["status"] == "suspended"
    with served.client("acme", "reviewer") as rv:
        (task,) = [t for t in rv.get("/v1/escalations").json()["items"]
                   if t["run_id"] == run["run_id"]]
        assert rv.get(f"/v1/escalations/{task['id']}").json()["data"]["trigger"] == (
            "human_requested")
        claimed = rv.post(f"/v1/escalations/{task['id']}/claim")
        assert claimed.status_code == 200 and claimed.json()["status"] == "claimed"
        answered = rv.post(f"/v1/escalations/{task['id']}/answer",
                           json={"answer": "A person will call you today."})
        assert answered.status_code == 200
        assert rv.post(f"/v1/escalations/{task['id']}/dismiss",
                       json={"comment": "late"}).status_code == 409
    record, _ = _stored(served, run["run_id"])
    assert record.status == "completed" and record.output == "A person will call you today."


def test_an_escalation_is_dismissed_with_a_comment(served: Served) -> None:
    with served.client("acme", "operator") as op:
        run = _run(op, "let me talk to a real person")
    with served.client("acme", "admin") as ad:
        (task,) = [t for t in ad.get("/v1/escalations").json()["items"]
                   if t["run_id"] == run["run_id"]]
        assert ad.post(f"/v1/escalations/{task['id']}/dismiss", json={}).status_code == 422
        assert ad.post(f"/v1/escalations/{task['id']}/dismiss",
                       json={"comment": "spam"}).status_code == 200
    record, _ = _stored(served, run["run_id"])
    assert record.status == "cancelled"


def test_cancel_stops_a_suspended_run(served: Served) -> None:
    with served.client("acme", "operator") as op:
        run = _run(op, "refund A3 500")
        r = op.post(f"/v1/runs/{run['run_id']}/cancel", json={"reason": "customer left"})
        assert r.status_code == 200 and r.json()["outcome"] == "cancelled"
        assert op.post(f"/v1/runs/{run['run_id']}/cancel").status_code == 409
    record, _ = _stored(served, run["run_id"])
    assert record.status == "cancelled"


def test_conversations_continue_list_show_and_delete(served: Served) -> None:
    with served.client("acme", "operator") as c:
        first = c.post("/v1/conversations/chat-1/messages",
                       json={"agent": "support", "input": "hello", "wait": True}).json()
        second = c.post("/v1/conversations/chat-1/messages",
                        json={"agent": "support", "input": "order B2?", "wait": True}).json()
        assert first["status"] == second["status"] == "completed"
        listed = c.get("/v1/conversations").json()["conversations"]
        assert {"conversation": "chat-1", "turns": 2}.items() <= listed[0].items()
        turns = c.get("/v1/conversations/chat-1").json()["runs"]
        assert [t["input"] for t in turns] == ["hello", "order B2?"]
        assert c.delete("/v1/conversations/chat-1").json()["deleted_runs"] == 2
        assert c.get("/v1/conversations/chat-1").status_code == 404
        assert c.delete("/v1/conversations/chat-1").status_code == 404
    with pytest.raises(Exception, match="no run"):
        _stored(served, first["run_id"])


def test_stats_costs_health_ready_and_metrics(served: Served) -> None:
    with served.client("acme", "operator") as c:
        _run(c, "where is order C3?")
    with served.client("acme", "viewer") as v:
        stats = v.get("/v1/stats", params={"by": "agent,day"}).json()
        assert stats["total"]["runs"] >= 1 and stats["query"]["tenant"] == "acme"
        assert v.get("/v1/stats", params={"by": "colour"}).status_code == 400
        costs = v.get("/v1/costs", params={"days": 7}).json()
        assert costs["tenant"] == "acme" and costs["rows"][0]["agent"] == "support"
        assert v.get("/metrics").status_code == 403
    assert httpx.get(f"{served.url}/v1/health").json() == {"status": "ok"}
    ready = httpx.get(f"{served.url}/v1/ready")
    assert ready.status_code == 200 and ready.json()["checks"] == {"runs": "ok", "keys": "ok"}
    with served.client("acme", "admin") as a:
        metrics = a.get("/metrics")
        assert metrics.status_code == 200 and "# TYPE" in metrics.text


# ----------------------------------------------------------------------- roles and keys

#: (method, path, body, action) for each endpoint that acts
ACTS = [
    ("post", "/v1/runs", {"agent": "support", "input": "hi"}, "run"),
    ("post", "/v1/conversations/c9/messages", {"agent": "support", "input": "hi"}, "run"),
    ("delete", "/v1/conversations/c9", None, "run"),
    ("post", "/v1/approvals/ap-000000000000/approve", {}, "decide"),
    ("post", "/v1/approvals/ap-000000000000/deny", {"comment": "x"}, "decide"),
    ("post", "/v1/escalations/es-000000000000/claim", None, "decide"),
    ("post", "/v1/escalations/es-000000000000/answer", {"answer": "x"}, "decide"),
    ("get", "/v1/audit", None, "admin"),
    ("get", "/v1/keys", None, "admin"),
    ("get", "/metrics", None, "admin"),
]
MAY = {"viewer": {"read"}, "operator": {"read", "run"}, "reviewer": {"read", "decide"},
       "admin": {"read", "run", "decide", "admin"}}


@pytest.mark.parametrize("role", ROLES)
def test_each_role_may_do_what_it_is_for_and_nothing_else(served: Served, role: str) -> None:
    with served.client("acme", role) as c:
        for method, path, body, action in ACTS:
            r = c.request(method, path, json=body)
            if action in MAY[role]:
                assert r.status_code != 403, (role, path, r.text)
            else:
                assert r.status_code == 403, (role, path, r.status_code)
                assert r.json()["error"]["type"] == "forbidden"
        assert c.get("/v1/runs").status_code == 200


def test_keys_are_managed_over_the_api_and_audited(served: Served) -> None:
    with served.client("acme", "admin") as a:
        made = a.post("/v1/keys", json={"role": "viewer", "name": "dashboard"})
        assert made.status_code == 201
        key_id, secret = made.json()["key"]["key_id"], made.json()["api_key"]
        token = httpx.post(f"{served.url}/v1/auth/token",
                           headers={"Authorization": f"Bearer {secret}"}).json()["token"]
        viewer = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{served.url}/v1/runs", headers=viewer).status_code == 200
        assert a.post(f"/v1/keys/{key_id}/revoke").status_code == 200
        # revoked: its live token is refused at once, and the key cannot be exchanged
        assert httpx.get(f"{served.url}/v1/runs", headers=viewer).status_code == 401
        assert httpx.post(f"{served.url}/v1/auth/token",
                          headers={"Authorization": f"Bearer {secret}"}).status_code == 401
        assert a.post(f"/v1/keys/{key_id}/revoke").status_code == 409
        entries = a.get("/v1/audit").json()["entries"]
        actions = [e["action"] for e in entries]
        assert actions[:2] == ["key.revoke", "key.create"] or "key.revoke" in actions
    with served.client("globex", "admin") as g:
        assert g.post(f"/v1/keys/{key_id}/rotate").status_code == 404
        assert all(e["tenant"] == "globex" for e in g.get("/v1/audit").json()["entries"])


def test_a_rotated_key_stops_working_and_its_new_secret_works(served: Served) -> None:
    async def make() -> tuple[str, str]:
        async with KeyStore(served.db) as keys:
            record, secret = await keys.create_key("acme", "viewer", name="r", by="t")
            return record.key_id, secret
    key_id, old = asyncio.run(make())
    token = httpx.post(f"{served.url}/v1/auth/token",
                       headers={"Authorization": f"Bearer {old}"}).json()["token"]
    with served.client("acme", "admin") as a:
        new = a.post(f"/v1/keys/{key_id}/rotate").json()["api_key"]
    assert httpx.get(f"{served.url}/v1/runs",
                     headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert httpx.post(f"{served.url}/v1/auth/token",
                      headers={"Authorization": f"Bearer {old}"}).status_code == 401
    assert httpx.post(f"{served.url}/v1/auth/token",
                      headers={"Authorization": f"Bearer {new}"}).status_code == 200
