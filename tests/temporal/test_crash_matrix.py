"""The crash matrix on Temporal: a keel Temporal worker (a real process, see
_worker_script.py) is SIGKILLed at exact points of a multi-step run; a replacement worker (a
new process) finishes it. Temporal retries the interrupted ``keel.advance`` activity on the
new worker; keel's journal makes that safe.

The agent is tests/crash/crash_agent.py's ``orders``: a stock check (read-only), a
reservation (idempotent: the outside system dedupes on the idempotency key), a charge (not
idempotent, a reconcile hook asks the outside system) and a notification (not idempotent, no
reconcile hook), then the answer. Effects are rows in an outside SQLite file written with a
plain ``INSERT``, so a second execution of a non-idempotent tool is a second row.

What is proved, per kill point (inside a model activity; after a non-idempotent tool's
intent record, before its effect; after the effect, before its result record; after the
result, before the activity completes):
* the run completes in keel's store and its workflow completes in Temporal, or (a lost
  notification: intent without result and no reconcile hook) the run stops with
  UnknownOutcome, never calling ``notify`` a second time;
* every effect happened exactly once (the charge's reconcile hook decides after a kill
  between its intent and its result);
* the journal only grew, and no step whose result was committed before the kill ran again.

And kills from outside: three workers in a row SIGKILLed at random moments, a fourth ends
the run with no effect twice.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.crash._harness")

from tests.crash._harness import (  # noqa: E402
    POSTGRES_URL,
    Harness,
    Snapshot,
    check_journal_only_grew,
    reexecuted,
)

pytestmark = pytest.mark.slow  # each case runs two worker processes and waits for a retry

#: the steps' heartbeat timeout: how long Temporal waits for a killed worker's heartbeat
#: before it retries its step elsewhere (short, so the replacement gets it quickly; the step
#: timeout stays long, so only the heartbeat can notice the kill)
HEARTBEAT_S = 3.0
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
M = [f"orders/turn:{n}/model" for n in range(5)]
STOCK, RESERVE = "orders/turn:0/tool:stock#0", "orders/turn:1/tool:reserve#0"
CHARGE, NOTIFY = "orders/turn:2/tool:charge#0", "orders/turn:3/tool:notify#0"

# kill point -> what the replacement worker must do: "completes", or "unknown" (the run
# stops with UnknownOutcome at notify: its intent has no result and it has no reconcile hook)
POINTS = {
    "model:0": "completes",  # inside the first model activity
    "model:3": "completes",  # inside a later one, after three tools took effect
    "tool:reserve:after": "completes",  # idempotent: run again with the same key, deduped
    "tool:charge:before": "completes",  # intent, no effect: reconcile says "not charged"
    "tool:charge:after": "completes",  # effect, no result: reconcile finds the charge
    f"append:{CHARGE}:result": "completes",  # result recorded, activity not completed
    "tool:notify:before": "unknown",  # intent, no effect, no reconcile hook
    "tool:notify:after": "unknown",  # effect, no result, no reconcile hook
    f"append:{NOTIFY}:result": "completes",
}


def _drop_schema(name: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


class Workers:
    """Worker processes of one test, each a fresh interpreter; all stopped at the end."""

    def __init__(self, harness: Harness, address: str, namespace: str, queue: str) -> None:
        self.harness, self.address, self.namespace, self.queue = (harness, address,
                                                                  namespace, queue)
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, kill: str = "none", **extra: str) -> subprocess.Popen[str]:
        env = self.harness.env(kill, **extra)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
        log = (self.harness.tmp_path / f"worker-{len(self.procs)}.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "_worker_script.py"), self.address, self.namespace,
             self.queue], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
        log.close()
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the worker polls (or dies starting)
        assert line.strip() == "ready", self.log(len(self.procs) - 1)
        return proc

    def log(self, n: int) -> str:
        return (self.harness.tmp_path / f"worker-{n}.log").read_text()[-4000:]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """keel's run store: an SQLite file, or (``postgres``) a fresh Postgres schema."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield f"sqlite:///{tmp_path / 'runs.db'}"
        return
    schema = f"keel_tcrash_{uuid.uuid4().hex[:12]}"
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}schema={schema}"
    finally:
        _drop_schema(schema)


@pytest.fixture
def world(tmp_path: Path, temporal_address: str, store_url: str
          ) -> Iterator[tuple[Harness, Workers]]:
    run_id = f"crash-{uuid.uuid4().hex[:12]}"
    harness = Harness(None, store_url, tmp_path, "", run_id=run_id)
    workers = Workers(harness, temporal_address, "default", f"crash-{run_id}")
    try:
        yield harness, workers
    finally:
        workers.close()


async def _wait_exit(proc: subprocess.Popen[str], seconds: float) -> int | None:
    for _ in range(int(seconds * 10)):
        code = proc.poll()
        if code is not None:
            return code
        await asyncio.sleep(0.1)
    return proc.poll()


async def crash_and_replace(harness: Harness, workers: Workers, client: Any,
                            kill: str) -> tuple[Snapshot, Any]:
    """Start the run, let the first worker die at ``kill``, start a replacement worker and
    wait for the run's end on Temporal. Returns (what the store and the outside system held
    right after the kill, the run's result or the error ``run_result`` raised)."""
    from keel.temporal import run_result, start_run

    first = workers.start(kill)
    await start_run(client, "orders", "Order a lamp.", task_queue=workers.queue,
                    run_id=harness.run_id, heartbeat_s=HEARTBEAT_S, step_timeout_s=300)
    code = await _wait_exit(first, 120)
    assert code == -9, f"the worker did not die at {kill} (exit {code}): {workers.log(0)}"
    before = await harness.snapshot()
    workers.start("none")
    try:
        result: Any = await asyncio.wait_for(run_result(client, harness.run_id), 120)
    except TimeoutError:
        raise AssertionError(f"no end after the replacement: {workers.log(1)}") from None
    except Exception as exc:  # an ended run's error, checked by the caller
        result = exc
    return before, result


