"""`keel runs cancel` and `keel worker`: against a real SQLite store file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from keel.runtime import decide_approval
from keel.store import open_store
from tests.cli.conftest import InvokeResult
from tests.cli.test_run import run_id_of, stored

Keel = Callable[..., InvokeResult]

SHIPPER = '''
    from pathlib import Path

    from keel import Agent, tool
    from keel.testing import ScriptedModel, call

    LOG = Path(__file__).with_name("shipped.log")


    @tool(risk="irreversible")
    def ship(order: str) -> str:
        """Ship an order."""
        with LOG.open("a") as f:
            f.write(order + "\\n")
        return "shipped"


    agent = Agent("shipper", model=ScriptedModel([call("ship", {"order": "A-1"}), "done"]),
                  tools=[ship])
'''


@pytest.fixture
def shipper(write_module: Callable[[str, str], Path]) -> str:
    return f"{write_module('shipper', SHIPPER)}:agent"


def _decide(url: str, run_id: str, approve: bool) -> None:
    async def go() -> None:
        async with open_store(url) as s:
            [task] = [t for t in await s.list_tasks() if t.run_id == run_id]
            await decide_approval(task.task_id, store=s, approve=approve, by="ann",
                                  comment="ok" if approve else "no")

    asyncio.run(go())


def test_suspended_run_is_continued_by_a_worker(keel: Keel, store: str, shipper: str,
                                                tmp_path: Path) -> None:
    r = keel("--store", store, "run", shipper, "ship A-1")
    assert r.exit_code == 3, r
    run_id = run_id_of(r.stdout)
    assert stored(store, run_id).status == "suspended"
    assert not (tmp_path / "shipped.log").exists()
    w = keel("--store", store, "worker", shipper, "--once")
    assert w.exit_code == 0, w
    assert "0 run(s) continued" in w.stdout, "a suspended run is not runnable"
    _decide(store, run_id, approve=True)
    w = keel("--store", store, "worker", shipper, "--once")
    assert w.exit_code == 0, w
    assert f"{run_id} shipper: completed" in w.stdout
    assert (tmp_path / "shipped.log").read_text() == "A-1\n"
    assert stored(store, run_id).status == "completed"


def test_cancel_a_suspended_run(keel: Keel, store: str, shipper: str, tmp_path: Path) -> None:
    r = keel("--store", store, "run", shipper, "ship A-1")
    run_id = run_id_of(r.stdout)
    c = keel("--store", store, "runs", "cancel", run_id, "--reason", "customer withdrew",
             "--json")
    assert c.exit_code == 0, c
    assert json.loads(c.stdout) == {"run_id": run_id, "outcome": "cancelled",
                                    "status": "cancelled"}
    record = stored(store, run_id)
    assert record.status == "cancelled"
    assert record.error is not None and record.error["message"] == "customer withdrew"
    again = keel("--store", store, "runs", "cancel", run_id)
    assert again.exit_code == 2 and "already cancelled" in again.stderr
    unknown = keel("--store", store, "runs", "cancel", "nope")
    assert unknown.exit_code == 2 and "no run" in unknown.stderr
    bad_wait = keel("--store", store, "runs", "cancel", run_id, "--wait", "-1")
    assert bad_wait.exit_code == 2
    w = keel("--store", store, "worker", shipper, "--once")
    assert "0 run(s) continued" in w.stdout
    assert not (tmp_path / "shipped.log").exists()


def test_worker_bad_input(keel: Keel, store: str, shipper: str) -> None:
    r = keel("--store", store, "worker", "nope.py:agent", "--once")
    assert r.exit_code == 2, r
    r = keel("--store", store, "worker", shipper, shipper, "--once")
    assert r.exit_code == 2 and "same name" in r.stderr
    r = keel("--store", store, "worker", shipper, "--concurrency", "0", "--once")
    assert r.exit_code == 2
