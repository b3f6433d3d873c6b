"""``keel compare`` and ``keel shadow report``: tables, JSON, Markdown files, and clear errors
for missing, garbage, hostile and mismatched inputs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from keel import Agent
from keel.core import Message
from keel.evals import CaseResult, Report, Score, Shadow
from keel.store import SQLiteStore
from keel.testing import FunctionModel, call
from keel.tools import tool
from tests.cli.conftest import Invoke


def write_report(path: Path, values: list[float], *, name: str = "agent",
                 dataset: str = "h1", case_name: str = "c") -> Path:
    cases = tuple(
        CaseResult(case_id=f"{case_name}{i}", input="q", output="a", status="completed",
                   scores=(Score(name="accuracy", value=v, passed=v >= 0.5),),
                   cost_usd=0.01, steps=2)
        for i, v in enumerate(values))
    report = Report(subject={"name": name}, dataset={"name": "ds", "hash": dataset},
                    cases=cases, metrics={})
    path.write_text(json.dumps(report.to_dict()), encoding="utf-8")
    return path


BASE = [0.3 + 0.4 * ((i * 37) % 11) / 10 for i in range(40)]


def test_compare_prints_a_table_json_and_markdown(keel: Invoke, tmp_path: Path) -> None:
    a = write_report(tmp_path / "a.json", BASE)
    b = write_report(tmp_path / "b.json", [v + 0.2 for v in BASE], name="v2")
    out = keel("compare", str(a), str(b), "--markdown", str(tmp_path / "ab.md"))
    assert out.exit_code == 0, out
    assert "accuracy" in out.stdout and "BETTER" in out.stdout and "40 paired" in out.stdout
    md = (tmp_path / "ab.md").read_text()
    assert md.startswith("## A/B: agent (A) vs v2 (B)") and "**better**" in md
    data = json.loads(keel("compare", str(a), str(b), "--json", "--metric", "accuracy").stdout)
    assert [m["name"] for m in data["metrics"]] == ["accuracy"]
    assert data["metrics"][0]["significant"] is True
    same = json.loads(keel("compare", str(a), str(a), "--json").stdout)
    assert not any(m["significant"] for m in same["metrics"])


def test_compare_bad_inputs_name_the_fix(keel: Invoke, tmp_path: Path) -> None:
    a = write_report(tmp_path / "a.json", BASE)
    other = write_report(tmp_path / "other.json", BASE, dataset="h2")
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\xff\xfe not json")
    not_report = tmp_path / "list.json"
    not_report.write_text("[1, 2, 3]")
    damaged = tmp_path / "damaged.json"
    damaged.write_text(json.dumps({"format": "keel.eval/1", "cases": [{"x": 1}]}))
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    hostile = tmp_path / "\x1b[31mred.json"
    for args, fix in (
            ((str(tmp_path / "missing.json"), str(a)), "cannot read report"),
            ((str(a), str(garbage)), "is not JSON"),
            ((str(a), str(not_report)), "not a keel evaluation report"),
            ((str(a), str(damaged)), "damaged"),
            ((str(a), str(deep)), "is not JSON"),
            ((str(a), str(tmp_path)), "is not a file"),
            ((str(a), str(hostile)), "cannot read report"),
            ((str(a), str(other)), "different datasets"),
            ((str(a), str(a), "--metric", "nope"), "not in both reports"),
            ((str(a), str(a), "--confidence", "2"), "confidence"),
            ((str(a), str(a), "--resamples", "5"), "resamples")):
        out = keel("compare", *args)
        assert out.exit_code == 2, (args, out)
        assert fix in out.stderr, (args, out)
        assert "\x1b" not in out.output
        assert "Traceback" not in out.output


def _fill_shadowed(url: str, n: int) -> None:
    @tool(risk="write")
    def refund(order: str) -> str:
        """Refund."""
        raise AssertionError("a shadow run executed an effect")

    def prod(messages: list[Message], tools: Any, settings: Any) -> Any:
        return "refunded"

    def cand(messages: list[Message], tools: Any, settings: Any) -> Any:
        if sum(m.role == "assistant" for m in messages) == 0:
            return call("refund", {"order": "1"})
        asked = next(m.text for m in messages if m.role == "user")
        return "refunded" if asked == "order 0" else "done"

    async def go() -> None:
        async with SQLiteStore(url[len("sqlite:///"):]) as store:
            shadow = Shadow(Agent("v2", model=FunctionModel(cand), tools=[refund]), sample=1.0)
            production = Agent("v1", model=FunctionModel(prod))
            for i in range(n):
                await shadow.run(production, f"order {i}", store=store)
            await shadow.drain()

    asyncio.run(go())


def test_shadow_report(keel: Invoke, store: str, tmp_path: Path) -> None:
    _fill_shadowed(store, 4)
    out = keel("shadow", "report", "--store", store, "--markdown", str(tmp_path / "s.md"))
    assert out.exit_code == 0, out
    assert "4 shadow run(s); 4 compared with production (exact): agreement 25.0%" in out.stdout
    assert "Would-calls (never executed): 4 (refund: 4)" in out.stdout
    assert "refund: 4" in (tmp_path / "s.md").read_text()
    data = json.loads(keel("shadow", "report", "--store", store, "--json",
                           "--compare", "fuzzy", "--since", "1h").stdout)
    assert data["shadow_runs"] == 4 and data["would_calls_total"] == 4
    later = json.loads(keel("shadow", "report", "--store", store, "--json",
                            "--since", "2999-01-01").stdout)
    assert later["shadow_runs"] == 0


def test_shadow_report_bad_input(keel: Invoke, store: str, tmp_path: Path) -> None:
    missing = keel("shadow", "report", "--store", f"sqlite:///{tmp_path / 'none.db'}")
    assert missing.exit_code == 0 and "no run store" in missing.stdout
    assert not (tmp_path / "none.db").exists()
    for args, fix in ((("--compare", "semantic"), "exact, fuzzy"),
                      (("--since", "yesterday-ish"), "not a duration"),
                      (("--since", "1h", "--until", "2h"), "not before"),
                      (("--store", "memory:"), "another keel command cannot read")):
        out = keel("shadow", "report", *args) if "--store" in args else \
            keel("shadow", "report", "--store", store, *args)
        assert out.exit_code == 2, (args, out)
        assert fix in out.stderr, (args, out)


def test_compare_output_is_scrubbed(keel: Invoke, tmp_path: Path) -> None:
    a = write_report(tmp_path / "a.json", BASE, name="\x1b[31mred\x1b[0m")
    out = keel("compare", str(a), str(a))
    assert out.exit_code == 0 and "\x1b" not in out.output
