"""``keel worker --temporal`` (a subprocess) and ``keel run --temporal``, ``keel runs show``
of a run on Temporal (in-process, through typer's runner)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel.cli import app

SRC = Path(__file__).resolve().parents[2] / "src"

AGENT = '''
    import re

    from keel import Agent, tool
    from keel.core import ToolResultPart
    from keel.testing import FunctionModel, call


    def answer(messages, tools, settings):
        seen = [re.sub(r"<[^>]+>", "", p.content).strip() for m in messages
                if m.role == "tool" for p in m.parts if isinstance(p, ToolResultPart)]
        if not seen:
            return call("add", {"a": 2, "b": 3})
        return "sum: " + seen[0]


    @tool(risk="read")
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b


    agent = Agent("cli-adder", model=FunctionModel(answer), tools=[add])
'''


def _keel(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout + result.stderr


@pytest.fixture
def agent_file(tmp_path: Path) -> Path:
    path = tmp_path / "cli_agents.py"
    path.write_text(textwrap.dedent(AGENT), encoding="utf-8")
    return path


def test_worker_and_run_on_temporal(temporal_address: str, agent_file: Path,
                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    queue = f"keel-cli-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "keel.cli", "worker", "--temporal", "--temporal-address",
         temporal_address, "--task-queue", queue, "--store", store, f"{agent_file}:agent"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None
        first = worker.stdout.readline()  # printed once connected, before serving
        assert "temporal worker on" in first and "cli-adder" in first, (
            first, worker.stderr.read() if worker.poll() is not None and worker.stderr else "")
        code, out = _keel("run", "--temporal", "--temporal-address", temporal_address,
                          "--task-queue", queue, "--json", f"{agent_file}:agent", "add")
        assert code == 0, out
        result = json.loads(out)
        assert result["output"] == "sum: 5" and result["status"] == "completed"
        assert result["steps"] == 3
        code, out = _keel("runs", "show", result["run_id"], "--store", store)
        assert code == 0, out
        assert "cli-adder/turn:0/tool:add#0" in out and "cli-adder/turn:1/model" in out
        assert "completed" in out
    finally:
        worker.send_signal(signal.SIGINT)
        try:
            code = worker.wait(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
            for stream in (worker.stdout, worker.stderr):
                if stream is not None:
                    stream.close()
    assert code == 130  # stopped by Ctrl-C, cleanly


def test_temporal_options_need_temporal(agent_file: Path) -> None:
    code, out = _keel("run", "--task-queue", "q", f"{agent_file}:agent", "hi")
    assert code == 2 and "--task-queue only make sense with --temporal" in out
    code, out = _keel("worker", "--namespace", "x", f"{agent_file}:agent")
    assert code == 2 and "--namespace only make sense with --temporal" in out
    code, out = _keel("worker", "--temporal", "--once", f"{agent_file}:agent")
    assert code == 2 and "--once" in out
    code, out = _keel("run", "--temporal", "--task-queue", "bad\x00queue",
                      f"{agent_file}:agent", "hi")
    assert code == 2 and "not a valid value" in out


def test_run_on_an_unreachable_server_fails_fast(agent_file: Path) -> None:
    code, out = _keel("run", "--temporal", "--temporal-address", "127.0.0.1:9",
                      f"{agent_file}:agent", "hi")
    assert code == 1 and "TemporalUnavailable" in out and "127.0.0.1:9" in out


def test_a_bad_target_fails_before_temporal_is_asked(tmp_path: Path) -> None:
    code, out = _keel("run", "--temporal", f"{tmp_path}/missing.py:agent", "hi")
    assert code == 2 and "missing.py" in out
