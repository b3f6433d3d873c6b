"""``GET /v1/failures``: the failure-modes report of the caller's tenant over HTTP (a viewer
may read it; another tenant's runs never count), and malformed parameters refused."""

from __future__ import annotations

import httpx

from tests.observe.failing_runs import INJECTION
from tests.server.conftest import Served


def test_the_report_is_tenant_scoped(served: Served) -> None:
    with served.client("acme", "operator") as op:
        blocked = op.post("/v1/runs", json={"agent": "support", "input": INJECTION,
                                            "wait": True}).json()
        refund = op.post("/v1/runs", json={"agent": "support", "input": "refund A1 250",
                                           "wait": True}).json()
        op.post("/v1/runs", json={"agent": "support", "input": "order A7", "wait": True})
    assert blocked["status"] == "failed" and refund["status"] == "suspended"
    with served.client("acme", "reviewer") as rv:
        (task,) = [t for t in rv.get("/v1/approvals").json()["items"]
                   if t["run_id"] == refund["run_id"]]
        assert rv.post(f"/v1/approvals/{task['id']}/deny",
                       json={"comment": "not eligible"}).status_code == 200
    with served.client("acme", "viewer") as viewer:
        r = viewer.get("/v1/failures", params={"days": 1})
        assert r.status_code == 200, r.text
        report = r.json()
    assert report["runs"] == 3 and report["tenant"] == "acme"
    modes = {(m["kind"], m["cause"], m["where"]): m for m in report["modes"]}
    guard = modes[("blocked", "guard injection", "the user's input")]
    assert guard["examples"] == [blocked["run_id"]] and guard["share"] == 1 / 3
    (version,) = guard["versions"]
    with served.client("acme", "viewer") as viewer:
        same = viewer.get("/v1/failures", params={"version": version}).json()
        assert same["version"] == version and same["runs"] == 3  # one agent, one version
        assert viewer.get("/v1/failures", params={"version": "0" * 16}).json()["runs"] == 0
    denied = modes[("blocked", "approval denied", "tool refund")]
    assert denied["examples"] == [refund["run_id"]] and denied["mitigation"]
    with served.client("globex", "admin") as other:
        theirs = other.get("/v1/failures").json()
    assert theirs["runs"] == 0 and theirs["modes"] == []
    with served.client("acme", "viewer") as viewer:
        only = viewer.get("/v1/failures", params={"agent": "talker"}).json()
        assert only["runs"] == 0


def test_bad_parameters(served: Served) -> None:
    with served.client("acme", "viewer") as viewer:
        for params in ({"limit": 0}, {"limit": 1000}, {"days": -1}, {"since": "soon"},
                       {"agent": "x" * 500}, {"days": "nan"}, {"version": "v" * 300}):
            r = viewer.get("/v1/failures", params=params)
            assert r.status_code == 422, (params, r.text)
        assert viewer.get("/v1/failures", params={"agent": "bad\x01agent"}).status_code == 400
        assert viewer.get("/v1/failures").status_code == 200
    assert httpx.get(f"{served.url}/v1/failures").status_code == 401
