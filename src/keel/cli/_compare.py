"""``keel compare REPORT_A REPORT_B`` (A/B of two evaluation reports, with paired bootstrap
intervals) and ``keel shadow report`` (how shadow runs compared with production, read from
the run store). Both are read-only."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from keel.cli._audit import parse_since
from keel.cli._commands import open_existing
from keel.cli._errors import CliError, reported
from keel.cli._options import JsonOption, StoreOption, store_url
from keel.cli._text import SHORT, Screen, safe, to_json
from keel.evals import Comparison, Report, ShadowReport, compare, shadow_report

#: The largest report file ``keel compare`` reads.
MAX_REPORT_BYTES = 200 * 1024 * 1024

MarkdownOption = Annotated[Path | None, typer.Option(
    "--markdown", metavar="FILE", help="Also write the summary as Markdown to FILE.")]


def read_report(path: Path) -> Report:
    """The evaluation report in the JSON file ``path``, or a CliError naming the file and
    the fix."""
    shown = safe(str(path), limit=SHORT)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CliError(f"cannot read report {shown}: {exc.strerror or exc}; give the file "
                       "`keel eval ... --report FILE` wrote") from None
    if not path.is_file():
        raise CliError(f"{shown} is not a file; give a report written by `keel eval`")
    if size > MAX_REPORT_BYTES:
        raise CliError(f"report {shown} is {size:,} bytes; keel compare reads at most "
                       f"{MAX_REPORT_BYTES:,}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CliError(f"report {shown} is not JSON ({str(exc)[:80]}); give a report "
                       "written by `keel eval ... --report FILE`") from None
    try:
        return Report.from_dict(raw)
    except CliError:
        raise
    except Exception as exc:
        message = getattr(exc, "message", str(exc))
        raise CliError(f"report {shown}: {message}") from None


def compare_command(
    report_a: Annotated[Path, typer.Argument(metavar="REPORT_A",
                                             help="The baseline report (JSON).")],
    report_b: Annotated[Path, typer.Argument(metavar="REPORT_B",
                                             help="The candidate report (JSON).")],
    metric: Annotated[list[str] | None, typer.Option(
        "--metric", metavar="NAME", help="Only this metric (repeatable).")] = None,
    confidence: Annotated[float, typer.Option(
        "--confidence", help="Confidence level of the intervals.")] = 0.95,
    resamples: Annotated[int, typer.Option("--resamples", help="Bootstrap resamples.")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
    markdown: MarkdownOption = None,
    as_json: JsonOption = False,
) -> None:
    """A/B: compare two evaluation reports, with bootstrap confidence intervals.

    Metric by metric over the cases both reports have (paired by case id): the means, the
    difference B - A and its paired bootstrap interval; an interval that excludes 0 is a
    significant change (lower is better for cost, latency and steps). Exit 0 whatever the
    verdicts; 2 for unreadable reports or reports of different datasets."""
    screen = Screen()
    with reported(screen):
        a, b = read_report(report_a), read_report(report_b)
        cmp = compare(a, b, metrics=metric or None, resamples=resamples,
                      confidence=confidence, seed=seed)
        if markdown is not None:
            _write(markdown, cmp.to_markdown())
        if as_json:
            typer.echo(to_json(cmp.to_dict()))
            return
        screen.out.print(_comparison_table(cmp))
        if cmp.only_a or cmp.only_b:
            screen.out.print(safe(f"Left out: {len(cmp.only_a)} case(s) only in A, "
                                  f"{len(cmp.only_b)} only in B."))


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {safe(str(path), limit=SHORT)}: "
                       f"{exc.strerror or exc}") from None


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def _comparison_table(cmp: Comparison) -> Table:
    title = (f"A/B: {cmp.a.get('name', '?')} (A) vs {cmp.b.get('name', '?')} (B), "
             f"{cmp.paired} paired cases")
    table = Table(box=box.SIMPLE_HEAD, title=safe(title, limit=SHORT))
    for name in ("metric", "n", "A", "B", "B - A", f"{cmp.confidence:.0%} CI", "verdict"):
        table.add_column(name, justify="left" if name in ("metric", "verdict") else "right")
    for m in cmp.metrics:
        ci = "-" if m.ci_low is None else f"[{_num(m.ci_low)}, {_num(m.ci_high)}]"
        verdict = m.verdict.upper() if m.significant else m.verdict
        table.add_row(safe(m.name, limit=SHORT), str(m.n), _num(m.mean_a), _num(m.mean_b),
                      _num(m.diff, True), ci, verdict)
    return table


def shadow_report_command(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(
        "--since", metavar="WHEN",
        help="Shadow runs created since WHEN: a duration back (30m, 24h, 7d) or an ISO "
             "date or date-time (UTC unless it says otherwise).")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", metavar="WHEN", help="Shadow runs created before WHEN.")] = None,
    compare_by: Annotated[str, typer.Option(
        "--compare", metavar="HOW", help="How answers are compared: exact or fuzzy.")
    ] = "exact",
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's runs.")
                      ] = None,
    markdown: MarkdownOption = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """How shadow runs compared with the production runs they shadowed.

    Agreement of the answers (exact or fuzzy), cost and latency per run (mean and p95),
    the would-calls per tool (calls of tools with effects, never executed) and the shadow
    runs that did not complete. Read-only: it never creates a store."""
    screen = Screen()
    with reported(screen):
        now = time.time()
        start = None if since is None else parse_since(since, now)
        end = None if until is None else parse_since(until, now, "--until")
        if start is not None and end is not None and start >= end:
            raise CliError(f"--since {since!r} is not before --until {until!r}; the window "
                           "is [since, until).")
        if compare_by not in ("exact", "fuzzy"):
            raise CliError(f"--compare {compare_by[:40]!r} is not one of: exact, fuzzy.")
        url = store_url(ctx, store)
        report = asyncio.run(_shadow(url, start, end, compare_by, tenant))
        if report is None:
            screen.out.print(safe(f"No shadow runs: there is no run store at {url} yet."))
            return
        if markdown is not None:
            _write(markdown, report.to_markdown())
        if as_json:
            typer.echo(to_json(report.to_dict()))
            return
        _print_shadow(screen, report)


async def _shadow(url: str, start: float | None, end: float | None, how: Any,
                  tenant: str | None) -> ShadowReport | None:
    opened = open_existing(url)
    if opened is None:
        return None
    async with opened:
        return await shadow_report(opened, since=start, until=end, compare=how, tenant=tenant)


def _print_shadow(screen: Screen, report: ShadowReport) -> None:
    agreement = "-" if report.agreement is None else f"{report.agreement:.1%}"
    screen.out.print(safe(f"{report.shadow_runs} shadow run(s); {report.compared} compared "
                          f"with production ({report.compare}): agreement {agreement}."))
    table = Table(box=box.SIMPLE_HEAD, title="Per run")
    for name in ("", "production", "shadow", "shadow - production"):
        table.add_column(name, justify="left" if not name else "right")
    for label, prod, shadow, diff, unit in (
            ("cost, mean", report.cost_production.mean, report.cost_shadow.mean,
             report.cost_diff.mean, "$"),
            ("cost, p95", report.cost_production.p95, report.cost_shadow.p95,
             report.cost_diff.p95, "$"),
            ("latency, mean", report.latency_production.mean, report.latency_shadow.mean,
             report.latency_diff.mean, "s"),
            ("latency, p95", report.latency_production.p95, report.latency_shadow.p95,
             report.latency_diff.p95, "s")):
        table.add_row(label, *(_unit(v, unit, i == 2) for i, v in enumerate((prod, shadow,
                                                                              diff))))
    screen.out.print(table)
    screen.out.print(safe(f"Would-calls (never executed): {report.would_calls_total}"
                          + _counts(report.would_calls)))
    if report.unavailable:
        screen.out.print(safe("Reads unavailable: " + _counts(report.unavailable).strip(" ()")))
    if report.errors:
        screen.out.print(safe("Shadow runs that did not complete: "
                              + _counts(report.errors).strip(" ()")))


def _unit(value: float | None, unit: str, signed: bool) -> str:
    if value is None:
        return "-"
    sign = "+" if signed else ""
    return f"${value:{sign},.6f}" if unit == "$" else f"{value:{sign}.3f}s"


def _counts(counts: dict[str, int]) -> str:
    return "" if not counts else " (" + ", ".join(f"{k}: {v}" for k, v in counts.items()) + ")"


def register(app: typer.Typer) -> None:
    """Add ``keel compare`` and ``keel shadow report``."""
    app.command("compare")(compare_command)
    shadow_app = typer.Typer(help="Shadow runs: a candidate version beside production, on a "
                                  "share of live traffic (read-only here).",
                             no_args_is_help=True)
    shadow_app.command("report")(shadow_report_command)
    app.add_typer(shadow_app, name="shadow")
