"""A worker takes over the runs of a dead worker process of this host at once, as a resume
does (docs/journal.md), instead of waiting for the dead worker's lease to expire."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from keel import Agent, tool
from keel.runtime import Worker
from keel.store import SQLiteStore
from keel.testing import ScriptedModel, call

SRC = Path(__file__).resolve().parents[2] / "src"

CHILD = textwrap.dedent('''
    import sys, time
    from keel import Agent, tool
    from keel.store import SQLiteStore
    from keel.testing import ScriptedModel, call

    @tool
    async def look(n: int) -> int:
        """Look something up."""
        print("ready", flush=True)
        time.sleep(600)  # killed here, holding the run's lease
        return n

    agent = Agent("look", model=ScriptedModel([call("look", {"n": 1}), "never"]), tools=[look])
    agent.run_sync("go", store=SQLiteStore(sys.argv[1]), run_id="dead-1")
''')


def _kill_a_worker_mid_run(db: Path, tmp_path: Path) -> int:
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    with subprocess.Popen([sys.executable, str(script), str(db)], stdout=subprocess.PIPE,
                          text=True, env={**os.environ, "PYTHONPATH": str(SRC)}) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)  # reaped: the pid no longer exists
    return child.pid


async def test_a_worker_takes_over_a_dead_local_workers_run_at_once(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    pid = _kill_a_worker_mid_run(db, tmp_path)

    @tool
    async def look(n: int) -> int:
        """Look something up."""
        return n * 10

    agent: Agent[Any] = Agent("look", model=ScriptedModel([call("look", {"n": 1}), "done"]),
                              tools=[look])
    async with SQLiteStore(db) as store:
        before = await store.get_run("dead-1")
        assert before.status == "running" and before.lease_owner is not None
        assert f":{pid}:" in before.lease_owner
        assert (before.lease_expires_at or 0) > time.time() + 5  # the lease is still live
        t0 = time.monotonic()
        outcomes = await Worker([agent], store=store).run_until_idle()
        assert time.monotonic() - t0 < 5  # not the 15 s lease
        assert [(o.run_id, o.status) for o in outcomes] == [("dead-1", "completed")]
        after = await store.get_run("dead-1")
        assert after.status == "completed" and after.lease_owner is None


async def test_a_worker_leaves_a_live_workers_run_alone(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "runs.db") as store:
        agent: Agent[Any] = Agent("look", model=ScriptedModel(["done"]))
        from keel.store import RunRecord

        now = time.time()
        await store.create_run(RunRecord(run_id="live-1", agent="look", status="running",
                                         input="go", created_at=now, updated_at=now))
        # a live process of this host (pytest's parent) holds it
        await store.acquire_lease("live-1", f"{socket.gethostname()}:{os.getppid()}:live", 60)
        assert await Worker([agent], store=store).run_until_idle() == []
        assert (await store.get_run("live-1")).status == "running"
