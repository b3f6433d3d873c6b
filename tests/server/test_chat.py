"""The customer chat over real HTTP: customer tokens minted by an operator's key, bound to one
user, that may only chat; ``/v1/chat`` keeps each customer to their own conversations, shows
them only what a customer may see of a run, and refuses bad messages with a clear error."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import Served, serve
from tests.server.test_events import sse


def mint(served: Served, user: str, role: str = "operator", **body: Any) -> httpx.Response:
    with served.client("acme", role) as c:
        return c.post("/v1/chat/tokens", json={"user": user, **body})


def customer(served: Served, user: str) -> httpx.Client:
    r = mint(served, user)
    assert r.status_code == 201, r.text
    return httpx.Client(base_url=served.url, timeout=30,
                        headers={"Authorization": f"Bearer {r.json()['token']}"})


@pytest.fixture
def ana(served: Served) -> Iterator[httpx.Client]:
    with customer(served, "cust-ana") as c:
        yield c


def say(c: httpx.Client, text: str, conversation: str | None = None,
        agent: str = "support") -> httpx.Response:
    return c.post("/v1/chat/messages", json={"agent": agent, "input": text,
                                             "conversation": conversation})


def follow(c: httpx.Client, run_id: str, on: Any = None) -> list[dict[str, Any]]:
    """The turn's chat events until its result (``on(event)`` called with each)."""
    events = []
    with c.stream("GET", f"/v1/chat/runs/{run_id}/events") as stream:
        assert stream.status_code == 200
        for event in sse(stream):
            events.append(event)
            if on is not None:
                on(event)
            if event["event"] == "result":
                break
    return events


def test_a_customer_chats_and_the_runs_carry_their_user(served: Served,
                                                        ana: httpx.Client) -> None:
    first = say(ana, "hello there")
    assert first.status_code == 202, first.text
    conversation = first.json()["conversation"]
    events = follow(ana, first.json()["run_id"])
    assert events[-1]["data"] == {"status": "completed", "output": "You said: hello there"}
    second = say(ana, "where is order A1?", conversation)
    assert second.status_code == 202
    follow(ana, second.json()["run_id"])
    turns = ana.get(f"/v1/chat/conversations/{conversation}").json()["turns"]
    # the test model answers the first user message it sees: the history went along
    assert [(t["input"], t["answer"]) for t in turns] == [
        ("hello there", "You said: hello there"),
        ("where is order A1?", "You said: hello there")]
    with served.client("acme", "admin") as staff:  # what the store holds
        runs = staff.get("/v1/runs", params={"conversation": conversation}).json()["runs"]
        audit = staff.get("/v1/audit").json()["entries"]
    assert {r["user"] for r in runs} == {"cust-ana"} and len(runs) == 2
    said = [e for e in audit if e["action"] == "chat.message"]
    assert len(said) == 2
    assert all(e["who"].startswith("customer cust-ana (via key ") for e in said)


def test_a_customer_sees_only_their_own_conversations_and_runs(served: Served,
                                                               ana: httpx.Client) -> None:
    started = say(ana, "hello").json()
    follow(ana, started["run_id"])
    conversation, run_id = started["conversation"], started["run_id"]
    with customer(served, "cust-bo") as bo:
        for path in (f"/v1/chat/conversations/{conversation}", f"/v1/chat/runs/{run_id}",
                     f"/v1/chat/runs/{run_id}/events", "/v1/chat/conversations/nope"):
            r = bo.get(path)
            assert r.status_code == 404, path
        sneaky = say(bo, "me too", conversation)
        assert sneaky.status_code == 404
        assert sneaky.json()["error"]["message"] == f"no conversation {conversation!r} here"
    with served.client("acme", "admin") as staff:
        runs = staff.get("/v1/runs", params={"conversation": conversation}).json()["runs"]
    assert len(runs) == 1  # bo's message was not added
    with served.client("globex", "operator") as other_tenant:
        assert other_tenant.get(f"/v1/chat/runs/{run_id}").status_code == 404
    with served.client("acme", "operator") as staff:  # the staff see the tenant's
        assert staff.get(f"/v1/chat/runs/{run_id}").json()["answer"] == "You said: hello"


def test_a_customer_token_may_only_chat(served: Served, ana: httpx.Client) -> None:
    for method, path in (("GET", "/v1/runs"), ("GET", "/v1/approvals"),
                         ("GET", "/v1/escalations"), ("GET", "/v1/stats"),
                         ("GET", "/v1/flows"), ("GET", "/v1/conversations"),
                         ("POST", "/v1/runs"), ("POST", "/v1/chat/tokens"),
                         ("GET", "/v1/keys")):
        body = {"agent": "support", "input": "x"} if path == "/v1/runs" else (
            {"user": "eve"} if path == "/v1/chat/tokens" else None)
        r = ana.request(method, path, json=body)
        assert r.status_code == 403, (path, r.text)
    assert ana.post("/v1/auth/token").status_code == 401  # a token is not a key


