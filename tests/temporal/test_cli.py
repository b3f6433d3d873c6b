"""``keel worker --temporal`` (a subprocess) and ``keel run --temporal``, ``keel runs show``
of a run on Temporal (in-process, through typer's runner)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from keel.cli import app
from keel.store import SQLiteStore
from keel.temporal import connect, run_result, start_run, workflow_id_for

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


PAYER = '''
    import re

    from keel import Agent, tool
    from keel.core import ToolResultPart
    from keel.testing import FunctionModel, call


    def answer(messages, tools, settings):
        seen = [re.sub(r"<[^>]+>", "", p.content).strip() for m in messages
                if m.role == "tool" for p in m.parts if isinstance(p, ToolResultPart)]
        return "paid: " + seen[0] if seen else call("pay", {"amount": 9})


    @tool(risk="irreversible")
    def pay(amount: int) -> str:
        """Pay."""
        return f"sent {amount}"


    agent = Agent("cli-payer", model=FunctionModel(answer), tools=[pay])
'''


def _keel(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout + result.stderr


@pytest.fixture
def agent_file(tmp_path: Path) -> Path:
    path = tmp_path / "cli_agents.py"
    path.write_text(textwrap.dedent(AGENT), encoding="utf-8")
    return path


class _Worker:
    """``keel worker --temporal`` in a subprocess, serving ``target`` on a fresh queue."""

    def __init__(self, address: str, store: str, target: str, cwd: Path,
                 *extra: str) -> None:
        self.queue = f"keel-cli-{uuid.uuid4().hex[:8]}"
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "keel.cli", "worker", "--temporal", "--temporal-address",
             address, "--task-queue", self.queue, "--store", store, *extra, target],
            env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.lines: list[str] = []
        while not any("temporal worker on" in line for line in self.lines):
            line = self.proc.stdout.readline()  # printed once connected, before serving
            if not line or len(self.lines) > 5:
                self.stop()
                raise AssertionError(f"the worker did not start: {self.lines!r}")
            self.lines.append(line)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.mark.slow  # a worker subprocess
def test_worker_and_run_on_temporal(temporal_address: str, agent_file: Path,
                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    worker = _Worker(temporal_address, store, f"{agent_file}:agent", tmp_path,
                     "--metrics-port", "0")
    try:
        [metrics] = [line.split("metrics on ", 1)[1].strip() for line in worker.lines
                     if "metrics on " in line]
        code, out = _keel("run", "--temporal", "--temporal-address", temporal_address,
                          "--task-queue", worker.queue, "--json", f"{agent_file}:agent", "add")
        assert code == 0, out
        result = json.loads(out)
        assert result["output"] == "sum: 5" and result["status"] == "completed"
        assert result["steps"] == 3
        code, out = _keel("runs", "show", result["run_id"], "--store", store)
        assert code == 0, out
        assert "cli-adder/turn:0/tool:add#0" in out and "cli-adder/turn:1/model" in out
        assert "completed" in out
        # with the worker's store, each step is printed as the worker records it
        code, out = _keel("run", "--temporal", "--temporal-address", temporal_address,
                          "--task-queue", worker.queue, "--store", store,
                          f"{agent_file}:agent", "add again")
        assert code == 0, out
        lines = [line for line in out.splitlines() if "cli-adder/turn:" in line]
        assert [line.split()[1] for line in lines] == [
            "cli-adder/turn:0/model", "cli-adder/turn:0/tool:add#0", "cli-adder/turn:1/model"]
        assert "run completed" in out and "sum: 5" in out
        # the worker's /metrics counts the steps it ran
        with urllib.request.urlopen(metrics, timeout=10) as page:
            text = page.read().decode()
        assert 'keel_model_requests_total{' in text and 'agent="cli-adder"' in text
    finally:
        code = worker.stop()
    assert code == 130  # stopped by Ctrl-C, cleanly


@pytest.mark.slow  # a worker subprocess
def test_keel_approvals_approve_signals_the_workflow(temporal_address: str,
                                                     tmp_path: Path) -> None:
    path = tmp_path / "cli_payer.py"
    path.write_text(textwrap.dedent(PAYER), encoding="utf-8")
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    worker = _Worker(temporal_address, store, f"{path}:agent", tmp_path)
    try:
        async def start() -> str:
            client = await connect(temporal_address)
            return await start_run(client, "cli-payer", "pay", task_queue=worker.queue,
                                   poll_s=3600)  # only the signal can wake it in time

        async def suspended(run_id: str) -> str:
            async with SQLiteStore(tmp_path / "runs.db") as db:
                for _ in range(1200):
                    tasks = await db.list_tasks()
                    if tasks and (await db.get_run(run_id)).status == "suspended":
                        return tasks[0].task_id
                    await asyncio.sleep(0.05)
            raise AssertionError("the run never waited for approval")

        async def result(run_id: str) -> tuple[Any, int]:
            client = await connect(temporal_address)
            done = await asyncio.wait_for(run_result(client, run_id), 60)
            history = await client.get_workflow_handle(workflow_id_for(run_id)).fetch_history()
            return done, sum(1 for e in history.events
                             if e.HasField("workflow_execution_signaled_event_attributes"))

        run_id = asyncio.run(start())
        task_id = asyncio.run(suspended(run_id))
        # while its workflow drives it, `keel resume` refuses it
        code, out = _keel("resume", run_id, "--store", store)
        assert code == 2 and "driven by temporal" in out
        code, out = _keel("approvals", "approve", task_id, "--by", "ann", "--store", store)
        assert code == 0, out
        done, signals = asyncio.run(result(run_id))
        assert done.output == "paid: sent 9" and signals == 1
    finally:
        worker.stop()


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
