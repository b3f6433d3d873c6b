"""`keel demo`'s closing suggestion is a command that works where the user is: outside a
checkout (the cwd has no examples/) it names the example shipped inside the package."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from keel.cli import _demo
from tests.cli.conftest import InvokeResult

Keel = Callable[..., InvokeResult]


def test_the_suggested_command_runs_outside_a_checkout(keel: Keel, tmp_path: Path) -> None:
    assert not (tmp_path / "examples").exists()  # the cwd is not a checkout
    demo = keel("demo", "--examples")
    assert demo.exit_code == 0, demo
    line = next(x for x in demo.stdout.splitlines() if x.strip().startswith("keel run "))
    args = shlex.split(line.strip())[2:]
    target = args[0]
    assert Path(target.rpartition(":")[0]).is_file(), target
    ran = keel("--store", f"sqlite:///{tmp_path / 'runs.db'}", "run", *args)
    assert ran.exit_code == 0, ran
    assert "Tokyo" in ran.stdout


def test_the_suggestion_names_the_shipped_copy_after_a_wheel_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site packages" / "keel"
    (package / "examples").mkdir(parents=True)
    (package / "examples" / "tool_use.py").write_text("x = 1\n")
    monkeypatch.setattr(_demo.keel, "__file__", str(package / "__init__.py"))
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    target = _demo.example_target(_demo.examples_dir())
    assert shlex.split(target) == [f"{package / 'examples' / 'tool_use.py'}:agent"]


def test_inside_a_checkout_the_suggestion_stays_short(monkeypatch: pytest.MonkeyPatch) -> None:
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)
    assert _demo.example_target(repo / "examples") == "examples/tool_use.py:agent"
    assert re.fullmatch(r"\S+:agent", _demo.example_target(None))


@pytest.mark.slow
def test_in_a_wheel_layout_the_demo_and_its_suggestion_work(tmp_path: Path) -> None:
    """The wheel's layout (pyproject: examples force-included as keel/examples), installed
    away from any checkout: the demo finds its examples and the command it suggests runs."""
    import os
    import shutil
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    site = tmp_path / "site-packages"
    shutil.copytree(repo / "src" / "keel", site / "keel",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(repo / "examples", site / "keel" / "examples",
                    ignore=shutil.ignore_patterns("__pycache__"))
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200"}
    env.pop("KEEL_MODEL", None)

    def keel_cmd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "keel.cli", *args], capture_output=True,
                              text=True, env=env, cwd=home, timeout=300)

    demo = keel_cmd("demo", "--examples")
    assert demo.returncode == 0, demo.stderr
    line = next(x for x in demo.stdout.splitlines() if x.strip().startswith("keel run "))
    args = shlex.split(line.strip())[2:]
    assert args[0].startswith(str(site / "keel" / "examples")), args
    ran = keel_cmd("--store", f"sqlite:///{tmp_path / 'runs.db'}", "run", *args)
    assert ran.returncode == 0, ran.stderr
    assert "Tokyo" in ran.stdout
    desk = keel_cmd("demo")  # the support desk, imported as keel.examples.support_desk
    assert desk.returncode == 0, desk.stderr
    assert "12 (13 turns)" in desk.stdout
