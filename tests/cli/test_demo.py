"""`keel demo`: every example, offline, on scripted models, leaving nothing behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from keel.cli import _demo
from tests.cli.conftest import InvokeResult

Keel = Callable[..., InvokeResult]


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the demo's temporary store goes, so the test can see it was removed."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def test_demo_runs_every_example_and_says_the_model_is_scripted(
        keel: Keel, tmp_path: Path, private_tmp: Path) -> None:
    r = keel("demo", "--examples")
    assert r.exit_code == 0, r
    out = r.stdout
    assert "The model is scripted" in out and "no LLM is" in out
    for name in ("tool_use", "structured_output", "self_correction", "budget_guard",
                 "approval_gate"):
        assert f"examples/{name}.py" in out
    assert out.index("examples/tool_use.py") < out.index("examples/budget_guard.py")
    assert out.index("examples/budget_guard.py") < out.index("examples/approval_gate.py")
    # the approval gate: suspended, decided by the demo's reviewer, resumed, refund once
    assert "waits for a person" in out and "refunds over 100 need a person" in out
    assert "demo reviewer approved it" in out and "refunded 249.00 for A-1042" in out
    assert 'get_weather {"city": "Paris"}' in out  # steps are shown live
    assert "Tokyo is warmer" in out
    assert "did not match the output type" in out
    assert "unknown_tool" in out and "invalid_arguments" in out and "invalid_json" in out
    assert "stopped, as this example intends" in out and "BudgetExceeded" in out
    assert out.count("completed") >= 6  # 3 summaries + 3 rows in the run table
    assert r.stderr == ""
    # Nothing left behind: no store in the cwd, the default store or the temp dir.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]
    assert list(private_tmp.iterdir()) == []


def test_demo_ignores_keel_model(keel: Keel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_MODEL", "openai:gpt-4o-mini")  # no key is set: it would fail
    r = keel("demo", "--examples")
    assert r.exit_code == 0, r
    assert "KEEL_MODEL is set but ignored" in r.stdout
    assert os.environ["KEEL_MODEL"] == "openai:gpt-4o-mini"  # restored


def test_demo_without_examples_says_how_to_get_them(
        keel: Keel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_demo, "examples_dir", lambda: None)
    r = keel("demo", "--examples")
    assert r.exit_code != 0, r
    assert "no examples found" in r.stderr and "reinstall keel-agents" in r.stderr


def test_examples_dir_prefers_the_copy_shipped_in_the_package(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site-packages" / "keel"
    (package / "examples").mkdir(parents=True)
    (package / "examples" / "tool_use.py").write_text("x = 1\n")
    monkeypatch.setattr(_demo.keel, "__file__", str(package / "__init__.py"))
    monkeypatch.chdir(tmp_path)
    assert _demo.examples_dir() == package / "examples"


def test_examples_dir_is_found_next_to_the_package() -> None:
    found = _demo.examples_dir()
    assert found is not None and (found / "tool_use.py").is_file()


BROKEN = {
    "broken.py": "def (:\n",
    "hosted.py": 'from keel import Agent\nagent = Agent("h", model="openai:gpt-4o-mini")\n'
                 'INPUT = "hi"\n',
    "no_agent.py": "x = 1\n",
    "loops.py": "from keel import Agent, Budget\nfrom keel.testing import ScriptedModel, call\n"
                "from keel import tool\n@tool\ndef t() -> str:\n    '''T.'''\n    return 'x'\n"
                "agent = Agent('l', model=ScriptedModel([call('t')] * 9), tools=[t],\n"
                "              budget=Budget(max_steps=2))\nINPUT = 'go'\n",
}


def test_a_broken_example_fails_the_demo(keel: Keel, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    examples = tmp_path / "examples"
    examples.mkdir()
    for name, source in BROKEN.items():
        (examples / name).write_text(source)
    monkeypatch.setattr(_demo, "examples_dir", lambda: examples)
    r = keel("demo", "--examples")
    assert r.exit_code == 1, r
    assert "examples/broken.py does not load" in r.stderr
    assert "skipping examples/hosted.py: its agent calls a real model" in r.stdout
    assert "skipping examples/no_agent.py" in r.stdout
    assert "error: BudgetExceeded" in r.stderr  # loops.py stopped without expecting it
    assert "Traceback" not in r.output


def test_demo_plays_the_pattern_examples_without_false_alarms(keel: Keel) -> None:
    r = keel("demo", "--examples")
    assert r.exit_code == 0, r
    for name in ("planning", "reflection", "workflow", "routing", "supervisor", "handoff",
                 "group_chat", "marketplace"):
        assert f"examples/{name}.py" in r.stdout
    # peers and bidders answer in text: the live view must not call that a rejected answer
    assert r.stdout.count("did not match the output type") == 1  # structured_output's own
