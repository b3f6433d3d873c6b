from __future__ import annotations

from tests.server.conftest import Served


def test_a_run_over_http(served: Served) -> None:
    with served.client("acme", "operator") as c:
        r = c.post("/v1/runs", json={"agent": "support", "input": "where is order A1?",
                                     "wait": True})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "completed"
        assert "shipped" in body["run"]["output"]
