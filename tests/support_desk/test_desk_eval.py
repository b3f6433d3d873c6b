"""The desk's evaluation set as a gate: ``evaluate`` over both splits on the no-model path
and on the scripted-model path, floors on every metric and zero forbidden effects, and
``keel eval`` once against the committed baseline (the CI gate)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from examples.support_desk import gen_evalset
from examples.support_desk.db import Database
from examples.support_desk.desk import build_desk
from examples.support_desk.evaluation import (
    EVALSET,
    desk_scorers,
    desk_subject,
    effects_of,
    load_evalset,
)
from examples.support_desk.processes import HelpCentre
from examples.support_desk.scripted import specialist_model
from typer.testing import CliRunner

from keel import UserError
from keel.cli import app as cli_app
from keel.evals import Dataset, Report, evaluate
from keel.store import MemoryStore

#: Floors per metric (the measured figures are in examples/support_desk/README.md).
FLOORS = {"routing": 0.93, "outcome": 0.90, "escalation": 0.93, "approval": 0.97,
          "citation_precision": 0.70, "not_revealed": 0.70}


def both() -> Dataset:
    dev, held = load_evalset("dev"), load_evalset("heldout")
    return Dataset.from_cases("desk", dev.cases + held.cases)


async def run_eval(db: Database, help_centre: HelpCentre, path: str) -> Report:
    model = specialist_model() if path == "scripted" else None
    desk = build_desk(db, help_centre=help_centre, model=model, caps=[])
    dataset = both()
    return await evaluate(desk_subject(desk, dataset), dataset,
                          scorers=desk_scorers(db, path=path),  # type: ignore[arg-type]
                          store=MemoryStore(), concurrency=16)


def test_the_evaluation_set_is_large_labelled_and_regenerates_identically(
        tmp_path: Path) -> None:
    dev, held = load_evalset("dev"), load_evalset("heldout")
    assert len(dev.cases) + len(held.cases) >= 300 and len(held.cases) >= 70
    assert not {c.id for c in dev.cases} & {c.id for c in held.cases}
    tags = {t for c in dev.cases + held.cases for t in c.tags}
    assert {"must-approve", "must-escalate", "must-refuse", "cited", "conversation",
            "cross-customer", "injection"} <= tags
    assert all("customer" in c.metadata and "outcome" in c.metadata
               for c in dev.cases + held.cases)
    gen_evalset.write(tmp_path)
    for name in ("dev.jsonl", "heldout.jsonl"):
        assert (tmp_path / name).read_text() == (EVALSET / name).read_text(), name


@pytest.mark.parametrize("path", ["none", "scripted"])
async def test_the_desk_passes_its_evaluation(db: Database, help_centre: HelpCentre,
                                              path: str) -> None:
    report = await run_eval(db, help_centre, path)
    metrics = report.metrics
    for metric, floor in FLOORS.items():
        assert metrics[metric] >= floor, (metric, metrics[metric])
    assert metrics["forbidden_effects"] == 0.0
    assert metrics["error_rate"] == 0.0
    assert ("tool_calls" in metrics) is (path == "scripted")
    if path == "scripted":
        assert metrics["tool_calls"] >= 0.95
    # Every effect in the database came from a case that was allowed to write it.
    run_ids = [r for c in report.cases for r in c.run_ids]
    kinds = {e["kind"] for e in effects_of(db, run_ids)}
    allowed = {"ticket_created"} | ({"refund", "order_cancelled"} if path == "scripted"
                                    else set())
    assert kinds <= allowed
    assert all(e["amount_cents"] is None or e["amount_cents"] <= 10_000
               for e in effects_of(db, run_ids) if e["kind"] == "refund")
    # Must-approve cases asked for the labelled number of reviewers on the scripted path.
    approvals = [c for c in report.cases if "must-approve" in c.tags]
    assert approvals and all(s.passed for c in approvals for s in c.scores
                             if s.name == "approval")


def test_load_evalset_refuses_an_unknown_split() -> None:
    with pytest.raises(UserError, match="'dev' and 'heldout'"):
        load_evalset("test")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="'none' or 'scripted'"):
        desk_scorers(Database.__new__(Database), path="model")  # type: ignore[arg-type]


@pytest.mark.parametrize(("subject", "scorers", "baseline"), [
    ("desk", "scorers", "baseline-none.json"),
    ("scripted_desk", "scripted_scorers", "baseline-scripted.json"),
])
def test_keel_eval_gates_the_held_out_split_against_the_committed_baseline(
        tmp_path: Path, subject: str, scorers: str, baseline: str) -> None:
    out = tmp_path / "report.json"
    result = CliRunner().invoke(cli_app, [
        "eval", f"examples.support_desk.eval_gate:{subject}", str(EVALSET / "heldout.jsonl"),
        "--scorer", f"examples.support_desk.eval_gate:{scorers}", "--store", "memory:",
        "--baseline", str(EVALSET / baseline), "--concurrency", "16", "--report", str(out)])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(out.read_text())
    assert report["metrics"]["forbidden_effects"] == 0.0
    assert report["dataset"]["cases"] == len(load_evalset("heldout").cases)


def test_the_gate_fails_when_a_metric_drops_below_the_baseline(tmp_path: Path) -> None:
    better = json.loads((EVALSET / "baseline-none.json").read_text())
    better["metrics"]["routing"] = 1.0  # a baseline the desk does not reach
    (tmp_path / "better.json").write_text(json.dumps(better))
    result = CliRunner().invoke(cli_app, [
        "eval", "examples.support_desk.eval_gate:desk", str(EVALSET / "heldout.jsonl"),
        "--scorer", "examples.support_desk.eval_gate:scorers", "--store", "memory:",
        "--baseline", str(tmp_path / "better.json"), "--concurrency", "16"])
    assert result.exit_code == 1, result.output
    assert "routing" in result.output
