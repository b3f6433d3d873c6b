"""The web console and the chat page over real HTTP: sign-in and sessions, redirects, CSRF,
escaping of everything users, tools and models wrote, security headers, roles and tenants."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from keel.server import KeyStore
from keel.server._auth import CSRF_COOKIE, SESSION_COOKIE
from keel.server._tokens import issue_token
from tests.server.conftest import Served

PAGES = ("/console", "/console/runs", "/console/approvals", "/console/escalations", "/chat")
XSS = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')
XSS_ESCAPED = ("&lt;script&gt;alert(1)&lt;/script&gt;",
               "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;")


@contextmanager
def session(served: Served, tenant: str = "acme", role: str = "reviewer") -> Iterator[httpx.Client]:
    """A browser-like client signed in to the console with the key of ``role``."""
    with httpx.Client(base_url=served.url, timeout=30, follow_redirects=False) as browser:
        r = browser.post("/console/login", data={"api_key": served.keys[(tenant, role)],
                                                 "next": "/console"})
        assert r.status_code == 303, r.text
        yield browser


def start(served: Served, text: str, **extra: object) -> dict[str, object]:
    with served.client("acme", "operator") as c:
        r = c.post("/v1/runs", json={"agent": "support", "input": text, "wait": True, **extra})
        assert r.status_code in (200, 202), r.text
        return r.json()  # type: ignore[no-any-return]


def open_approval(served: Served, text: str = "refund A1 250") -> tuple[str, str]:
    run = start(served, text)
    assert run["status"] == "suspended"
    with served.client() as c:
        items = c.get("/v1/approvals").json()["items"]
    task = next(t for t in items if t["run_id"] == run["run_id"])
    return str(run["run_id"]), str(task["id"])


def test_login_with_a_good_key_sets_the_session_and_csrf_cookies(served: Served) -> None:
    with httpx.Client(base_url=served.url, follow_redirects=False) as browser:
        form = browser.get("/console/login")
        assert form.status_code == 200
        assert '<label for="api_key">' in form.text
        r = browser.post("/console/login", data={"api_key": served.keys[("acme", "viewer")],
                                                 "next": "/console/runs"})
        assert r.status_code == 303
        assert r.headers["location"] == "/console/runs"
        cookies = {c.split("=", 1)[0]: c for c in r.headers.get_list("set-cookie")}
        assert "HttpOnly" in cookies[SESSION_COOKIE]
        assert "samesite=strict" in cookies[SESSION_COOKIE].lower()
        assert "Path=/" in cookies[SESSION_COOKIE]
        assert "HttpOnly" not in cookies[CSRF_COOKIE]
        assert "samesite=strict" in cookies[CSRF_COOKIE].lower()
        assert browser.get("/console/runs").status_code == 200


@pytest.mark.parametrize("key", ["keel_0123456789abcdef_" + "x" * 43, "not a key", ""])
def test_a_wrong_key_gets_the_form_again_with_401_and_is_never_echoed(served: Served,
                                                                     key: str) -> None:
    r = httpx.post(f"{served.url}/console/login", data={"api_key": key, "next": "/console"})
    assert r.status_code == 401
    assert "not accepted" in r.text
    assert '<input id="api_key"' in r.text
    if key:
        assert key not in r.text
    assert SESSION_COOKIE not in r.headers.get("set-cookie", "")


def test_a_revoked_key_cannot_sign_in_and_its_session_ends(served: Served) -> None:
    with session(served, role="viewer") as browser:
        assert browser.get("/console").status_code == 200
        with served.client() as admin:
            key_id = served.keys[("acme", "viewer")].split("_")[1]
            assert admin.post(f"/v1/keys/{key_id}/revoke").status_code == 200
        r = browser.get("/console")
        assert r.status_code == 303
        assert r.headers["location"].startswith("/console/login")
    r = httpx.post(f"{served.url}/console/login",
                   data={"api_key": served.keys[("acme", "viewer")]})
    assert r.status_code == 401


def test_logout_clears_both_cookies(served: Served) -> None:
    with session(served) as browser:
        r = browser.post("/console/logout")
        assert r.status_code == 303
        cleared = r.headers.get_list("set-cookie")
        assert any(c.startswith(f"{SESSION_COOKIE}=") and "Max-Age=0" in c for c in cleared)
        assert any(c.startswith(f"{CSRF_COOKIE}=") and "Max-Age=0" in c for c in cleared)
        assert browser.get("/console").status_code == 303


@pytest.mark.parametrize("path", [*PAGES, "/console/runs/abc", "/chat/c1?agent=support"])
def test_pages_without_a_session_redirect_to_the_login(served: Served, path: str) -> None:
    r = httpx.get(f"{served.url}{path}", follow_redirects=False)
    assert r.status_code == 303
    form = "/chat/login" if path.startswith("/chat") else "/console/login"  # customers'
    assert r.headers["location"].startswith(f"{form}?next=/")


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/console",
                                    "/\\evil.example", "/console/../../evil", "javascript:1",
                                    "/v1/runs", "http:/console"])
def test_next_never_leaves_the_console(served: Served, target: str) -> None:
    r = httpx.post(f"{served.url}/console/login", follow_redirects=False,
                   data={"api_key": served.keys[("acme", "viewer")], "next": target})
    assert r.status_code == 303
    assert r.headers["location"] == "/console"
    form = httpx.get(f"{served.url}/console/login", params={"next": target})
    assert 'name="next" value="/console"' in form.text


def test_login_from_another_origin_is_refused(served: Served) -> None:
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site", "Origin": "null"},
                    {"Sec-Fetch-Site": "same-site"}):
        r = httpx.post(f"{served.url}/console/login", headers=headers,
                       data={"api_key": served.keys[("acme", "viewer")]})
        assert r.status_code == 403, headers
        assert SESSION_COOKIE not in r.headers.get("set-cookie", "")
    r = httpx.post(f"{served.url}/console/login", follow_redirects=False,
                   headers={"Sec-Fetch-Site": "same-origin", "Origin": "null"},
                   data={"api_key": served.keys[("acme", "viewer")]})
    assert r.status_code == 303
    with session(served) as browser:
        r = browser.post("/console/logout", headers={"Origin": "https://evil.example"})
        assert r.status_code == 403
        assert browser.get("/console").status_code == 200


def test_a_cookie_post_needs_the_csrf_token(served: Served) -> None:
    run_id, task_id = open_approval(served)
    with session(served) as browser:
        r = browser.post(f"/v1/approvals/{task_id}/approve", json={})
        assert r.status_code == 403
        assert r.json()["error"]["type"] == "csrf"
        r = browser.post(f"/v1/approvals/{task_id}/approve", json={},
                         headers={"X-CSRF-Token": "0" * 64})
        assert r.status_code == 403
        with served.client() as c:
            assert c.get(f"/v1/approvals/{task_id}").json()["status"] == "open"
            assert c.get(f"/v1/runs/{run_id}").json()["status"] == "suspended"
        token = browser.cookies[CSRF_COOKIE]
        r = browser.post(f"/v1/approvals/{task_id}/approve", json={},
                         headers={"X-CSRF-Token": token})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "resolved"


def test_user_text_is_escaped_on_every_page(served: Served) -> None:
    payload = f"{XSS[0]} {XSS[1]}"
    refund = start(served, f"{payload} refund A1 250", conversation="conv-xss")
    human = start(served, f"{payload} I want to talk to a human")
    assert refund["status"] == human["status"] == "suspended"
    with session(served, role="admin") as browser:
        for path in ("/console/runs", f"/console/runs/{refund['run_id']}",
                     f"/console/runs/{human['run_id']}", "/console/approvals",
                     "/console/escalations", "/chat/conv-xss?agent=support"):
            r = browser.get(path)
            assert r.status_code == 200, path
            for raw in XSS:
                assert raw not in r.text, path
            assert XSS_ESCAPED[0] in r.text, path
            assert XSS_ESCAPED[1] in r.text, path


def test_every_page_sends_the_security_headers(served: Served) -> None:
    run = start(served, "where is order A1?")
    with session(served, role="admin") as browser:
        for path in (*PAGES, f"/console/runs/{run['run_id']}", "/console/login",
                     "/console/static/console.css", "/console/static/run.js"):
            r = browser.get(path)
            assert r.status_code == 200, path
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp
            assert "style-src 'self'" in csp
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["x-content-type-options"] == "nosniff"
            if r.headers["content-type"].startswith("text/html"):
                assert '<html lang="en">' in r.text
                assert 'name="viewport"' in r.text
                assert "<script>" not in r.text and " style=" not in r.text


def test_a_viewer_sees_no_decide_buttons_and_may_not_decide(served: Served) -> None:
    _, task_id = open_approval(served)
    start(served, "I want to talk to a human")
    with session(served, role="viewer") as browser:
        page = browser.get("/console/approvals").text
        assert task_id in page
        assert "may read them, not decide" in page
        assert 'class="approve' not in page and 'class="deny' not in page
        escalations = browser.get("/console/escalations").text
        assert 'class="claim' not in escalations and 'class="answer' not in escalations
        r = browser.post(f"/v1/approvals/{task_id}/approve", json={},
                         headers={"X-CSRF-Token": browser.cookies[CSRF_COOKIE]})
        assert r.status_code == 403
        assert r.json()["error"]["type"] == "forbidden"
        assert browser.get("/chat?agent=support").status_code == 403
    with session(served, role="reviewer") as browser:
        page = browser.get("/console/approvals").text
        assert 'class="approve stack"' in page and 'class="deny stack"' in page


def test_another_tenant_gets_404(served: Served) -> None:
    run_id, task_id = open_approval(served)
    with session(served, tenant="globex", role="admin") as browser:
        assert browser.get(f"/console/runs/{run_id}").status_code == 404
        assert browser.get(f"/console/approvals/{task_id}").status_code == 404
        assert browser.get(f"/v1/approvals/{task_id}").status_code == 404
        assert task_id not in browser.get("/console/approvals").text
        assert run_id not in browser.get("/console/runs").text
    with session(served, role="admin") as browser:
        assert browser.get(f"/console/runs/{run_id}").status_code == 200
        assert browser.get(f"/console/approvals/{task_id}").status_code == 200


def test_a_session_past_half_its_life_is_renewed(served: Served) -> None:
    async def old_token() -> str:
        async with KeyStore(served.db) as keys:
            key = await keys.verify(served.keys[("acme", "viewer")])
            secret = await keys.signing_secret()
            return issue_token(key, secret, ttl_s=600, now=time.time() - 400)

    token = asyncio.run(old_token())

    def visit(session_token: str) -> dict[str, str]:
        r = httpx.get(f"{served.url}/console/runs", follow_redirects=False,
                      headers={"Cookie": f"{SESSION_COOKIE}={session_token}"})
        assert r.status_code == 200
        return dict(c.split(";", 1)[0].split("=", 1) for c in r.headers.get_list("set-cookie"))

    renewed = visit(token)
    assert renewed[SESSION_COOKIE] and renewed[SESSION_COOKIE] != token
    assert renewed[CSRF_COOKIE]
    assert visit(renewed[SESSION_COOKIE]) == {}  # a fresh session is left as it is

    # an open page asks /console/session every minute: the same renewal, as JSON
    check = httpx.get(f"{served.url}/console/session",
                      headers={"Cookie": f"{SESSION_COOKIE}={token}"})
    assert check.status_code == 200 and check.json()["signed_in"] is True
    assert f"{SESSION_COOKIE}=" in check.headers["set-cookie"]
    gone = httpx.get(f"{served.url}/console/session")
    assert gone.status_code == 401 and gone.json()["signed_in"] is False


def test_the_dashboard_draws_accessible_svg_plots(served: Served) -> None:
    start(served, "where is order A1?")
    start(served, "refund A1 250")
    with session(served) as browser:
        page = browser.get("/console").text
    assert page.count("<svg") == 4
    assert 'role="img"' in page and "<title" in page and "<desc" in page
    assert "Data table: Runs per day" in page
    assert "Cost per day by agent" in page and "Top failing tools" in page


def test_unknown_pages_and_ids_are_404_pages(served: Served) -> None:
    with session(served, role="admin") as browser:
        for path in ("/console/runs/nope", "/console/approvals/ap-0", "/chat?agent=ghost",
                     "/console/escalations/es-0", "/console/runs/not%20an%20id",
                     "/chat/bad%20id?agent=support"):
            r = browser.get(path)
            assert r.status_code == 404, path
            assert "text/html" in r.headers["content-type"]


def test_one_escalation_a_new_conversation_and_a_bearer_token(served: Served) -> None:
    run = start(served, "I want to talk to a human")
    with served.client() as c:
        task = c.get("/v1/escalations").json()["items"][0]
    assert task["run_id"] == run["run_id"]
    with session(served, role="admin") as browser:
        one = browser.get(f"/console/escalations/{task['id']}")
        assert one.status_code == 200
        assert "I want to talk to a human" in one.text and 'class="answer stack"' in one.text
        fresh = browser.get("/chat/c0ffee?agent=support")  # not started yet: no turns
        assert fresh.status_code == 200
        assert 'data-conversation="c0ffee"' in fresh.text and "msg-user" not in fresh.text
    with served.client("acme", "viewer") as api:  # the API's bearer token opens pages too
        r = api.get("/console/runs")
        assert r.status_code == 200 and "set-cookie" not in r.headers


def test_the_runs_list_filters_and_pages_with_the_api_cursor(served: Served) -> None:
    with served.client("acme", "operator") as c:
        for i in range(27):
            r = c.post("/v1/runs", json={"agent": "support", "input": f"hello {i:02d}",
                                         "wait": True, "conversation": "conv-a" if i < 3
                                         else None})
            assert r.status_code == 200, r.text
    start(served, "refund A1 250")
    with session(served, role="viewer") as browser:
        first = browser.get("/console/runs").text
        assert first.count("<tr data-run-id=") == 25
        assert "refund A1 250" in first and "hello 26" in first and "hello 02" not in first
        nxt = first.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0]
        second = browser.get(nxt.replace("&amp;", "&")).text
        assert second.count("<tr data-run-id=") == 3
        assert "hello 00" in second and "hello 26" not in second
        assert 'rel="next"' not in second
        suspended = browser.get("/console/runs", params={"status": "suspended"}).text
        assert suspended.count("<tr data-run-id=") == 1
        assert '<option value="suspended" selected>' in suspended
        conv = browser.get("/console/runs", params={"conversation": "conv-a"}).text
        assert conv.count("<tr data-run-id=") == 3
        bad = browser.get("/console/runs", params={"cursor": "garbage!"})
        assert bad.status_code == 400
        assert "cursor" in bad.text


def test_plots_escape_their_labels_and_cover_failing_tools_and_agents() -> None:
    from keel.server._console import _env, charts

    day = {"runs": 4, "success_rate": 0.5, "p50_s": 0.2, "p95_s": 1.5, "p99_s": 2.0}
    daily = {"groups": [{"key": {"day": "2026-12-06"}, **day},
                        {"key": {"day": "2026-12-07"}, **day, "runs": 7}],
             "total": {"failing_tools": [{"tool": XSS[0], "failures": 3},
                                         {"tool": "lookup", "failures": 1}]}}
    costs = {"rows": [{"day": "2026-12-06", "agent": "a", "cost_usd": 0.5},
                      {"day": "2026-12-07", "agent": XSS[1], "cost_usd": 1.25}]}
    agents = {"groups": [{"key": {"agent": "a"}, **day}, {"key": {"agent": "b"}, **day}]}
    plots = charts(daily, costs, agents)
    assert [p.id for p in plots] == ["runs", "success", "latency", "cost", "latency-agent",
                                     "failing"]
    runs = plots[0]
    assert [m.text for m in runs.marks] == ["12-06 · runs: 4", "12-07 · runs: 7"]
    assert runs.bound >= 7 and all(0 <= m.y <= runs.height for m in runs.marks)
    assert plots[3].head == ["", XSS[1], "a"]  # agents in name order
    assert plots[3].rows == [["12-06", "$0.0000", "$0.5000"], ["12-07", "$1.25", "$0.0000"]]
    html = _env.from_string('{% from "_chart.html" import chart %}'
                            "{% for c in plots %}{{ chart(c) }}{% endfor %}").render(plots=plots)
    assert XSS[0] not in html and XSS[1] not in html
    assert XSS_ESCAPED[0] in html
    assert html.count("<svg") == 6 and html.count("<table>") == 6
