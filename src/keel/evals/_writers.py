"""Reports as files: the JSON baseline, JUnit XML for CI test views, a Markdown summary."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from keel.evals._errors import EvalError
from keel.evals._gate import GateResult, MetricCheck
from keel.evals._results import CaseResult, Report

#: The largest report file read (bytes).
MAX_REPORT_BYTES = 256 * 1024 * 1024


def save_report(report: Report, path: str | os.PathLike[str]) -> Path:
    """Write ``report`` as JSON (the baseline format) to ``path``."""
    target = Path(path)
    target.write_text(json.dumps(report.to_dict(), indent=1, sort_keys=True,
                                 ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return target


def load_report(path: str | os.PathLike[str]) -> Report:
    """Read a report written by :func:`save_report` (or ``keel eval --report``); a missing,
    oversized or damaged file is an :class:`EvalError` naming it."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_REPORT_BYTES:
            raise EvalError(f"{p}: the report is over {MAX_REPORT_BYTES:,} bytes; is it a "
                            f"keel evaluation report?")
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalError(f"{p}: no such report; make one with `keel eval ... --report {p}` "
                        f"(or --update-baseline)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise EvalError(f"{p}: not a readable JSON report ({type(exc).__name__}: {exc}); "
                        f"make it again with `keel eval ... --report FILE`") from None
    try:
        return Report.from_dict(raw)
    except EvalError as exc:
        raise EvalError(f"{p}: {exc.message}") from None


def _num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"


def _failure_text(case: CaseResult) -> str:
    lines = []
    if case.error:
        lines.append(f"error: {case.error.get('type')}: {case.error.get('message')}")
    for s in case.scores:
        if not s.passed:
            why = s.error or s.detail or ""
            lines.append(f"{s.name}: {_num(s.value)} (threshold {_num(s.threshold)})"
                         + (f": {why}" if why else ""))
    return "\n".join(lines)


def to_junit_xml(report: Report, gate: GateResult | None = None) -> str:
    """JUnit XML: one testcase per case (failed with each failed score), and with a gate
    result one testcase per gated metric (failed when it regressed)."""
    suites = ET.Element("testsuites", name=f"keel eval {report.subject.get('name')}")
    cases = ET.SubElement(suites, "testsuite", name=f"cases: {report.dataset.get('name')}",
                          tests=str(len(report.cases)),
                          failures=str(sum(not c.passed for c in report.cases)))
    for c in report.cases:
        tc = ET.SubElement(cases, "testcase", classname=str(report.dataset.get("name")),
                           name=c.case_id)
        if not c.passed:
            text = _failure_text(c)
            ET.SubElement(tc, "failure", message=text.splitlines()[0][:500] if text else
                          "failed").text = text
    if gate is not None:
        gated = [m for m in gate.checks if m.allowed is not None]
        metrics = ET.SubElement(suites, "testsuite", name="gate", tests=str(len(gated)),
                                failures=str(sum(m.regressed for m in gated)))
        for m in gated:
            tc = ET.SubElement(metrics, "testcase", classname="gate", name=m.metric)
            if m.regressed:
                ET.SubElement(tc, "failure", message=_check_line(m)).text = _check_line(m)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") \
        + "\n"


def _check_line(m: MetricCheck) -> str:
    direction = "lower is better" if m.lower_is_better else "higher is better"
    return (f"{m.metric}: {_num(m.baseline)} -> {_num(m.current)} (delta {_num(m.delta)}, "
            f"allowed drop {_num(m.allowed)}, {direction})" + (f"; {m.note}" if m.note else ""))


def _cell(value: Any) -> str:
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text[:120] + "…" if len(text) > 120 else text


def to_markdown(report: Report, gate: GateResult | None = None, *,
                max_failures: int = 50) -> str:
    """A Markdown summary: the verdict, the metrics (with the baseline and the delta when
    gated) and the failed cases with their run ids."""
    passed = sum(c.passed for c in report.cases)
    lines = [f"## keel eval: {report.subject.get('name')} on {report.dataset.get('name')}", ""]
    if gate is not None:
        verdict = "passed" if gate.passed else \
            f"FAILED ({len(gate.regressions)} metric(s) regressed)"
        lines += [f"**Gate {verdict}** against the baseline of "
                  f"{gate.baseline.get('subject', {}).get('name')}.", ""]
    lines += [f"{passed} of {len(report.cases)} cases passed.", ""]
    if gate is not None:
        lines += ["| metric | baseline | current | delta | allowed drop | verdict |",
                  "|---|---|---|---|---|---|"]
        for m in gate.checks:
            if m.metric == "latency_s":
                continue
            verdict = "not gated" if m.allowed is None else "regressed" if m.regressed \
                else "improved" if m.improved else "ok"
            lines.append(f"| {m.metric} | {_num(m.baseline)} | {_num(m.current)} | "
                         f"{_num(m.delta)} | {_num(m.allowed)} | {verdict} |")
    else:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_num(v)} |" for k, v in sorted(report.metrics.items())
                  if k != "latency_s"]
    failed = [c for c in report.cases if not c.passed]
    if failed:
        lines += ["", "### Failed cases", "", "| case | failed | run |", "|---|---|---|"]
        for c in failed[:max_failures]:
            why = "; ".join(_failure_text(c).splitlines())
            run = c.run_ids[0] if c.run_ids else "-"
            lines.append(f"| {_cell(c.case_id)} | {_cell(why)} | `{run}` |")
        if len(failed) > max_failures:
            lines.append(f"| … and {len(failed) - max_failures} more | | |")
    return "\n".join(lines) + "\n"
