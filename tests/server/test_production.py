"""Production behaviour: runs left to workers, shutdown that hands runs back, an event loop
that never waits on the store, and configuration errors at start-up."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from keel import ConfigError
from keel.cli import app as cli
from keel.runtime import Worker
from keel.server import App
from keel.store import SQLiteStore
from tests.server import apps
from tests.server.conftest import ServerThread, serve


def _record(db: str, run_id: str) -> Any:
    async def go() -> Any:
        async with SQLiteStore(db) as store:
            return await store.get_run(run_id)
    return asyncio.run(go())


def _work(db: str) -> list[Any]:
    async def go() -> list[Any]:
        async with SQLiteStore(db) as store:
            return await Worker([apps.support], store=store).run_until_idle()
    return asyncio.run(go())


def test_in_workers_mode_the_server_only_queues_and_a_worker_runs(tmp_path: Path) -> None:
    gen = serve(tmp_path, execute="workers")
    served = next(gen)
    try:
        with served.client("acme", "operator") as c:
            r = c.post("/v1/runs", json={"agent": "support", "input": "order W1?"})
            assert r.status_code == 202
            run_id = r.json()["run_id"]
            time.sleep(0.3)
            record = _record(served.db, run_id)
            assert record.status == "running" and record.lease_owner is None
            assert (record.tenant, record.input) == ("acme", "order W1?")
            outcomes = _work(served.db)
            assert [(o.run_id, o.status) for o in outcomes] == [(run_id, "completed")]
            with c.stream("GET", f"/v1/runs/{run_id}/events") as stream:
                lines = [line for line in stream.iter_lines() if line.startswith("event:")]
            assert lines[-1] == "event: result"
            assert c.get(f"/v1/runs/{run_id}").json()["output"] == (
                "Done: order W1: shipped <b>on time</b>")
    finally:
        gen.close()


def test_shutdown_hands_in_flight_runs_back_for_a_worker(tmp_path: Path) -> None:
    gen = serve(tmp_path, grace_s=0.2)
    served = next(gen)
    apps.DELAY["s"] = 30.0
    try:
        with served.client("acme", "operator") as c:
            run_id = c.post("/v1/runs", json={"agent": "support",
                                              "input": "order H1?"}).json()["run_id"]
        served.thread.stop()  # SIGTERM's path: lifespan shutdown
        assert not served.thread.thread.is_alive()
        record = _record(served.db, run_id)
        assert record.status == "running" and record.lease_owner is None
    finally:
        apps.DELAY["s"] = 0.0
        gen.close()
    outcomes = _work(served.db)
    assert [(o.run_id, o.status) for o in outcomes] == [(run_id, "completed")]
    assert _record(served.db, run_id).output == "Done: order H1: shipped <b>on time</b>"


def test_a_store_waiting_on_a_lock_does_not_stop_the_server_answering(tmp_path: Path) -> None:
    gen = serve(tmp_path)
    served = next(gen)
    try:
        lock = sqlite3.connect(served.db, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        done: dict[str, Any] = {}

        def start() -> None:
            with served.client("acme", "operator") as c:
                done["r"] = c.post("/v1/runs", json={"agent": "support", "input": "hi",
                                                     "wait": True})

        writer = threading.Thread(target=start)
        writer.start()
        time.sleep(0.5)
        health = httpx.get(f"{served.url}/v1/health", timeout=5)
        assert health.status_code == 200
        assert writer.is_alive()  # still waiting for the lock while the loop answered
        lock.execute("COMMIT")
        lock.close()
        writer.join(30)
        assert done["r"].status_code == 200
    finally:
        gen.close()


def test_configuration_errors_are_reported_when_the_app_is_built(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a keel Agent"):
        App(["support"])
    with pytest.raises(ConfigError, match="unique"):
        App([apps.support, apps.support])
    with pytest.raises(ConfigError, match="token_ttl_s"):
        App([apps.support], token_ttl_s=86_400)
    with pytest.raises(ConfigError, match="cors_origins"):
        App([apps.support], cors_origins=["*"])
    with pytest.raises(ConfigError, match="execute"):
        App([apps.support], execute="threads")  # type: ignore[arg-type]
    bad = tmp_path / "not-a-db.txt"
    bad.write_text("hello")
    thread = ServerThread(App([apps.support], store=str(bad)))
    with pytest.raises(RuntimeError, match="did not start"):
        thread.start()


def test_keel_serve_refuses_what_is_not_an_app(tmp_path: Path) -> None:
    module = tmp_path / "notapp.py"
    module.write_text("thing = 42\n")
    r = CliRunner().invoke(cli, ["serve", f"{module}:thing"])
    assert r.exit_code != 0 and "not a keel.server.App" in r.output
    r = CliRunner().invoke(cli, ["serve", f"{module}:missing"])
    assert r.exit_code != 0 and "no attribute" in r.output
    r = CliRunner().invoke(cli, ["serve", "tests.server.apps:support", "--port", "99999"])
    assert r.exit_code != 0 and "port" in r.output


def test_a_running_run_is_cancelled_over_the_api(tmp_path: Path) -> None:
    gen = serve(tmp_path)
    served = next(gen)
    apps.DELAY["s"] = 30.0
    try:
        with served.client("acme", "operator") as c:
            run_id = c.post("/v1/runs", json={"agent": "support",
                                              "input": "order K1?"}).json()["run_id"]
            r = c.post(f"/v1/runs/{run_id}/cancel", json={"reason": "wrong customer"})
            assert r.status_code == 200 and r.json()["outcome"] in ("requested", "cancelled")
            deadline = time.monotonic() + 20
            while c.get(f"/v1/runs/{run_id}").json()["status"] != "cancelled":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            audit = c.get("/v1/runs")  # the operator may read; the audit log needs admin
            assert audit.status_code == 200
        with served.client("acme", "admin") as a:
            entries = a.get("/v1/audit").json()["entries"]
            cancel = next(e for e in entries if e["action"] == "run.cancel")
            assert cancel["target"] == run_id and cancel["details"]["reason"] == "wrong customer"
            assert cancel["who"].startswith("operator of acme")
    finally:
        apps.DELAY["s"] = 0.0
        gen.close()
    journal = asyncio.run(_journal(served.db, run_id))
    stop = next(e for e in journal if e.kind == "cancel")
    assert "wrong customer" in str(stop.data)


async def _journal(db: str, run_id: str) -> list[Any]:
    async with SQLiteStore(db) as store:
        return await store.read_journal(run_id)


def test_cors_admits_only_the_named_origins(tmp_path: Path) -> None:
    gen = serve(tmp_path, cors_origins=["https://ops.example.com"])
    served = next(gen)
    try:
        preflight = {"Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization,content-type"}
        ok = httpx.options(f"{served.url}/v1/runs",
                           headers={"Origin": "https://ops.example.com", **preflight})
        assert ok.headers.get("access-control-allow-origin") == "https://ops.example.com"
        evil = httpx.options(f"{served.url}/v1/runs",
                             headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in evil.headers
    finally:
        gen.close()


def test_keel_serve_keeps_the_apps_own_store_unless_one_is_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keel.cli._serve as serve_cli

    seen: list[Any] = []
    monkeypatch.setattr(serve_cli, "serve_command", lambda screen, **kw: seen.append(kw["store"]))
    module = tmp_path / "served.py"
    module.write_text("from keel.server import App\nfrom tests.server.apps import support\n"
                      f"app = App([support], store={str(tmp_path / 'own.db')!r})\n")
    assert CliRunner().invoke(cli, ["serve", f"{module}:app"]).exit_code == 0
    assert CliRunner().invoke(cli, ["serve", f"{module}:app", "--store", "x.db"]).exit_code == 0
    assert CliRunner().invoke(cli, ["--store", "y.db", "serve", f"{module}:app"]).exit_code == 0
    assert seen == [None, "x.db", "y.db"]
