"""SIGKILL a real process at many points of a multi-step run on a real SQLite file, resume it
in a new process, and count every tool's side effects in the outside system."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keel.store import open_store

HERE = Path(__file__).parent
CHILD = HERE / "crash_agent.py"

KEYS = ["orders/turn:0/model", "orders/turn:0/tool:reserve#0", "orders/turn:1/model",
        "orders/turn:1/tool:charge#0", "orders/turn:2/model", "orders/turn:2/tool:notify#0"]

# kill point -> what resume must do: "completes", or "unknown" (an UnknownOutcome at notify)
POINTS = {
    "model:0": "completes",
    "model:1": "completes",
    "model:2": "completes",
    "model:3": "completes",
    "tool:reserve:before": "completes",
    "tool:reserve:after": "completes",  # idempotent: re-run with the same key, deduped outside
    "tool:charge:before": "completes",  # reconcile: not charged -> charge now, once
    "tool:charge:after": "completes",  # reconcile: already charged -> take that result
    "tool:notify:before": "unknown",  # intent, no result, no reconcile: never re-run blindly
    "tool:notify:after": "unknown",
    **{f"append:{k}:result": "completes" for k in KEYS},
    "append:orders/turn:1/tool:charge#0:intent": "completes",
    "append:orders/turn:2/tool:notify#0:intent": "unknown",
}


def child(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHILD), *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def count_effects(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT tool, COUNT(*) FROM effects GROUP BY tool").fetchall()
    finally:
        db.close()
    return dict(rows)


def env_for(tmp_path: Path, kill: str) -> dict[str, str]:
    return {**os.environ, "KEEL_CRASH_STORE": str(tmp_path / "runs.db"),
            "KEEL_CRASH_EFFECTS": str(tmp_path / "outside.db"), "KEEL_CRASH_KILL": kill,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}


async def read_status(tmp_path: Path, run_id: str) -> tuple[str, list[tuple[str, str]]]:
    store = open_store(str(tmp_path / "runs.db"))
    try:
        record = await store.get_run(run_id)
        return record.status, [(e.key, e.phase) for e in await store.read_journal(run_id)]
    finally:
        await store.close()


@pytest.mark.parametrize(("kill", "expected"), list(POINTS.items()))
async def test_sigkill_then_resume_never_repeats_an_effect(tmp_path: Path, kill: str,
                                                           expected: str) -> None:
    crashed = child(["run", "run-1"], env_for(tmp_path, kill))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    status, before = await read_status(tmp_path, "run-1")
    assert status == "running"  # a killed process cannot mark its run; resume takes it over

    resumed = child(["resume", "run-1"], env_for(tmp_path, "none"))
    effects = count_effects(tmp_path / "outside.db")
    status, after = await read_status(tmp_path, "run-1")
    assert after[: len(before)] == before  # the journal only ever grows
    if expected == "completes":
        assert resumed.returncode == 0, resumed.stderr
        assert json.loads(resumed.stdout)["output"] == "Order placed."
        assert effects == {"reserve": 1, "charge": 1, "notify": 1}
        assert status == "completed"
        assert [k for k, p in after if p == "result"] == [*KEYS, "orders/turn:3/model"]
    else:
        assert resumed.returncode == 3, resumed.stderr
        assert json.loads(resumed.stdout)["step_key"] == "orders/turn:2/tool:notify#0"
        assert effects["reserve"] == 1 and effects["charge"] == 1
        assert effects.get("notify", 0) == (1 if kill.endswith(":after") else 0)
        assert status == "failed"


def test_kill_at_random_moments_from_outside(tmp_path: Path) -> None:
    """The parent kills the child whenever its journal has grown, at three different depths."""
    for depth in (1, 3, 5):
        run_dir = tmp_path / f"depth{depth}"
        run_dir.mkdir()
        env = {**env_for(run_dir, "none"), "KEEL_CRASH_SLOW": "1"}
        proc = subprocess.Popen([sys.executable, str(CHILD), "run", "r"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                if (run_dir / "runs.db").exists() and _entries(run_dir) >= depth:
                    proc.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.005)
        finally:
            proc.wait(timeout=60)
            assert proc.stderr is not None
            proc.stderr.close()
        resumed = child(["resume", "r"], env_for(run_dir, "none"))
        effects = count_effects(run_dir / "outside.db")
        if resumed.returncode == 3:  # killed inside notify: never sent twice, run stops
            assert effects.get("notify", 0) <= 1
        else:
            assert resumed.returncode == 0, resumed.stderr
            assert effects == {"reserve": 1, "charge": 1, "notify": 1}


def _entries(run_dir: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{run_dir / 'runs.db'}?mode=ro", uri=True, timeout=1)
        try:
            return int(db.execute("SELECT COUNT(*) FROM journal").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0