async def workflow_status(client: Any, harness: Harness) -> str:
    from keel.store import open_store

    async with open_store(harness.store_url) as store:
        record = await store.get_run(harness.run_id)
    workflow_id = record.metadata["workflow_id"]
    description = await client.get_workflow_handle(workflow_id).describe()
    return str(description.status.name)


#: The kill points the default suite runs (each case costs two worker processes and a
#: heartbeat timeout, about 15 s): one of each kind of outcome. The others run in the soak
#: set (``scripts/check -m soak``; docs/testing.md).
DEFAULT = {("sqlite", "model:3"), ("sqlite", "tool:charge:before"),
           ("sqlite", "tool:charge:after"), ("sqlite", f"append:{CHARGE}:result"),
           ("sqlite", "tool:notify:before"), ("postgres", "tool:charge:after")}


def _case(store: str, kill: str) -> Any:
    marks = () if (store, kill) in DEFAULT else (pytest.mark.soak,)
    return pytest.param(store, kill, marks=marks, id=f"{store}-{kill}")


@pytest.mark.parametrize(("store_url", "kill"), [
    *(_case("sqlite", k) for k in POINTS),
    # the keel store on Postgres: a representative subset
    *(_case("postgres", k) for k in ("model:0", "tool:charge:after", "tool:notify:before")),
], indirect=["store_url"])
async def test_a_killed_worker_is_replaced_and_every_effect_happens_once(
        world: tuple[Harness, Workers], temporal_client: Any, kill: str) -> None:
    harness, workers = world
    before, result = await crash_and_replace(harness, workers, temporal_client, kill)
    after = await harness.snapshot()
    check_journal_only_grew(before, after)
    # nothing whose result was committed before the kill ran again
    assert not reexecuted(before, after) & before.results()
    assert after.effect_count("reserve") == 1
    assert after.effect_count("charge") == 1
    if POINTS[kill] == "completes":
        assert not isinstance(result, BaseException), result
        assert result.output == "Order placed."
        assert after.status == "completed"
        assert after.effect_count("notify") == 1
        assert await workflow_status(temporal_client, harness) == "COMPLETED"
        if kill.startswith("tool:charge:"):  # the reconcile hook decided; charge ran once
            charged = [e for e in after.journal if e.key == CHARGE and e.phase == "result"]
            assert len(charged) == 1
    else:
        assert after.status == "failed"
        assert after.record is not None and "UnknownOutcome" in str(after.record.error)
        # never a blind second call: notify ran at most the once the kill interrupted
        assert after.effect_count("notify") == (1 if kill.endswith(":after") else 0)
        assert after.starts[NOTIFY] == 1
        assert await workflow_status(temporal_client, harness) in {"COMPLETED", "FAILED"}


@pytest.mark.soak
async def test_workers_killed_from_outside_at_random_moments(
        world: tuple[Harness, Workers], temporal_client: Any) -> None:
    """Three workers in a row are SIGKILLed from outside at a random moment of the run (each
    kill point sleeps a little, so kills land inside steps too); a fourth finishes it. Either
    outcome keeps every effect at most once: completed with each effect exactly once, or
    stopped with UnknownOutcome at the notification (a kill between its intent and result)."""
    from keel.temporal import run_result, start_run

    harness, workers = world
    rng = random.Random(harness.run_id)
    proc = workers.start("none", KEEL_CRASH_SLOW="1")
    await start_run(temporal_client, "orders", "Order a lamp.", task_queue=workers.queue,
                    run_id=harness.run_id, heartbeat_s=HEARTBEAT_S, step_timeout_s=300)
    mid_run = 0  # kills that landed while the run was still running
    for n in range(3):
        await asyncio.sleep(rng.uniform(0.2, 0.8) if n == 0 else rng.uniform(0.5, 3.0))
        proc.kill()
        proc.wait()
        mid_run += (await harness.snapshot()).status == "running"
        proc = workers.start("none", KEEL_CRASH_SLOW="1")
    try:
        result: Any = await asyncio.wait_for(run_result(temporal_client, harness.run_id), 180)
    except TimeoutError:
        raise AssertionError(f"no end: {workers.log(len(workers.procs) - 1)}") from None
    except Exception as exc:
        result = exc
    after = await harness.snapshot()
    assert mid_run >= 1, "no kill landed inside the run"
    assert len(set(after.entries())) == len(after.journal)
    assert after.effect_count("reserve") <= 1 and after.effect_count("charge") <= 1
    assert after.effect_count("notify") <= 1 and after.starts[NOTIFY] <= 1
    if after.status == "completed":
        assert result.output == "Order placed."
        assert [after.effect_count(t) for t in ("reserve", "charge", "notify")] == [1, 1, 1]
        assert await workflow_status(temporal_client, harness) == "COMPLETED"
    else:
        assert after.status == "failed" and "UnknownOutcome" in str(after.record.error)
        assert type(result).__name__ == "UnknownOutcome"
