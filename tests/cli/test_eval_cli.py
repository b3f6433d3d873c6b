"""`keel eval`: bad input exits 2 with a line naming the fix; a raising scorer is reported
per case; --tag, --scorer by name and module:attr, --max-cost."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.conftest import InvokeResult

Keel = Callable[..., InvokeResult]

AGENT = '''
    from keel import Agent
    from keel.testing import FunctionModel
    from keel.evals import scorer

    def reply(messages, tools, settings):
        return next(m.text for m in messages if m.role == "user").upper()

    agent = Agent("shout", model=FunctionModel(reply))

    def _explode(case, observed):
        if case.id == "b":
            raise RuntimeError("scorer bug on b")
        return 1.0

    exploding = scorer(_explode, name="exploding")
    not_a_scorer = 42
'''
CASES = [{"id": "a", "input": "hi", "expected": "HI", "tags": ["x"]},
         {"id": "b", "input": "yo", "expected": "YO", "tags": ["y"]}]


@pytest.fixture
def target(write_module: Callable[[str, str], Path]) -> str:
    return f"{write_module('shout', AGENT)}:agent"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "cases.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in CASES), encoding="utf-8")
    return path


def test_eval_passes_and_writes_a_report(keel: Keel, target: str, data: Path, store: str,
                                         tmp_path: Path) -> None:
    r = keel("eval", target, str(data), "--store", store, "--report", str(tmp_path / "r.json"),
             "--scorer", "exact_match", "--scorer", "steps=3")
    assert r.exit_code == 0, r
    assert "2 of 2 cases passed" in r.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert [c["case_id"] for c in report["cases"]] == ["a", "b"]
    assert set(report["extra"]["scorers"]) == {"exact_match", "step_count"}


def test_tag_selects_cases(keel: Keel, target: str, data: Path, store: str) -> None:
    r = keel("eval", target, str(data), "--store", store, "--tag", "y")
    assert r.exit_code == 0, r
    assert "1 of 1 cases passed" in r.stdout


def test_a_scorer_that_raises_is_reported_and_the_eval_goes_on(
        keel: Keel, target: str, data: Path, store: str,
        write_module: Callable[[str, str], Path]) -> None:
    module = target.rsplit(":", 1)[0]
    r = keel("eval", target, str(data), "--store", store, "--scorer", f"{module}:exploding",
             "--scorer", "exact_match")
    assert r.exit_code == 0, r  # no baseline: nothing to gate
    assert "failed b: exploding=None (RuntimeError: scorer bug on b)" in r.stdout
    assert "1 of 2 cases passed" in r.stdout


def test_malformed_dataset_names_the_line(keel: Keel, target: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "input": "x"}\n{"id": "b", "input": "y",\n', encoding="utf-8")
    r = keel("eval", target, str(bad))
    assert r.exit_code == 2, r
    assert f"{bad}:2: not valid JSON" in r.stderr


def test_oversized_line(keel: Keel, target: str, tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    big.write_text(json.dumps({"id": "a", "input": "x" * 1_100_000}) + "\n", encoding="utf-8")
    r = keel("eval", target, str(big))
    assert r.exit_code == 2, r
    assert f"{big}:1: the line is 1,100,0" in r.stderr and "at most 1,048,576" in r.stderr


@pytest.mark.parametrize(("args", "needle"), [
    (["--scorer", "exactly"], "unknown scorer 'exactly'; the built-ins are exact_match"),
    (["--scorer", "cost"], "--scorer cost needs a value: --scorer cost=X"),
    (["--scorer", "cost=-1"], "scorer 'cost': threshold must be a number >= 0"),
    (["--scorer", "steps=lots"], "--scorer steps=X takes a number, not 'lots'"),
    (["--scorer", "regex=("], "is not a valid regular expression"),
    (["--max-drop", "exact_match=-0.5"], "'exact_match' is a number >= 0"),
    (["--max-drop", "exact_match"], "--max-drop takes METRIC=X"),
    (["--max-drop", "exact_match=lots"], "is not a number"),
    (["--update-baseline"], "give --baseline too"),
    (["--tag", "nope"], "has tag(s) ['nope']"),
])
def test_bad_options_exit_2_naming_the_fix(keel: Keel, target: str, data: Path,
                                           args: list[str], needle: str) -> None:
    r = keel("eval", target, str(data), *args)
    assert r.exit_code == 2, r
    assert needle in r.stderr


def test_a_module_scorer_that_is_not_one(keel: Keel, target: str, data: Path) -> None:
    module = target.rsplit(":", 1)[0]
    r = keel("eval", target, str(data), "--scorer", f"{module}:not_a_scorer")
    assert r.exit_code == 2, r
    assert "is a int; point at a keel.evals scorer" in r.stderr


def test_missing_files(keel: Keel, target: str, data: Path, tmp_path: Path) -> None:
    r = keel("eval", target, str(tmp_path / "none.jsonl"))
    assert r.exit_code == 2 and "none.jsonl: no such file" in r.stderr, r
    r = keel("eval", target, str(data), "--baseline", str(tmp_path / "nobase.json"))
    assert r.exit_code == 2 and "nobase.json: no such report" in r.stderr, r
    r = keel("eval", "nowhere.py:agent", str(data))
    assert r.exit_code == 2 and "no such file" in r.stderr, r


def test_a_baseline_from_another_dataset_is_refused(keel: Keel, target: str, data: Path,
                                                    store: str, tmp_path: Path) -> None:
    base = tmp_path / "base.json"
    r = keel("eval", target, str(data), "--store", store, "--baseline", str(base),
             "--update-baseline")
    assert r.exit_code == 0, r
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "z", "input": "q", "expected": "Q"}) + "\n",
                     encoding="utf-8")
    r = keel("eval", target, str(other), "--store", store, "--baseline", str(base))
    assert r.exit_code == 2, r
    assert "the baseline was made on another dataset ('cases'" in r.stderr
    assert "--update-baseline" in r.stderr


def test_max_cost_reports_unrun_cases(keel: Keel, target: str, data: Path, store: str) -> None:
    r = keel("eval", target, str(data), "--store", store, "--max-cost", "0",
             "--scorer", "exact_match")
    assert r.exit_code == 0, r
    assert "EvalBudgetSpent: eval budget spent" in r.stdout
    assert "0 of 2 cases passed" in r.stdout


def test_hostile_case_ids_and_names_are_printed_inert(keel: Keel, target: str,
                                                      tmp_path: Path, store: str) -> None:
    hostile = "[bold red]x[/] \u001b[31mred"
    path = tmp_path / "[red]evil.jsonl"
    path.write_text(json.dumps({"id": hostile, "input": "q", "expected": "nope"}) + "\n",
                    encoding="utf-8")
    r = keel("eval", target, str(path), "--store", store)
    assert r.exit_code == 0, r
    assert "\u001b[31m" not in r.output  # the escape is shown, never sent to the terminal
    assert "failed [bold red]x[/] " in r.stdout  # markup shown as text, not applied
    assert "[red]evil" in r.stdout