def test_only_operators_and_admins_mint_customer_tokens(served: Served) -> None:
    for role, status in (("viewer", 403), ("reviewer", 403), ("admin", 201),
                         ("operator", 201)):
        r = mint(served, "cust-1", role)
        assert r.status_code == status, (role, r.text)
        if status == 201:
            assert {"role": "customer", "user": "cust-1", "tenant": "acme"}.items() \
                <= r.json().items()


MALFORMED_TOKEN_REQUESTS: list[dict[str, Any]] = [
    {"user": ""}, {"user": "a b"}, {"user": "../etc"}, {"user": "<script>"},
    {"user": "x" * 201}, {"user": "ana", "ttl_s": 10}, {"user": "ana", "ttl_s": 99999},
    {"user": "ana", "role": "admin"}, {"user": ["ana"]}, {},
]


def test_malformed_token_requests_are_refused(served: Served) -> None:
    with served.client("acme", "operator") as c:
        for body in MALFORMED_TOKEN_REQUESTS:
            r = c.post("/v1/chat/tokens", json=body)
            assert r.status_code in (400, 422), (body, r.text)
            assert r.json()["error"]["message"]
        audit = c.get("/v1/audit")
    assert audit.status_code == 403  # (an operator's key reads no audit log)
    with served.client("acme", "admin") as admin:
        minted = [e for e in admin.get("/v1/audit").json()["entries"]
                  if e["action"] == "token.customer"]
    assert minted == []  # nothing was minted


def test_revoking_the_minting_key_ends_its_customer_tokens(served: Served) -> None:
    with served.client("acme", "admin") as admin:
        made = admin.post("/v1/keys", json={"role": "operator", "name": "shop backend"})
        assert made.status_code == 201, made.text
        key = made.json()
    token = httpx.post(f"{served.url}/v1/auth/token",
                       headers={"Authorization": f"Bearer {key['api_key']}"}).json()["token"]
    minted = httpx.post(f"{served.url}/v1/chat/tokens", json={"user": "cy"},
                        headers={"Authorization": f"Bearer {token}"}).json()["token"]
    with httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {minted}"}) as cy:
        assert say(cy, "hi").status_code == 202
        with served.client("acme", "admin") as admin:
            key_id = key["key"]["key_id"]
            assert admin.post(f"/v1/keys/{key_id}/revoke").status_code == 200
        assert say(cy, "hi again").status_code == 401


BAD_MESSAGES = [
    ("", 400, "the message is empty"),
    ("   \n\t ", 400, "the message is empty"),
    ("x" * 50_000, 400, "the message is 50,000 characters; a chat message is at most 10,000"),
    ("x" * 150_000, 422, ""),
]
MALFORMED_MESSAGES: list[dict[str, Any]] = [
    {"agent": "ghost", "input": "hi"}, {"agent": "support"}, {"input": "hi"},
    {"agent": "support", "input": "hi", "user": "someone-else"},
    {"agent": "support", "input": "hi", "conversation": "../x"},
    {"agent": "support", "input": 42},
]


def test_bad_messages_get_clear_errors_and_start_nothing(served: Served,
                                                         ana: httpx.Client) -> None:
    for text, status, says in BAD_MESSAGES:
        r = say(ana, text)
        assert r.status_code == status, r.text[:300]
        assert says in r.json()["error"]["message"]
    for body in MALFORMED_MESSAGES:
        r = ana.post("/v1/chat/messages", json=body)
        assert r.status_code in (404, 422), (body, r.text)
    with served.client("acme", "admin") as staff:
        assert staff.get("/v1/runs").json()["runs"] == []  # nothing was started


def test_a_gated_call_shows_waiting_then_the_outcome_without_internals(
        served: Served, ana: httpx.Client) -> None:
    started = say(ana, "refund A1 250").json()

    def approve(event: dict[str, Any]) -> None:
        if event["event"] == "approval" and event["data"]["phase"] == "intent":
            with served.client("acme", "reviewer") as staff:
                task = staff.get("/v1/approvals").json()["items"][0]["id"]
            threading.Thread(target=_approve, args=(served, task)).start()

    events = follow(ana, started["run_id"], approve)
    names = [e["event"] for e in events]
    assert "approval" in names and names[-1] == "result"
    assert events[-1]["data"]["output"] == "Done: refunded 250.00 on A1"
    shown = json.dumps(events)
    for internal in ("tool_call", "observation", "arguments", "refunded 250.00 on A1\"}",
                     "amount", "step"):
        assert f'"{internal}' not in shown, internal
    assert set().union(*(e["data"].keys() for e in events)) <= {
        "status", "text", "phase", "output", "notice"}


def _approve(served: Served, task: str) -> None:
    with served.client("acme", "reviewer") as staff:
        assert staff.post(f"/v1/approvals/{task}/approve", json={}).status_code == 200


