"""``keel redteam TARGET``: run keel's attack suites against an agent and gate on the attack
success rate (``keel.evals.redteam``). Exit 0 when the gate passes (or none is given), 1 when
it fails, 2 for bad input."""

from __future__ import annotations

import asyncio
import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from keel.cli._errors import EXIT_RUN_FAILED, reported
from keel.cli._load import load_agent
from keel.cli._options import JsonOption, StoreOption, store_url
from keel.cli._text import Screen
from keel.core import UserError
from keel.evals import SUITES, AttackOutcome, RedTeamReport, redteam
from keel.runtime import Agent
from keel.store import open_store


def parse_rates(values: list[str]) -> float | dict[str, float] | None:
    """``--max-success-rate`` values: ``0.05`` (the whole run) or ``CATEGORY=0.05``
    (repeatable); a bad one is a :class:`~keel.UserError` naming the fix."""
    rates: dict[str, float] = {}
    for value in values:
        name, sep, number = value.rpartition("=")
        key = name.strip() if sep else "all"
        try:
            rate = float(number)
        except ValueError:
            rate = math.nan
        if (sep and not key) or not math.isfinite(rate) or not 0 <= rate <= 1:
            raise UserError(f"--max-success-rate {value!r}: give a rate from 0 to 1 (0.05 "
                            "allows 5% of attacks to succeed), or CATEGORY=RATE, e.g. "
                            "exfiltration=0")
        rates[key] = rate
    if not rates:
        return None
    if list(rates) == ["all"]:
        return rates["all"]
    return rates


class _Progress:
    """A count of attacks judged and succeeded, rewritten in place on a terminal's stderr
    (nothing when stderr is not a terminal)."""

    def __init__(self) -> None:
        self.live = sys.stderr.isatty()
        self.seen = 0
        self.won = 0

    def __call__(self, outcome: AttackOutcome) -> None:
        self.seen += 1
        self.won += outcome.status == "succeeded"
        if self.live:
            sys.stderr.write(f"\rattacks: {self.seen} judged, {self.won} succeeded")
            sys.stderr.flush()

    def done(self) -> None:
        if self.live and self.seen:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _writable(paths: list[str | None]) -> None:
    """Refuse an output path whose directory does not exist before any attack runs."""
    for path in paths:
        if path is not None and not Path(path).expanduser().resolve().parent.is_dir():
            raise UserError(f"cannot write the report to {path!r}: its directory does not "
                            "exist; create it or give another path")


def _write(path: str | None, text: str, what: str) -> None:
    if path is None:
        return
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write the {what} to {path!r} ({exc.strerror}); give a "
                        "writable path") from None


def redteam_command(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(
        metavar="MODULE:AGENT",
        help="The agent: a .py file or a dotted module, a colon, and the Agent's name, e.g. "
             "examples/tool_use.py:agent.")],
    suite: Annotated[list[str] | None, typer.Option(
        "--suite", metavar="NAME",
        help=f"An attack suite to run (repeatable): {', '.join(SUITES)}, or a .jsonl file. "
             "Default: every built-in suite.")] = None,
    max_success_rate: Annotated[list[str] | None, typer.Option(
        "--max-success-rate", metavar="RATE",
        help="The gate: exit 1 when more than this share of attacks succeeds (0 to 1), for "
             "the whole run, or CATEGORY=RATE for one category (repeatable).")] = None,
    report: Annotated[str | None, typer.Option(
        "--report", metavar="FILE", help="Write the report as JSON.")] = None,
    markdown: Annotated[str | None, typer.Option(
        "--markdown", metavar="FILE", help="Write the report as Markdown.")] = None,
    junit: Annotated[str | None, typer.Option(
        "--junit", metavar="FILE",
        help="Write JUnit XML (one test per attack; a successful attack fails).")] = None,
    compromised_model: Annotated[bool, typer.Option(
        "--compromised-model",
        help="Run with a model that obeys every instruction it reads (offline, no LLM): "
             "what the guards hold alone.")] = False,
    attacker_tools: Annotated[bool, typer.Option(
        "--attacker-tools/--no-attacker-tools",
        help="Add the red team's tools for each run (a document carrying the attack, a "
             "customer record with canaries, send_email and http_post).")] = True,
    concurrency: Annotated[int, typer.Option(
        "--concurrency", min=1, max=256, help="Attacks run at once.")] = 8,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """Attack an agent with its real guardrails and report attack success by category.

    Each attack is an ordinary journaled run (`keel runs show RUN_ID`). Success is judged by
    effects: a call with an attacker's values executed without a person's approval, a
    canary reaching the attacker, a crash."""
    screen = Screen()
    with reported(screen):
        gate = parse_rates(max_success_rate or [])
        _writable([report, markdown, junit])
        loaded, _ = load_agent(target)
        if not isinstance(loaded, Agent):
            raise UserError(f"{target} is a flow; keel redteam attacks one agent at a time "
                            "(point it at each agent of the flow)")
        url = store_url(ctx, store)
        progress = _Progress()

        async def main() -> RedTeamReport:
            async with open_store(url) as opened:
                return await redteam(loaded, suites=suite or None, store=opened,
                                     concurrency=concurrency, attacker_tools=attacker_tools,
                                     compromised=compromised_model, max_success_rate=gate,
                                     on_outcome=progress)

        result = asyncio.run(main())
        progress.done()
        data: dict[str, Any] = result.to_dict()
        _write(report, json.dumps(data, indent=2, ensure_ascii=False) + "\n", "report")
        _write(markdown, result.to_markdown(), "Markdown summary")
        if junit is not None:
            _write(junit, "", "JUnit XML")
            result.write_junit(junit)
        if as_json:
            typer.echo(json.dumps(data, ensure_ascii=False))
        else:
            typer.echo(result.to_markdown().split("\n## ")[0].rstrip())
        if not result.passed:
            for failure in result.gate_failures():
                screen.error(f"red-team gate failed: {failure}")
            raise typer.Exit(EXIT_RUN_FAILED)


def register(app: typer.Typer) -> None:
    """Add ``keel redteam``."""
    app.command("redteam")(redteam_command)
