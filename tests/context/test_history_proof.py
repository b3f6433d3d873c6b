"""The proof of the history policy (issue 13): a 500-turn conversation against a model with
an 8k window, with keel's defaults and a summarising history policy, in child processes on
one SQLite file. Every request is within the window (counted exactly, with the tool specs
and the reply reserve), no tool call is sent without its result or the reverse, the pinned
facts are in every request to the end, the run is warned once, and a run killed half-way
and resumed in another process sends exactly the requests the uninterrupted run sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from keel.store import open_store

CHILD = Path(__file__).with_name("_proof_child.py")
WINDOW = 8192


def child(mode: str, db: Path, out: Path, *, expect: int = 0) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, str(CHILD), mode, str(db), str(out)], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == expect, done.stderr[-3000:]
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("proof")
    lines = child("full", tmp / "full.db", tmp / "full.jsonl")
    return {"requests": [x for x in lines if "step" in x], "result": lines[-1],
            "db": tmp / "full.db"}


def test_every_request_fits_the_window_and_keeps_calls_with_results(
        reference: dict[str, Any]) -> None:
    requests = reference["requests"]
    assert len(requests) == 501  # 500 tool turns and the answer
    assert [r["step"] for r in requests] == list(range(1, 502))
    assert max(r["tokens"] + r["reserve"] for r in requests) <= WINDOW
    assert all(r["orphans"] == 0 for r in requests)
    assert all(r["facts"] for r in requests)  # the pinned facts, to the very end
    # the conversation really outgrew the window: requests stayed flat while it grew
    assert max(r["count"] for r in requests) < 120
    assert reference["result"]["result"] == "All records checked."


async def test_the_run_is_warned_exactly_once(reference: dict[str, Any]) -> None:
    warning = reference["result"]["warning"]
    assert warning is not None and "new conversation" in warning
    store = open_store(str(reference["db"]))
    async with store:
        entries = await store.read_journal("history-proof-run")
    assert [e.name for e in entries if e.kind == "context"] == ["warning"]
    assert sum(1 for e in entries if e.kind == "summary") >= 5


def test_a_run_killed_half_way_resumes_elsewhere_with_the_same_requests(
        reference: dict[str, Any], tmp_path: Path) -> None:
    db, out = tmp_path / "crash.db", tmp_path / "crash.jsonl"
    before = child("crash", db, out, expect=3)
    assert before[-1]["step"] == 250  # killed at that request
    after = child("resume", db, tmp_path / "resume.jsonl")
    resumed = [x for x in after if "step" in x]
    expected = {r["step"]: r["digest"] for r in reference["requests"]}
    assert resumed and resumed[-1]["step"] == 501
    assert resumed[0]["step"] <= 250  # the killed request is asked again
    for r in [*before, *resumed]:
        assert r["digest"] == expected[r["step"]], r["step"]
    assert after[-1]["result"] == "All records checked."
    assert after[-1]["replayed"] > 0
    assert after[-1]["warning"] == reference["result"]["warning"]
