"""Malformed, hostile and oversized requests: each gets the right 4xx with a JSON error
naming the problem, and nothing changes in the store."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import httpx
import jwt
import pytest

from keel.store import SQLiteStore
from tests.server.conftest import Served


def _count(served: Served) -> int:
    async def go() -> int:
        async with SQLiteStore(served.db) as store:
            return len(await store.list_runs())
    return asyncio.run(go())


def _error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()["error"]
    assert body["status"] == status and body["message"]
    return body  # type: ignore[no-any-return]


def test_malformed_and_wrongly_typed_bodies_are_refused(served: Served) -> None:
    with served.client("acme", "operator") as c:
        raw = c.post("/v1/runs", content=b"{not json", headers={"content-type":
                                                               "application/json"})
        assert _error(raw, 422)["message"] == "the body is not valid JSON (at character 1)"
        _error(c.post("/v1/runs", json={"agent": "support", "input": 42}), 422)
        _error(c.post("/v1/runs", json={"agent": "support"}), 422)
        _error(c.post("/v1/runs", json={"agent": "support", "input": "hi", "extra": 1}), 422)
        _error(c.post("/v1/runs", json={"agent": "support", "input": "hi",
                                        "timeout_s": -1}), 422)
        _error(c.post("/v1/runs", json=["a", "list"]), 422)
        unknown = _error(c.post("/v1/runs", json={"agent": "nobody", "input": "hi"}), 404)
        assert "nobody" in unknown["message"]
        blank = _error(c.post("/v1/runs", json={"agent": "support", "input": "   "}), 400)
        assert "empty" in blank["message"]
    assert _count(served) == 0


def test_oversized_bodies_are_refused_before_they_are_read(served: Served) -> None:
    with served.client("acme", "operator") as c:
        big = {"agent": "support", "input": "x" * 2_000_000}
        assert _error(c.post("/v1/runs", json=big), 413)["type"] == "too_large"

        def chunks() -> Any:  # no Content-Length: counted as it streams in
            yield b'{"agent": "support", "input": "'
            for _ in range(300):
                yield b"y" * 10_000
            yield b'"}'

        r = c.post("/v1/runs", content=chunks(), headers={"content-type": "application/json"})
        _error(r, 413)
        long_input = {"agent": "support", "input": "z" * 100_001}
        _error(c.post("/v1/runs", json=long_input), 422)
    assert _count(served) == 0


@pytest.mark.parametrize("path", [
    "/v1/runs/..%2F..%2Fetc%2Fpasswd", "/v1/runs/%2e%2e", "/v1/runs/a%00b",
    "/v1/approvals/..%5C..%5Cwin.ini", "/v1/runs/" + "a" * 300,
    "/v1/conversations/%3Cscript%3E", "/v1/escalations/x;rm%20-rf",
])
def test_invalid_and_traversing_ids_are_refused(served: Served, path: str) -> None:
    with served.client("acme", "admin") as c:
        r = c.get(path)
        assert r.status_code in (404, 422), (path, r.status_code)
        assert "error" in r.json()


def test_missing_expired_forged_and_tampered_tokens_are_refused(served: Served) -> None:
    url = f"{served.url}/v1/runs"
    _error(httpx.get(url), 401)
    _error(httpx.get(url, headers={"Authorization": "Basic abc"}), 401)
    _error(httpx.get(url, headers={"Authorization": "Bearer not.a.token"}), 401)
    good = served.token("acme", "admin")
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["tenant"] = "globex"  # tampered: the signature no longer matches
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    _error(httpx.get(url, headers={"Authorization": f"Bearer {header}.{forged}.{signature}"}),
           401)
    none_alg = jwt.encode(claims, key="", algorithm="none")
    _error(httpx.get(url, headers={"Authorization": f"Bearer {none_alg}"}), 401)
    wrong_key = jwt.encode({**claims, "tenant": "acme"}, "x" * 32, algorithm="HS256")
    _error(httpx.get(url, headers={"Authorization": f"Bearer {wrong_key}"}), 401)
    expired = {**claims, "tenant": "acme", "exp": int(time.time()) - 60}
    secret = served.thread.spec  # the app's secret comes from the store: read it
    del secret
    from keel.server import KeyStore

    async def signing() -> bytes:
        async with KeyStore(served.db) as keys:
            return await keys.signing_secret()
    real = asyncio.run(signing())
    stale = jwt.encode(expired, real, algorithm="HS256")
    assert "expired" in _error(httpx.get(url, headers={"Authorization": f"Bearer {stale}"}),
                               401)["message"]
    other_aud = jwt.encode({**claims, "tenant": "acme", "aud": "elsewhere"}, real,
                           algorithm="HS256")
    _error(httpx.get(url, headers={"Authorization": f"Bearer {other_aud}"}), 401)
    # a replayed token is a valid token until it expires or its key is revoked: it works
    assert httpx.get(url, headers={"Authorization": f"Bearer {good}"}).status_code == 200


def test_key_exchange_refuses_bad_keys_without_echoing_them(served: Served) -> None:
    url = f"{served.url}/v1/auth/token"
    for bad in ("", "keel_nope", "keel_" + "0" * 16 + "_" + "A" * 43, "x" * 500):
        r = httpx.post(url, headers={"Authorization": f"Bearer {bad}"} if bad else {})
        assert r.status_code in (401, 422)
        if bad:
            assert bad not in r.text


def test_html_and_script_in_inputs_come_back_as_data(served: Served) -> None:
    hostile = '<script>alert(1)</script>"><img src=x onerror=alert(1)>'
    with served.client("acme", "operator") as c:
        run = c.post("/v1/runs", json={"agent": "support", "input": hostile,
                                       "wait": True}).json()
        shown = c.get(f"/v1/runs/{run['run_id']}")
        assert shown.headers["content-type"].startswith("application/json")
        assert shown.json()["input"] == hostile
        assert shown.headers["x-content-type-options"] == "nosniff"
        assert "default-src 'self'" in shown.headers["content-security-policy"]


def test_the_rate_limit_answers_429_per_key(tmp_path: Any) -> None:
    from tests.server.conftest import serve

    gen = serve(tmp_path, rate_per_s=2.0, burst=3)
    served = next(gen)
    try:
        with served.client("acme", "viewer") as v, served.client("acme", "admin") as a:
            codes = [v.get("/v1/runs").status_code for _ in range(8)]
            assert codes[:3] == [200, 200, 200] and 429 in codes
            limited = next(r for r in (v.get("/v1/runs") for _ in range(3))
                           if r.status_code == 429)
            assert int(limited.headers["retry-after"]) >= 1
            assert a.get("/v1/runs").status_code == 200  # another key has its own budget
    finally:
        gen.close()
