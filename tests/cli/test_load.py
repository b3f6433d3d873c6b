"""MODULE:ATTR targets: files, dotted modules, and every way a target can be wrong."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from keel import UserError
from keel.cli._load import load_agent, split_target
from tests.cli.conftest import EXAMPLES, InvokeResult

Keel = Callable[..., InvokeResult]
AGENT = 'from keel import Agent\nfrom keel.testing import ScriptedModel\n' \
        'agent = Agent("tiny", model=ScriptedModel(["hi"]))\nnot_an_agent = 42\n'


@pytest.mark.parametrize("target", ["nothing", "mod:", ":agent", "  ", "x.py:", "a:b:"])
def test_a_target_needs_module_colon_attr(target: str) -> None:
    with pytest.raises(UserError, match="does not name an agent: use MODULE:ATTR"):
        split_target(target)


@pytest.mark.parametrize("target", ["mod:1agent", "mod:agent-x", "mod:a b"])
def test_attr_must_be_a_python_name(target: str) -> None:
    with pytest.raises(UserError, match="is not a Python attribute name"):
        split_target(target)


def test_the_last_colon_splits_so_windows_paths_work() -> None:
    assert split_target(r"C:\work\agents.py:agent") == (r"C:\work\agents.py", "agent")


def test_a_file_target_is_stored_absolute(tmp_path: Path) -> None:
    (tmp_path / "tiny.py").write_text(AGENT)
    agent, canonical = load_agent("tiny.py:agent")  # relative to the cwd (tmp_path)
    assert agent.name == "tiny"
    assert canonical == f"{tmp_path / 'tiny.py'}:agent"


@pytest.fixture
def forget_mypkg() -> Iterator[None]:
    yield
    for name in [n for n in sys.modules if n == "mypkg" or n.startswith("mypkg.")]:
        del sys.modules[name]


@pytest.mark.usefixtures("forget_mypkg")
def test_a_dotted_module_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text(AGENT)
    (tmp_path / "mypkg" / "agents.py").write_text(AGENT + "class Holder:\n    inner = agent\n")
    agent, canonical = load_agent("mypkg.agents:agent")
    assert agent.name == "tiny" and canonical == "mypkg.agents:agent"
    assert load_agent("mypkg.agents:Holder.inner")[0] is agent
    assert load_agent("mypkg:agent")[0].name == "tiny"  # a package directory is a module


@pytest.mark.parametrize(("target", "message"), [
    ("nothing", "does not name an agent: use MODULE:ATTR"),
    ("no_such_module:agent", "no module named 'no_such_module'"),
    ("missing.py:agent", "missing.py: no such file"),
    ("tiny.py:nope", "has no attribute 'nope'; agents in it: agent"),
    ("tiny.py:not_an_agent", "tiny.py:not_an_agent is a int, not a keel Agent"),
    ("json:dumps", "json:dumps is a function, not a keel Agent"),
    ("broken.py:agent", "broken.py has a syntax error (line 1)"),
    ("needs_dep.py:agent", "importing"),
    ("raises.py:agent", "raises.py failed: ZeroDivisionError: division by zero"),
    ("notes.txt:agent", "not a .py file"),
    ("./:agent", "it is a directory"),
    (".:agent", "is neither a module name nor a .py file"),
    ("a b:agent", "is neither a module name nor a .py file"),
])
def test_bad_targets_exit_2_with_a_message(keel: Keel, tmp_path: Path, target: str,
                                           message: str) -> None:
    (tmp_path / "tiny.py").write_text(AGENT)
    (tmp_path / "broken.py").write_text("def (:\n")
    (tmp_path / "needs_dep.py").write_text("import surely_not_installed_xyz\n")
    (tmp_path / "raises.py").write_text("1 / 0\n")
    (tmp_path / "notes.txt").write_text("hi")
    r = keel("run", target, "hi")
    assert r.exit_code == 2, r
    assert r.stderr.startswith("error: ")
    assert len(r.stderr.strip().splitlines()) == 1  # one line
    assert message in r.stderr
    assert "Traceback" not in r.output


def test_a_missing_dependency_is_named(keel: Keel, tmp_path: Path) -> None:
    (tmp_path / "needs_dep.py").write_text("import surely_not_installed_xyz\n")
    r = keel("run", "needs_dep.py:agent", "hi")
    assert "No module named 'surely_not_installed_xyz'" in r.stderr


def test_a_module_without_agents_says_so(keel: Keel, tmp_path: Path) -> None:
    (tmp_path / "empty.py").write_text("x = 1\n")
    r = keel("run", "empty.py:agent", "hi")
    assert "it defines no keel Agent at module level" in r.stderr


def test_examples_load_by_path() -> None:
    for path in sorted(EXAMPLES.glob("*.py")):
        attr = "agent" if re.search(r"^agent\b[^=\n]*= ", path.read_text("utf-8"), re.M) else "flow"
        agent, _ = load_agent(f"{path}:{attr}")
        assert agent.name
