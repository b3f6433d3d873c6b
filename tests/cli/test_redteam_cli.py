"""`keel redteam TARGET`: the attack suites as a CI gate (exit 0 / 1), the reports it writes,
the runs it leaves in the store, and one-line errors for bad input (exit 2)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from keel.store import RunFilter, open_store
from tests.cli.conftest import EXAMPLES, TOOL_USE, InvokeResult

Keel = Callable[..., InvokeResult]
APPROVAL = f"{EXAMPLES / 'approval_gate.py'}:agent"


def test_the_gate_passes_and_writes_every_report(keel: Keel, store: str,
                                                 tmp_path: Path) -> None:
    """Indirect injection against the refund example with a compromised model: nothing an
    attacker planted in a tool's output runs without a person, so a 0% gate passes."""
    r = keel("redteam", APPROVAL, "--suite", "indirect_injection", "--compromised-model",
             "--max-success-rate", "0", "--store", store, "--report", "r.json",
             "--markdown", "r.md", "--junit", "r.xml")
    assert r.exit_code == 0, r
    assert "| indirect_injection | 25 | 0 | 25 | 0 | 0.0% |" in r.stdout
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["passed"] is True and data["overall"]["attacks"] == 25
    assert data["settings"]["compromised"] is True
    assert "Gate: passed" in (tmp_path / "r.md").read_text()
    xml = (tmp_path / "r.xml").read_text()
    assert xml.count("<testcase ") == 25 and "<failure" not in xml

    async def stored() -> list[str]:
        async with open_store(store) as opened:
            runs = await opened.list_runs(RunFilter(limit=100))
            return [run.metadata["redteam"]["attack"] for run in runs]

    ids = asyncio.run(stored())
    assert sorted(ids) == sorted(o["attack"]["id"] for o in data["outcomes"])


def test_the_gate_fails_with_exit_1_naming_the_category(keel: Keel, store: str) -> None:
    r = keel("redteam", TOOL_USE, "--suite", "exfiltration", "--compromised-model",
             "--max-success-rate", "exfiltration=0", "--store", store, "--json")
    assert r.exit_code == 1, r
    data = json.loads(r.stdout)
    assert data["passed"] is False and data["categories"]["exfiltration"]["succeeded"] > 0
    assert "red-team gate failed: exfiltration:" in r.stderr


@pytest.mark.parametrize(("args", "expected"), [
    (["--suite", "nope"], "unknown red-team suite 'nope'"),
    (["--suite", "missing.jsonl"], "no attack file"),
    (["--max-success-rate", "2"], "--max-success-rate '2': give a rate from 0 to 1"),
    (["--max-success-rate", "lots"], "--max-success-rate 'lots'"),
    (["--max-success-rate", "=0.1"], "--max-success-rate '=0.1'"),
    (["--max-success-rate", "nope=0.1"], "names category 'nope'"),
    (["--report", "/nonexistent/dir/r.json", "--suite", "jailbreak"], "cannot write the report"),
])
def test_bad_input_is_one_line_and_exit_2(keel: Keel, store: str, args: list[str],
                                          expected: str) -> None:
    r = keel("redteam", TOOL_USE, "--compromised-model", "--store", store, *args)
    assert r.exit_code == 2, r
    assert expected in r.stderr and r.stderr.startswith("error: ")


def test_a_target_that_is_not_an_agent(keel: Keel, store: str) -> None:
    r = keel("redteam", f"{EXAMPLES / 'tool_use.py'}:WEATHER", "--store", store)
    assert r.exit_code == 2 and "is a dict, not a keel Agent" in r.stderr
    r = keel("redteam", f"{EXAMPLES / 'workflow.py'}:flow", "--store", store)
    assert r.exit_code == 2 and "keel redteam attacks one agent at a time" in r.stderr, r
    r = keel("redteam", "no_such_module:agent", "--store", store)
    assert r.exit_code == 2 and "no module named" in r.stderr
