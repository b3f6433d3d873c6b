"""A/B: compare() on hand-built reports, with paired bootstrap intervals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from keel.evals import CaseResult, Comparison, EvalError, Report, Score, compare


def report(values: list[float], *, name: str = "agent", dataset: str = "h1",
           cost: float = 0.01, steps: int = 3, ids: list[str] | None = None,
           threshold: float = 0.5) -> Report:
    ids = ids or [f"c{i}" for i in range(len(values))]
    cases = tuple(
        CaseResult(case_id=cid, input=f"q{cid}", output="x", status="completed",
                   scores=(Score(name="accuracy", value=v, passed=v >= threshold,
                                 threshold=threshold),),
                   cost_usd=cost, latency_s=1.0, steps=steps)
        for cid, v in zip(ids, values, strict=True))
    return Report(subject={"name": name, "version": "1"},
                  dataset={"name": "support", "hash": dataset, "cases": len(cases)},
                  cases=cases, metrics={})


def base_values(n: int = 60) -> list[float]:
    return [0.3 + 0.4 * ((i * 37) % 11) / 10 for i in range(n)]


def test_a_real_improvement_is_significant_and_labelled() -> None:
    a = report(base_values())
    b = report([min(1.0, v + 0.2) for v in base_values()], name="agent-v2", cost=0.02)
    cmp = compare(a, b)
    acc = cmp.metric("accuracy")
    assert acc.n == 60 and acc.diff is not None and acc.diff > 0.15
    assert acc.significant and acc.verdict == "better"
    assert acc.ci_low is not None and acc.ci_low > 0
    cost = cmp.metric("cost_usd")
    assert cost.significant and cost.verdict == "worse" and cost.lower_is_better
    assert cmp.metric("steps").verdict == "no change"
    assert {m.name for m in cmp.significant} >= {"accuracy", "cost_usd", "pass_rate"}


def test_identical_reports_show_no_change() -> None:
    a, b = report(base_values()), report(base_values(), name="same")
    cmp = compare(a, b)
    for m in cmp.metrics:
        assert not m.significant and m.verdict == "no change", m
    assert cmp.metric("accuracy").ci_low == cmp.metric("accuracy").ci_high == 0.0


def test_noise_around_zero_is_not_significant() -> None:
    values = base_values()
    b = report([v + (0.1 if i % 2 else -0.1) for i, v in enumerate(values)])
    acc = compare(report(values), b).metric("accuracy")
    assert acc.ci_low is not None and acc.ci_high is not None
    assert acc.ci_low < 0 < acc.ci_high and not acc.significant


def test_seeded_and_deterministic() -> None:
    a = report(base_values())
    b = report([v + (0.05 if i % 3 else -0.02) for i, v in enumerate(base_values())])
    assert compare(a, b, seed=7) == compare(a, b, seed=7)
    assert compare(a, b, seed=7).to_dict() == compare(a, b, seed=7).to_dict()


def test_cases_in_one_report_only_are_counted_and_left_out() -> None:
    a = report([0.5, 0.6, 0.7, 0.8], ids=["x", "y", "z", "w"])
    b = report([0.5, 0.6, 0.9], ids=["y", "z", "new"])
    cmp = compare(a, b)
    assert cmp.paired == 2 and cmp.only_a == ("x", "w") and cmp.only_b == ("new",)
    assert cmp.metric("accuracy").n == 2
    md = cmp.to_markdown()
    assert "2 case(s) only in A" in md and "1 only in B" in md


def test_markdown_and_dict() -> None:
    cmp = compare(report(base_values()), report([v + 0.2 for v in base_values()], name="v2"))
    md = cmp.to_markdown()
    assert md.startswith("## A/B: agent@1 (A) vs v2@1 (B)")
    assert "| accuracy | 60 |" in md and "**better**" in md
    data = json.loads(json.dumps(cmp.to_dict()))
    assert data["paired"] == 60 and data["metrics"][0]["name"] == "accuracy"
    assert isinstance(cmp, Comparison)


def test_metrics_filter_and_errored_scores() -> None:
    a = report(base_values(10))
    cases = list(a.cases)
    cases[0] = CaseResult(**{**{f: getattr(cases[0], f) for f in CaseResult.__slots__},
                             "scores": (Score(name="accuracy", value=None, passed=False,
                                              error="boom"),)})
    b = Report(subject=a.subject, dataset=a.dataset, cases=tuple(cases), metrics={})
    cmp = compare(a, b, metrics=["accuracy"])
    assert [m.name for m in cmp.metrics] == ["accuracy"]
    assert cmp.metric("accuracy").n == 9  # the errored score is left out
    single = compare(report([0.5]), report([0.9]))
    assert single.metric("accuracy").verdict == "too few cases"


def test_different_datasets_are_refused_naming_both() -> None:
    with pytest.raises(EvalError, match=r"A is support \(hash h1\), B is support \(hash h2\)"):
        compare(report([0.5, 0.6]), report([0.5, 0.6], dataset="h2"))


@pytest.mark.parametrize(("kwargs", "fix"), [
    ({"resamples": 10}, "from 100"), ({"resamples": True}, "from 100"),
    ({"confidence": 1.0}, "up to"), ({"confidence": float("nan")}, "up to"),
    ({"seed": -1}, ">= 0"), ({"metrics": ["nope"]}, "not in both reports"),
    ({"metrics": "accuracy"}, "list of metric names"),
    ({"lower_is_better": [3]}, "metric names"),
])
def test_bad_settings_name_the_fix(kwargs: dict[str, Any], fix: str) -> None:
    with pytest.raises(EvalError, match=fix):
        compare(report([0.5, 0.6]), report([0.5, 0.7]), **kwargs)


def test_bad_reports_are_refused() -> None:
    with pytest.raises(EvalError, match="two evaluation Reports"):
        compare({"format": "x"}, report([0.5]))  # type: ignore[arg-type]
    twice = report([0.5, 0.6], ids=["x", "x"])
    with pytest.raises(EvalError, match="case 'x' twice"):
        compare(twice, report([0.5, 0.6]))


def test_large_reports_stay_bounded() -> None:
    n = 5000
    a = report([(i % 10) / 10 for i in range(n)])
    b = report([((i + 1) % 10) / 10 for i in range(n)])
    acc = compare(a, b, resamples=500).metric("accuracy")
    assert acc.n == n and acc.ci_low is not None


def test_hostile_names_cannot_break_the_markdown() -> None:
    a = report(base_values(6), name="a|b\n# injected", ids=[f"x|{i}\n" for i in range(6)])
    b = report(base_values(6), ids=[f"y{i}" for i in range(6)])
    md = compare(a, b).to_markdown()
    assert "\n# injected" not in md and "a\\|b" in md
    assert "x\\|0" in md  # cases only in A are named, escaped


def test_case_weights_weight_the_means_and_bad_weights_are_refused() -> None:
    def weighted(values: list[float], weights: list[float]) -> Report:
        base = report(values)
        cases = tuple(CaseResult(**{**{f: getattr(c, f) for f in CaseResult.__slots__},
                                    "weight": w}) for c, w in zip(base.cases, weights,
                                                                   strict=True))
        return Report(subject=base.subject, dataset=base.dataset, cases=cases, metrics={})

    # the heavy case improved, the light ones did not
    a = weighted([0.5, 0.5, 0.5, 0.5], [10.0, 1.0, 1.0, 1.0])
    b = weighted([0.9, 0.5, 0.5, 0.5], [10.0, 1.0, 1.0, 1.0])
    acc = compare(a, b).metric("accuracy")
    assert acc.diff == pytest.approx(0.4 * 10 / 13)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(EvalError, match="positive number"):
            compare(weighted([0.5, 0.6], [1.0, bad]), report([0.5, 0.6]))
