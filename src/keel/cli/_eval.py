"""``keel eval TARGET DATASET``: run an agent or flow over a dataset, score it, compare it
with a baseline report and exit non-zero when a metric regressed (a CI gate).

Exit codes: 0 the gate passed (or there was no baseline to compare with), 1 the gate failed
(a metric regressed beyond its allowed drop), 2 bad input (a malformed dataset, a missing
file, a bad threshold, a baseline from another dataset, an unknown scorer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from keel.cli._errors import EXIT_RUN_FAILED, CliError, reported
from keel.cli._load import is_path, load_agent, load_file, load_module, split_target
from keel.cli._options import StoreOption, store_url
from keel.cli._text import Screen, one_line, safe
from keel.evals import (
    Dataset,
    Gate,
    GateResult,
    Report,
    Scorer,
    behaviour,
    check_gate,
    contains,
    cost,
    evaluate,
    exact_match,
    fuzzy_match,
    json_schema,
    latency,
    load_dataset,
    load_report,
    regex,
    save_report,
    scorer,
    steps,
    to_junit_xml,
    to_markdown,
    tool_trajectory,
)
from keel.store import open_store

_PLAIN: dict[str, Callable[[], Scorer]] = {
    "exact_match": exact_match, "fuzzy_match": fuzzy_match, "contains": contains,
    "tool_trajectory": tool_trajectory, "behaviour": behaviour, "json_schema": json_schema}
_WITH_VALUE: dict[str, Callable[[str], Scorer]] = {"cost": lambda v: cost(_number("cost", v)),
               "latency": lambda v: latency(_number("latency", v)),
               "steps": lambda v: steps(_number("steps", v)),
               "regex": regex}
SCORER_NAMES = (*_PLAIN, *(f"{n}=X" for n in _WITH_VALUE))
_MAX_FAILED_SHOWN = 20


def _number(what: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise CliError(f"--scorer {what}=X takes a number, not {value!r}") from None


def scorer_from(spec: str) -> list[Scorer]:
    """The scorer(s) ``--scorer`` names: a built-in (``exact_match``, ``cost=0.01``) or
    ``module:attr`` (a scorer, a list of scorers, or a function made into one)."""
    name, sep, value = spec.partition("=")
    if not sep and name in _PLAIN:
        return [_PLAIN[name]()]
    if sep and name in _WITH_VALUE:
        return [_WITH_VALUE[name](value)]
    if ":" in spec and not sep:
        return _imported(spec)
    if name in _WITH_VALUE:
        raise CliError(f"--scorer {name} needs a value: --scorer {name}=X")
    raise CliError(f"unknown scorer {spec!r}; the built-ins are {', '.join(SCORER_NAMES)}, "
                   f"or give MODULE:ATTR of your own (a keel.evals scorer or a function "
                   f"fn(case, observed))")


def _imported(spec: str) -> list[Scorer]:
    module_ref, attr = split_target(spec)
    module = load_file(Path(module_ref).expanduser().resolve()) if is_path(module_ref) \
        else load_module(module_ref)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CliError(f"--scorer {spec}: {module_ref} has no attribute {attr!r}")
        obj = getattr(obj, part)
    items = list(obj) if isinstance(obj, list | tuple) else [obj]
    out: list[Scorer] = []
    for item in items:
        if isinstance(item, Scorer):
            out.append(item)
        elif callable(item):
            out.append(scorer(item))
        else:
            raise CliError(f"--scorer {spec} is a {type(item).__name__}; point at a keel.evals "
                           f"scorer, a list of them, or a function fn(case, observed)")
    return out


def gate_from(max_drops: list[str]) -> Gate:
    """A :class:`Gate` from ``--max-drop METRIC=X`` options."""
    thresholds: dict[str, float] = {}
    for item in max_drops:
        metric, sep, value = item.partition("=")
        if not sep or not metric.strip():
            raise CliError(f"--max-drop takes METRIC=X (e.g. exact_match=0.02), not {item!r}")
        try:
            thresholds[metric.strip()] = float(value)
        except ValueError:
            raise CliError(f"--max-drop {metric}: {value!r} is not a number") from None
    return Gate(thresholds=thresholds)


def _load(dataset_path: str, tags: list[str]) -> Dataset:
    dataset = load_dataset(dataset_path)
    return dataset.select(tags=tags) if tags else dataset


def _baseline(path: str | None, update: bool) -> Report | None:
    if path is None:
        if update:
            raise CliError("--update-baseline writes the --baseline FILE; give --baseline too")
        return None
    if update:
        return None
    return load_report(path)


async def _evaluate(subject: Any, dataset: Dataset, scorers: list[Scorer] | None, url: str,
                    concurrency: int, max_cost: float | None, screen: Screen) -> Report:
    columns = (TextColumn("eval"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[last]}"))
    with Progress(*columns, console=screen.err, transient=True) as bar:
        task = bar.add_task("cases", total=len(dataset.cases), last="")

        def progress(done: int, total: int, result: Any) -> None:
            mark = "ok" if result.passed else "FAIL"
            bar.update(task, completed=done, last=f"{one_line(result.case_id, 40)} {mark}")

        async with open_store(url) as store:
            return await evaluate(subject, dataset, scorers=scorers, store=store,
                                  concurrency=concurrency, max_cost_usd=max_cost,
                                  progress=progress)


def _table(report: Report, gate: GateResult | None) -> Table:
    table = Table(title=safe(f"keel eval · {report.subject.get('name')} on "
                             f"{report.dataset.get('name')} ({len(report.cases)} cases)"))
    table.add_column("metric")
    if gate is not None:
        table.add_column("baseline", justify="right")
    table.add_column("value", justify="right")
    if gate is not None:
        table.add_column("delta", justify="right")
        table.add_column("verdict")
    for metric, value in sorted(report.metrics.items()):
        if gate is None:
            table.add_row(metric, f"{value:.4g}")
            continue
        check = gate.check(metric)
        if check is None:
            continue
        verdict = ("not gated" if check.allowed is None else "[red]regressed[/]"
                   if check.regressed else "[green]improved[/]" if check.improved else "ok")
        table.add_row(metric, "-" if check.baseline is None else f"{check.baseline:.4g}",
                      f"{value:.4g}", "-" if check.delta is None else f"{check.delta:+.4g}",
                      verdict)
    return table


def _show(screen: Screen, report: Report, gate: GateResult | None) -> None:
    screen.out.print(_table(report, gate))
    failed = [c for c in report.cases if not c.passed]
    for c in failed[:_MAX_FAILED_SHOWN]:
        why = "; ".join(f"{s.name}={s.value if s.value is None else round(s.value, 3)}"
                        + (f" ({s.error})" if s.error else "")
                        for s in c.scores if not s.passed)
        if c.error:
            why = f"{c.error.get('type')}: {c.error.get('message')}" + (f"; {why}" if why else "")
        runs = " ".join(c.run_ids) or "-"
        screen.line(safe(f"failed {c.case_id}: {why} · run {runs}", "yellow"))
    if len(failed) > _MAX_FAILED_SHOWN:
        screen.line(safe(f"... and {len(failed) - _MAX_FAILED_SHOWN} more failed cases "
                         f"(--report FILE lists them all)", "yellow"))
    if failed:
        screen.line(safe(f"open a run: keel runs show {failed[0].run_ids[0]}", "dim")
                    if failed[0].run_ids else safe("", "dim"))
    passed = sum(c.passed for c in report.cases)
    screen.line(safe(f"{passed} of {len(report.cases)} cases passed"
                     + ("" if gate is None else " · gate passed" if gate.passed
                        else f" · GATE FAILED: {', '.join(m.metric for m in gate.regressions)}"
                        f" regressed"), "bold"))


def _write(path: str | None, text: str) -> None:
    if path:
        try:
            Path(path).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None


def eval_command(screen: Screen, *, target: str, dataset_path: str, store: str,
                 scorer_specs: list[str], baseline_path: str | None, report_path: str | None,
                 update_baseline: bool, junit: str | None, markdown: str | None,
                 concurrency: int, max_cost: float | None, max_drops: list[str],
                 tags: list[str]) -> None:
    """Everything ``keel eval`` does; the gate's failure is exit code 1."""
    with reported(screen):
        gate = gate_from(max_drops)
        dataset = _load(dataset_path, tags)
        baseline = _baseline(baseline_path, update_baseline)
        if baseline is not None and baseline.dataset.get("hash") != dataset.hash:
            check_gate(_empty(dataset), baseline, gate)  # raises, naming both datasets
        scorers = [s for spec in scorer_specs for s in scorer_from(spec)] or None
        subject, _ = load_agent(target)
        report = asyncio.run(_evaluate(subject, dataset, scorers, store, concurrency,
                                       max_cost, screen))
        result = check_gate(report, baseline, gate) if baseline is not None else None
        if report_path:
            save_report(report, report_path)
        if update_baseline and baseline_path:
            save_report(report, baseline_path)
            screen.note(f"baseline written: {baseline_path}", style="green")
        _write(junit, to_junit_xml(report, result))
        _write(markdown, to_markdown(report, result))
        _show(screen, report, result)
    if result is not None and not result.passed:
        raise typer.Exit(EXIT_RUN_FAILED)