def test_an_escalation_says_a_person_took_over_and_their_answer_arrives(
        served: Served, ana: httpx.Client) -> None:
    started = say(ana, "I want to talk to a human").json()

    def answer(event: dict[str, Any]) -> None:
        if event["event"] == "escalation" and event["data"]["phase"] == "intent":
            with served.client("acme", "reviewer") as staff:
                item = staff.get("/v1/escalations", params={"status": "open"}).json()
            task = item["items"][0]["id"]
            threading.Thread(target=_answer, args=(served, task)).start()

    events = follow(ana, started["run_id"], answer)
    assert events[-1]["data"]["output"] == "Ana here: how can I help?"
    assert next(e["data"] for e in events if e["event"] == "escalation") == {"phase": "intent"}


def _answer(served: Served, task: str) -> None:
    with served.client("acme", "reviewer") as staff:
        r = staff.post(f"/v1/escalations/{task}/answer",
                       json={"answer": "Ana here: how can I help?"})
        assert r.status_code == 200


def _session(served: Served, token: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{served.url}/chat/login", data={"token": token, "next": "/chat"},
                      headers=headers, follow_redirects=False)


def test_the_chat_page_signs_a_customer_in_and_escapes_what_it_shows(
        served: Served, ana: httpx.Client) -> None:
    started = say(ana, "<script>alert(1)</script><img src=x onerror=alert(2)>").json()
    follow(ana, started["run_id"])
    token = mint(served, "cust-ana").json()["token"]
    r = _session(served, token)
    assert r.status_code == 303 and r.headers["location"] == "/chat"
    with httpx.Client(base_url=served.url, cookies=r.cookies, timeout=30) as browser:
        page = browser.get(f"/chat/{started['conversation']}")
        assert page.status_code == 200
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert 'href="/console/runs"' not in page.text  # no console for customers
        for path in ("/console", "/console/runs", "/console/approvals", "/console/flows"):
            assert browser.get(path).status_code == 403, path
        with customer(served, "cust-bo") as bo:
            theirs = say(bo, "mine").json()["conversation"]
        assert browser.get(f"/chat/{theirs}").status_code == 404
        # a state change with the cookie needs the CSRF token
        assert browser.post("/v1/chat/messages", json={"agent": "support",
                                                       "input": "hi"}).status_code == 403
        out = browser.post("/console/logout?to=chat", follow_redirects=False)
        assert out.status_code == 303 and out.headers["location"] == "/chat/login"


def test_the_chat_login_refuses_bad_tokens(served: Served) -> None:
    for token in ("", "nope", "x" * 5000, "keel_0123456789abcdef_" + "a" * 43):
        r = _session(served, token)
        assert r.status_code in (401, 422), r.text[:200]
        assert "keel_session" not in r.cookies


def test_the_chat_login_refuses_a_staff_token_and_other_sites(served: Served) -> None:
    assert _session(served, served.token("acme", "operator")).status_code == 401
    token = mint(served, "ana").json()["token"]
    assert _session(served, token, **{"Sec-Fetch-Site": "cross-site"}).status_code == 403


def test_each_customer_has_a_rate_limit_of_their_own(tmp_path: Path) -> None:
    for served in serve(tmp_path, rate_per_s=0.1, burst=3):
        with served.client("acme", "operator") as shop:
            tokens = [shop.post("/v1/chat/tokens", json={"user": u}).json()["token"]
                      for u in ("cust-ana", "cust-bo")]
        ana, bo = (httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {t}"})
                   for t in tokens)
        with ana, bo:
            assert [ana.get("/v1/chat/runs/nope").status_code for _ in range(4)] == [
                404, 404, 404, 429]
            assert bo.get("/v1/chat/runs/nope").status_code == 404  # not ana's bucket


@pytest.mark.parametrize(("output", "shown"), [
    ("hi", "hi"),
    ({"decision": {"action": "route", "route": "billing", "confidence": 0.9},
      "output": "routed answer"}, "routed answer"),
    ({"decision": {"action": "clarify", "question": "Which order?"}, "output": None},
     "Which order?"),
    ({"decision": {"action": "route"}, "output": {"answer": "nested"}}, "nested"),
    ({"reply": "r", "internal": 1}, "r"),
    ({"total": 3}, {"total": 3}),
    (None, None),
])
def test_a_chat_shows_the_answer_of_an_output_not_its_internals(output: Any,
                                                                  shown: Any) -> None:
    from keel.server._api_chat import answer_text

    assert answer_text(output) == shown


def test_chat_agents_limits_whom_customers_may_talk_to(tmp_path: Path) -> None:
    from keel.core import ConfigError
    from keel.server import App
    from tests.server.apps import support, talker

    with pytest.raises(ConfigError, match="not among the agents"):
        App([support], store=str(tmp_path / "a.db"), chat_agents=["ghost"])
    with pytest.raises(ConfigError, match="list of agent names"):
        App([support], store=str(tmp_path / "a.db"), chat_agents="support")
    assert App([support, talker], store=str(tmp_path / "a.db")).chat_agents is None
    for served in serve(tmp_path, chat_agents=["support"]):
        with customer(served, "cust-ana") as ana:
            refused = say(ana, "hello", agent="talker")
            assert refused.status_code == 404
            assert "no agent 'talker' to chat with" in refused.json()["error"]["message"]
            assert say(ana, "hello").status_code == 202
