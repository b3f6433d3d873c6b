"""The real `keel` executable, in a child process: exit codes, streams, signals."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.conftest import TOOL_USE

pytestmark = pytest.mark.slow  # each test runs the keel CLI in a subprocess

ECHO = '''
from keel import Agent
from keel.testing import FunctionModel


def reply(messages, tools, settings):
    return next(m.text for m in messages if m.role == "user")[:100]


agent = Agent("echo", model=FunctionModel(reply))
'''

SLOW = '''
import asyncio

from keel import Agent, tool
from keel.testing import ScriptedModel, call


@tool(risk="read")
async def wait(seconds: float) -> str:
    """Wait."""
    await asyncio.sleep(seconds)
    return "waited"


agent = Agent("slow", model=ScriptedModel([call("wait", {"seconds": 60}), "done"]),
              tools=[wait])
'''


def keel_executable() -> str:
    beside = Path(sys.executable).with_name("keel")
    found = str(beside) if beside.is_file() else shutil.which("keel")
    assert found, "the keel console script is not installed; run `pip install -e .`"
    return found


class Keel:
    """Runs the `keel` executable in ``cwd`` with a clean environment."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.exe = keel_executable()
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("KEEL_MODEL", "KEEL_DEBUG", "OPENAI_API_KEY",
                                 "ANTHROPIC_API_KEY")}
        self.env.update(KEEL_STORE=f"sqlite:///{cwd / 'default.db'}", COLUMNS="200")

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.exe, *args], cwd=self.cwd, env=self.env, input=stdin,
                              capture_output=True, text=True, encoding="utf-8", timeout=60,
                              check=False)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([self.exe, *args], cwd=self.cwd, env=self.env, text=True,
                                encoding="utf-8", stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)


@pytest.fixture
def keel(tmp_path: Path) -> Keel:
    return Keel(tmp_path)


def first_run_id(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("▶")).split()[2]


def test_run_list_show_resume_end_to_end(keel: Keel, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    run = keel("--store", store, "run", TOOL_USE, "Which is warmer?")
    assert run.returncode == 0, run.stderr
    assert "get_weather" in run.stdout and "run completed" in run.stdout
    assert run.stderr == ""
    run_id = first_run_id(run.stdout)

    listed = keel("--store", store, "runs", "list")
    assert listed.returncode == 0 and run_id in listed.stdout and "completed" in listed.stdout

    shown = keel("--store", store, "runs", "show", run_id)
    assert shown.returncode == 0
    assert "weather/turn:0/tool:get_weather#1" in shown.stdout

    again = keel("--store", store, "resume", run_id)
    assert again.returncode == 2
    assert f"error: run {run_id} already completed; nothing to resume" in again.stderr

    unknown = keel("--store", store, "runs", "show", "01nosuchrun")
    assert unknown.returncode == 2
    assert "no run '01nosuchrun' in this store" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_json_output_parses(keel: Keel, tmp_path: Path) -> None:
    r = keel("--store", f"sqlite:///{tmp_path / 'runs.db'}", "run", "--json", TOOL_USE, "q")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["status"] == "completed" and data["steps"] == 6


def test_a_failed_run_exits_1(keel: Keel, tmp_path: Path) -> None:
    budget = TOOL_USE.replace("tool_use.py", "budget_guard.py")
    r = keel("--store", f"sqlite:///{tmp_path / 'runs.db'}", "run", budget, "loop")
    assert r.returncode == 1
    assert "BudgetExceeded" in r.stderr and "keel runs show" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("target", ["no-colon", "missing.py:agent",
                                    f"{TOOL_USE.rsplit(':', 1)[0]}:WEATHER"])
def test_bad_targets_exit_2(keel: Keel, target: str) -> None:
    r = keel("run", target, "hi")
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr


def test_a_corrupt_store_exits_2_and_is_left_unchanged(keel: Keel, tmp_path: Path) -> None:
    bad = tmp_path / "runs.db"
    bad.write_bytes(os.urandom(4096))
    before = hashlib.sha256(bad.read_bytes()).hexdigest()
    for args in (["runs", "list"], ["run", TOOL_USE, "q"]):
        r = keel("--store", f"sqlite:///{bad}", *args)
        assert r.returncode == 2, r.stderr
        assert "is not a keel run store" in r.stderr
    assert hashlib.sha256(bad.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.db"]


def test_demo_exits_0_and_says_the_model_is_scripted(keel: Keel, tmp_path: Path) -> None:
    r = keel("demo")  # the README's quick start: the support desk's day
    assert r.returncode == 0, r.stderr
    assert "no LLM or network is used" in r.stdout and "12 (13 turns)" in r.stdout
    assert list(tmp_path.iterdir()) == []
    r = keel("demo", "--examples")
    assert r.returncode == 0, r.stderr
    assert "The model is scripted" in r.stdout and "no LLM is" in r.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_demo_keep_serves_until_ctrl_c(tmp_path: Path) -> None:
    import httpx

    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "keel.cli", "demo", "--keep", "--dir",
                             str(tmp_path / "desk")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Press Ctrl-C to stop it" in line:
                break
        url = next(x.split("console", 1)[1].split()[0] for x in lines if "console  http" in x)
        link = next(x for x in lines if x.startswith("Chat as customer C-00003"))
        assert "/chat/login?next=/chat%3Fagent%3Ddesk#token=" in link
        assert httpx.get(f"{url.removesuffix('/console')}/console/login",
                         timeout=30).status_code == 200
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (tmp_path / "desk" / "desk.db").is_file()  # --dir keeps the files


def test_hostile_and_huge_input(keel: Keel, tmp_path: Path) -> None:
    (tmp_path / "echo.py").write_text(ECHO)
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    hostile = keel("--store", store, "run", "echo.py:agent", "[bold red]x[/] \x1b[31mRED\x1b[0m")
    assert hostile.returncode == 0, hostile.stderr
    assert "[bold red]x[/] \\x1b[31mRED\\x1b[0m" in hostile.stdout
    assert "\x1b" not in hostile.stdout + hostile.stderr
    # 1 MB is over the kernel's limit for one argument, so it comes through stdin.
    big = keel("--store", store, "run", "echo.py:agent", "-", stdin="z" * 1_000_000)
    assert big.returncode == 0, big.stderr
    assert len(big.stdout) < 20_000


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_exits_130_and_names_the_resume_command(keel: Keel, tmp_path: Path) -> None:
    (tmp_path / "slow.py").write_text(SLOW)
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    proc = keel.popen("--store", store, "run", "slow.py:agent", "go")
    assert proc.stdout is not None
    try:
        started = time.monotonic()
        lines = []
        while not any(line.lstrip().startswith("→ wait") for line in lines):
            line = proc.stdout.readline()
            assert line, f"keel exited early: {proc.stderr.read() if proc.stderr else ''}"
            lines.append(line)
            assert time.monotonic() - started < 30
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    run_id = first_run_id("".join(lines))
    assert f"keel resume {run_id}" in stderr
    assert "Traceback" not in stderr
    listed = keel("--store", store, "runs", "list", "--status", "cancelled")
    assert run_id in listed.stdout
