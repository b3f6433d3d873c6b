"""Proof of issue 16 (keel eval as a CI gate): on a committed dataset of 110 cases and a
scripted agent whose answers depend on its prompt, a baseline from prompt v1; a regressed
prompt fails the gate, an improved one passes; two runs of v1 give identical reports (and
identical JUnit XML and Markdown once run ids are left out). Through the Python API and once
through `keel eval`."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel.cli import app
from keel.evals import Dataset, Gate, Report, check_gate, evaluate, load_dataset, to_junit_xml
from keel.evals import to_markdown as markdown_of
from keel.store import open_store
from tests.evals.proof_agent import agent_improved, agent_regressed, agent_v1, make_cases

DATA = Path(__file__).parent / "data" / "support_110.jsonl"
AGENTS = Path(__file__).parent / "proof_agent.py"
RUN_ID = re.compile(r"\b[0-9a-f]{28}\b")


def test_the_committed_dataset_is_the_generated_one() -> None:
    ds = load_dataset(DATA)
    assert ds.cases == Dataset.from_cases("x", make_cases()).cases
    assert len(ds) >= 100
    assert {t for c in ds.cases for t in c.tags} == {"math", "orders"}
    assert sum(bool(c.expect.tools) for c in ds.cases) == 50


async def _three(url: str) -> dict[str, Report]:
    ds = load_dataset(DATA)
    async with open_store(url) as store:
        return {name: await evaluate(agent, ds, store=store, concurrency=8)
                for name, agent in (("v1", agent_v1), ("v1 again", agent_v1),
                                    ("regressed", agent_regressed),
                                    ("improved", agent_improved))}


def test_gate_fails_a_regression_passes_an_improvement_and_reports_repeat(
        tmp_path: Path) -> None:
    reports = asyncio.run(_three(f"sqlite:///{tmp_path / 'runs.db'}"))
    baseline = reports["v1"]
    assert baseline.metrics["exact_match"] == pytest.approx(0.8818, abs=1e-4)
    gate = Gate({"exact_match": 0.02, "tool_trajectory": 0.02})

    regressed = check_gate(reports["regressed"], baseline, gate)
    assert not regressed.passed
    failed = {c.metric for c in regressed.regressions}
    assert {"exact_match", "tool_trajectory", "pass_rate"} <= failed
    assert regressed.check("exact_match").delta < -0.1  # type: ignore[union-attr, operator]

    improved = check_gate(reports["improved"], baseline, gate)
    assert improved.passed and not improved.regressions
    assert improved.check("exact_match").improved  # type: ignore[union-attr]
    assert improved.check("tool_trajectory").improved  # type: ignore[union-attr]

    again = reports["v1 again"]
    assert again.comparable() == baseline.comparable()
    assert again.cases[0].run_ids != baseline.cases[0].run_ids  # different runs, same report
    same = check_gate(again, baseline, gate)
    assert same.passed and not any(c.improved for c in same.checks
                                   if c.metric != "latency_s")
    for write in (to_junit_xml, markdown_of):
        one = RUN_ID.sub("RUN", write(baseline, same))
        two = RUN_ID.sub("RUN", write(again, same))
        assert one == two


def _keel(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout + result.stderr


def test_keel_eval_gates_in_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    base = tmp_path / "baseline.json"
    code, out = _keel("eval", f"{AGENTS}:agent_v1", str(DATA), "--store", store,
                      "--baseline", str(base), "--update-baseline")
    assert code == 0, out
    assert "baseline written" in out and "97 of 110 cases passed" in out
    assert Report.from_dict(json.loads(base.read_text()))

    junit, md = tmp_path / "junit.xml", tmp_path / "summary.md"
    code, out = _keel("eval", f"{AGENTS}:agent_regressed", str(DATA), "--store", store,
                      "--baseline", str(base), "--max-drop", "exact_match=0.02",
                      "--junit", str(junit), "--markdown", str(md))
    assert code == 1, out
    assert "GATE FAILED" in out and "exact_match" in out
    failed_run = re.search(r"keel runs show ([0-9a-f]{28})", out)
    assert failed_run is not None
    code, shown = _keel("runs", "show", failed_run.group(1), "--store", store)
    assert code == 0, shown
    assert failed_run.group(1) in shown and "support" in shown
    assert 'name="exact_match"' in junit.read_text() and "<failure" in junit.read_text()
    assert "**Gate FAILED" in md.read_text()

    code, out = _keel("eval", f"{AGENTS}:agent_improved", str(DATA), "--store", store,
                      "--baseline", str(base), "--report", str(tmp_path / "r.json"))
    assert code == 0, out
    assert "gate passed" in out
    assert "105 of 110 cases passed" in out
