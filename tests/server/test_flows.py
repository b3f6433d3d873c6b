"""Flow graphs over real HTTP: ``/v1/flows`` and the console's ``/console/flows`` pages draw
each agent's structure and count, per tenant, the runs that went through each part."""

from __future__ import annotations

import re

import httpx

from tests.server.conftest import Served


def _run(c: httpx.Client, text: str) -> dict[str, object]:
    r = c.post("/v1/runs", json={"agent": "support", "input": text, "wait": True})
    assert r.status_code in (200, 202), r.text
    return dict(r.json())


def test_the_graph_of_an_agent_counts_its_runs_per_tool_and_per_tenant(served: Served) -> None:
    with served.client("acme", "operator") as c:
        for text in ("where is order A1?", "where is order B2?", "refund A1 250", "hello"):
            _run(c, text)
    with served.client("acme", "viewer") as c:
        listed = c.get("/v1/flows").json()["flows"]
        assert {f["name"] for f in listed} == {"support", "talker"}
        body = c.get("/v1/flows/support").json()
    graph, counts = body["graph"], body["counts"]
    kinds = {n["id"]: (n["kind"], n["risk"]) for n in graph["nodes"]}
    assert kinds == {"support": ("agent", None), "support/tool:lookup": ("tool", "read"),
                     "support/tool:refund": ("tool", "irreversible")}
    assert counts["runs"] == 4
    assert counts["nodes"] == {"support": 4, "support/tool:lookup": 2,
                               "support/tool:refund": 1}
    assert counts["edges"] == {"support>support/tool:lookup": 2,
                               "support>support/tool:refund": 1}
    with served.client("globex", "viewer") as c:  # another tenant's runs are not counted
        other = c.get("/v1/flows/support", params={"counts_only": "true"}).json()
    assert "graph" not in other
    assert other["counts"]["runs"] == 0 and other["counts"]["nodes"]["support"] == 0


def test_the_console_draws_the_graph_with_its_counts(served: Served) -> None:
    with served.client("acme", "operator") as c:
        _run(c, "where is order A1?")
        _run(c, "<script>alert(1)</script>")
    with httpx.Client(base_url=served.url, timeout=30) as browser:
        r = browser.post("/console/login", data={"api_key": served.keys[("acme", "viewer")],
                                                 "next": "/console/flows"})
        assert r.status_code == 303
        browser.cookies = r.cookies
        listing = browser.get("/console/flows")
        assert listing.status_code == 200
        assert 'href="/console/flows/support"' in listing.text
        page = browser.get("/console/flows/support")
        assert page.status_code == 200
        html = page.text
        assert "<svg" in html and 'role="img"' in html
        node = re.search(r'data-count-node="support/tool:lookup">(\d+)<', html)
        assert node and node[1] == "1"
        root = re.search(r'data-count-node="support">(\d+)<', html)
        assert root and root[1] == "2"
        assert "risk irreversible · approval" in html
        assert "<script>alert" not in html
        assert browser.get("/console/flows/ghost").status_code == 404
        hostile = browser.get("/console/flows/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
        assert hostile.status_code == 404 and "<script>alert" not in hostile.text
        assert browser.get("/console/flows/support?hours=0").status_code == 422


BAD_FLOW_REQUESTS = [
    ("/v1/flows/ghost", 404),
    ("/v1/flows/support?hours=0", 422),
    ("/v1/flows/support?hours=-1", 422),
    ("/v1/flows/support?hours=1e9", 422),
    ("/v1/flows/support?hours=lots", 422),
    ("/v1/flows/" + "x" * 201, 422),
    ("/v1/flows/%3Cscript%3E", 404),
]


def test_bad_flow_requests_get_clear_refusals(served: Served) -> None:
    with served.client("acme", "viewer") as c:
        for path, status in BAD_FLOW_REQUESTS:
            r = c.get(path)
            assert r.status_code == status, (path, r.text)
            assert r.headers["content-type"].startswith("application/json")  # never HTML
            assert r.json()["error"]["message"]


def test_flows_need_a_token(served: Served) -> None:
    assert httpx.get(f"{served.url}/v1/flows").status_code == 401
    assert httpx.get(f"{served.url}/v1/flows/support").status_code == 401
