"""The regression gate and the report files: deltas in each metric's direction, what is
gated by default, a baseline from another dataset, JUnit XML and Markdown, damaged files."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from keel.evals import (
    CaseResult,
    EvalError,
    Gate,
    Report,
    Score,
    check_gate,
    load_report,
    save_report,
    to_junit_xml,
    to_markdown,
)

SCORERS = {"exact_match": {"threshold": 1.0, "higher_is_better": True},
           "cost": {"threshold": 0.1, "higher_is_better": False}}


def report(**metrics: float) -> Report:
    base = {"exact_match": 0.9, "exact_match.pass_rate": 0.9, "cost": 0.01,
            "cost.pass_rate": 1.0, "pass_rate": 0.9, "error_rate": 0.0, "cost_usd": 1.0,
            "steps": 2.0, "latency_s": 0.5}
    cases = (
        CaseResult(case_id="ok", input="q1", output="a", status="completed",
                   scores=(Score(name="exact_match", value=1.0, passed=True, threshold=1.0),),
                   run_ids=("run-ok",)),
        CaseResult(case_id="bad <&>", input="q2", output="b", status="completed",
                   scores=(Score(name="exact_match", value=0.0, passed=False, threshold=1.0,
                                 detail="got 'b'"),), run_ids=("run-bad",)),
        CaseResult(case_id="err", input="q3", output=None, status="failed",
                   scores=(Score(name="exact_match", value=None, passed=False,
                                 threshold=1.0, error="ValueError: boom"),),
                   run_ids=("run-err",), error={"type": "ModelError", "message": "down"}),
    )
    return Report(subject={"name": "support", "version": None},
                  dataset={"name": "d", "hash": "h1", "cases": 3}, cases=cases,
                  metrics={**base, **metrics}, extra={"scorers": SCORERS})


def test_a_drop_beyond_the_allowed_one_regresses() -> None:
    baseline = report()
    result = check_gate(report(exact_match=0.85), baseline, Gate({"exact_match": 0.02}))
    check = result.check("exact_match")
    assert check is not None and check.regressed and not result.passed
    assert check.delta == pytest.approx(-0.05) and check.allowed == 0.02
    assert [c.metric for c in result.regressions] == ["exact_match"]
    within = check_gate(report(exact_match=0.89), baseline, Gate({"exact_match": 0.02}))
    assert within.passed and not within.check("exact_match").regressed  # type: ignore[union-attr]


def test_default_gate_allows_no_quality_drop_and_leaves_measures_ungated() -> None:
    baseline = report()
    assert not check_gate(report(pass_rate=0.8999), baseline).passed
    worse_measures = report(cost_usd=9.0, steps=7.0, latency_s=30.0, cost=0.5)
    result = check_gate(worse_measures, baseline)
    assert result.passed
    for metric in ("cost_usd", "steps", "latency_s", "cost"):
        check = result.check(metric)
        assert check is not None and check.allowed is None and check.lower_is_better
    gated = check_gate(worse_measures, baseline, Gate({"cost_usd": 1.0, "cost": 1.0}))
    assert [c.metric for c in gated.regressions] == ["cost_usd"]


def test_lower_is_better_metrics_regress_upwards_and_improve_downwards() -> None:
    baseline = report(error_rate=0.1)
    assert not check_gate(report(error_rate=0.2), baseline).passed
    better = check_gate(report(error_rate=0.0, exact_match=0.95), baseline)
    assert better.passed
    assert better.check("error_rate").improved  # type: ignore[union-attr]
    assert better.check("exact_match").improved  # type: ignore[union-attr]


def test_a_missing_metric_regresses_and_a_new_one_does_not() -> None:
    baseline = report()
    current = replace(report(), metrics={k: v for k, v in report().metrics.items()
                                         if not k.startswith("exact_match")} | {"new": 1.0})
    result = check_gate(current, baseline)
    missing = result.check("exact_match")
    assert missing is not None and missing.regressed and "missing" in (missing.note or "")
    assert not result.check("new").regressed  # type: ignore[union-attr]


def test_a_baseline_from_another_dataset_is_refused_naming_both() -> None:
    other = replace(report(), dataset={"name": "old-set", "hash": "ffff0000", "cases": 3})
    with pytest.raises(EvalError) as info:
        check_gate(report(), other)
    text = str(info.value)
    assert "'old-set', hash ffff0000" in text and "'d', hash h1" in text
    assert "--update-baseline" in text


@pytest.mark.parametrize(("thresholds", "default", "needle"), [
    ({"exact_match": -0.1}, 0.0, "'exact_match' is a number >= 0"),
    ({"exact_match": float("nan")}, 0.0, "is a number >= 0"),
    ({"exact_match": "0.1"}, 0.0, "is a number >= 0"),
    ({}, -1, "'default_max_drop' is a number >= 0"),
    ({"": 0.1}, 0.0, "a gate metric is a name"),
])
def test_bad_gate_thresholds(thresholds: dict[str, Any], default: float, needle: str) -> None:
    with pytest.raises(EvalError, match=needle):
        Gate(thresholds, default)


def test_a_gate_naming_an_unknown_metric_lists_the_metrics() -> None:
    with pytest.raises(EvalError, match=r"metric\(s\) \['exact'\] that neither report has"):
        check_gate(report(), report(), Gate({"exact": 0.1}))


def test_junit_xml_has_a_testcase_per_case_and_per_gated_metric() -> None:
    result = check_gate(report(exact_match=0.5), report(), Gate({"exact_match": 0.1}))
    root = ET.fromstring(to_junit_xml(report(exact_match=0.5), result))
    cases, gate = root.findall("testsuite")
    assert cases.get("tests") == "3" and cases.get("failures") == "2"
    names = [tc.get("name") for tc in cases.findall("testcase")]
    assert names == ["ok", "bad <&>", "err"]  # escaped and read back
    failure = cases.findall("testcase")[2].find("failure")
    assert failure is not None and "error: ModelError: down" in (failure.text or "")
    assert "exact_match: - (threshold 1): ValueError: boom" in (failure.text or "")
    gated = {tc.get("name"): tc.find("failure") for tc in gate.findall("testcase")}
    assert "cost_usd" not in gated  # not gated, not a test
    assert gated["exact_match"] is not None and gated["pass_rate"] is None
    assert "exact_match: 0.9 -> 0.5" in (gated["exact_match"].text or "")


def test_markdown_summary() -> None:
    result = check_gate(report(exact_match=0.5), report(), Gate({"exact_match": 0.1}))
    text = to_markdown(report(exact_match=0.5), result)
    assert "**Gate FAILED (1 metric(s) regressed)**" in text
    assert "| exact_match | 0.9 | 0.5 | -0.4 | 0.1 | regressed |" in text
    assert "| cost_usd | 1 | 1 | 0 | - | not gated |" in text
    assert "| bad <&> | exact_match: 0 (threshold 1): got 'b' | `run-bad` |" in text
    assert "latency_s" not in text  # wall time would make the summary differ between runs
    plain = to_markdown(report())
    assert "Gate" not in plain and "| exact_match | 0.9 |" in plain


def test_reports_round_trip_and_bad_files_name_the_fix(tmp_path: Path) -> None:
    path = save_report(report(), tmp_path / "base.json")
    assert load_report(path) == report()
    with pytest.raises(EvalError, match=r"missing\.json: no such report"):
        load_report(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "keel.eval/1", "cases": [', encoding="utf-8")
    with pytest.raises(EvalError, match=r"broken\.json: not a readable JSON report"):
        load_report(broken)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}), encoding="utf-8")
    with pytest.raises(EvalError, match=r"other\.json: not a keel evaluation report"):
        load_report(other)
    damaged = tmp_path / "damaged.json"
    damaged.write_text(json.dumps({"format": "keel.eval/1", "cases": [{"x": 1}]}),
                       encoding="utf-8")
    with pytest.raises(EvalError, match="is damaged"):
        load_report(damaged)