def _empty(dataset: Dataset) -> Report:
    return Report(subject={"name": "-"}, dataset={"name": dataset.name, "hash": dataset.hash,
                                                  "cases": len(dataset.cases)},
                  cases=(), metrics={})


def register(app: typer.Typer) -> None:
    """Add ``keel eval`` to ``app``."""

    @app.command("eval")
    def eval_(
        ctx: typer.Context,
        target: Annotated[str, typer.Argument(
            metavar="MODULE:AGENT", help="The agent or flow: a .py file or a dotted module, a "
                                         "colon, and its name, e.g. app/agents.py:support.")],
        dataset: Annotated[str, typer.Argument(
            metavar="DATASET", help="The dataset: a .jsonl file (one case per line) or a "
                                    ".yaml list of cases.")],
        scorer_specs: Annotated[list[str] | None, typer.Option(
            "--scorer", metavar="NAME",
            help="A scorer (repeatable): exact_match, fuzzy_match, contains, tool_trajectory, "
                 "behaviour, json_schema, cost=USD, latency=S, steps=N, regex=PATTERN, or "
                 "MODULE:ATTR of your own. Default: chosen from what each case declares.")
        ] = None,
        baseline: Annotated[str | None, typer.Option(
            "--baseline", metavar="FILE", help="A baseline report to gate against.")] = None,
        report: Annotated[str | None, typer.Option(
            "--report", metavar="FILE", help="Write the report (JSON) here.")] = None,
        update_baseline: Annotated[bool, typer.Option(
            "--update-baseline", help="Write this report as the --baseline FILE (no gate).")
        ] = False,
        junit: Annotated[str | None, typer.Option(
            "--junit", metavar="FILE", help="Write JUnit XML here.")] = None,
        markdown: Annotated[str | None, typer.Option(
            "--markdown", metavar="FILE", help="Write a Markdown summary here.")] = None,
        concurrency: Annotated[int, typer.Option(
            "--concurrency", min=1, max=1000, help="Cases run at once.")] = 8,
        max_cost: Annotated[float | None, typer.Option(
            "--max-cost", metavar="USD", min=0.0,
            help="Stop starting cases once the runs cost this much.")] = None,
        max_drop: Annotated[list[str] | None, typer.Option(
            "--max-drop", metavar="METRIC=X",
            help="How much METRIC may drop below the baseline (repeatable; default 0 for "
                 "quality metrics; cost_usd, steps and latency are gated only when named).")
        ] = None,
        store: StoreOption = None,
        tag: Annotated[list[str] | None, typer.Option(
            "--tag", metavar="T", help="Only the cases with this tag (repeatable: any of).")
        ] = None,
    ) -> None:
        """Evaluate an agent on a dataset and gate it against a baseline report.

        Each case is an ordinary run (see it with `keel runs show RUN_ID`). Exits 1 when a
        metric regressed beyond its allowed drop, 2 on bad input."""
        eval_command(Screen(), target=target, dataset_path=dataset,
                     store=store_url(ctx, store), scorer_specs=scorer_specs or [],
                     baseline_path=baseline, report_path=report,
                     update_baseline=update_baseline, junit=junit, markdown=markdown,
                     concurrency=concurrency, max_cost=max_cost, max_drops=max_drop or [],
                     tags=tag or [])

