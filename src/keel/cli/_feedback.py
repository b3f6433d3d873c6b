"""``keel feedback``: give a run a thumbs up or down, a score or a comment, and list what people
said (``keel feedback RUN_ID --down --comment "wrong order"``; ``keel feedback list
--negative``). ``keel feedback RUN_ID ...`` is short for ``keel feedback give RUN_ID ...``.

Writing refuses, changing nothing: an unknown run (or another tenant's, with ``--tenant``),
both ``--up`` and ``--down``, a score outside 0 to 1, nothing to say, a comment over 4,000
characters. Comments are listed masked by the data policy (``$KEEL_DATA_POLICY``), as
exports are.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table
from typer.core import TyperGroup

from keel.cli._audit import parse_since
from keel.cli._commands import open_existing
from keel.cli._errors import CliError, reported
from keel.cli._options import JsonOption, LimitOption, StoreOption, store_url
from keel.cli._scrub import data_policy
from keel.cli._text import SHORT, Screen, printable, safe, to_json
from keel.core import RunNotFound
from keel.guard import DataPolicy
from keel.runtime import record_feedback, summarize_feedback
from keel.store import Feedback, RunStore, check_id

#: How many records ``keel feedback list`` reads from the store at most.
MAX_LISTED = 10_000
_GIVE = "give"


class FeedbackGroup(TyperGroup):
    """``keel feedback``: ``give`` is the default command, so ``keel feedback RUN_ID --up``
    works; ``keel feedback list`` lists."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = [_GIVE, *args]
        return super().parse_args(ctx, args)


feedback_app = typer.Typer(
    help="Give a run a thumbs up or down, a score or a comment (keel feedback RUN_ID --up), "
         "or list feedback (keel feedback list).",
    no_args_is_help=True, cls=FeedbackGroup)

TenantOption = Annotated[str | None, typer.Option(
    "--tenant", metavar="TENANT",
    help="Act only on this tenant's runs (another tenant's run is not found).")]


def register(app: typer.Typer) -> None:
    """Add ``keel feedback``."""
    app.add_typer(feedback_app, name="feedback")


@feedback_app.command(_GIVE)
def give(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run the feedback is on.")],
    up: Annotated[bool, typer.Option("--up", help="Thumbs up.")] = False,
    down: Annotated[bool, typer.Option("--down", help="Thumbs down.")] = False,
    score: Annotated[float | None, typer.Option(
        "--score", metavar="X", help="A score from 0 (bad) to 1 (good).")] = None,
    comment: Annotated[str | None, typer.Option(
        "--comment", metavar="TEXT", help="What was right or wrong (at most 4,000 "
                                          "characters).")] = None,
    by: Annotated[str | None, typer.Option(
        "--by", metavar="WHO", help="Who gives it (a user id); each person's newest verdict "
                                    "on a run counts. Default: $USER, else 'cli'.")] = None,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """Attach a thumbs up or down, a score and/or a comment to a run."""
    screen = Screen()
    with reported(screen):
        if up and down:
            raise CliError("give --up or --down, not both. Nothing was recorded.")
        thumbs = "up" if up else "down" if down else None
        who = by if by is not None else (os.environ.get("USER") or "cli")
        url = store_url(ctx, store)
        kept = asyncio.run(_give(url, run_id, thumbs=thumbs, score=score, comment=comment,
                                 by=who, tenant=tenant))
        if as_json:
            typer.echo(to_json(feedback_json(kept, None)))
            return
        said = ", ".join(part for part in (
            f"thumbs {kept.thumbs}" if kept.thumbs else "",
            f"score {kept.score:g}" if kept.score is not None else "",
            "a comment" if kept.comment else "") if part)
        screen.line(safe(f"recorded feedback {kept.feedback_id} on run {kept.run_id}: {said} "
                         f"(by {kept.by})", "green", limit=SHORT * 2))


async def _give(url: str, run_id: str, *, thumbs: str | None, score: float | None,
                comment: str | None, by: str, tenant: str | None) -> Feedback:
    check_id("run_id", run_id)
    opened = open_existing(url)
    if opened is None:
        raise RunNotFound(f"no run {run_id!r}: there is no run store at {url} yet. Pass "
                          "--store (or set KEEL_STORE) to the store the run was written to.")
    async with opened:
        return await record_feedback(run_id, thumbs=thumbs,  # type: ignore[arg-type]
                                     score=score, comment=comment, by=by, tenant=tenant,
                                     store=opened)


@feedback_app.command("list")
def list_feedback(
    ctx: typer.Context,
    run: Annotated[str | None, typer.Option("--run", metavar="RUN_ID",
                                            help="Only the feedback on this run.")] = None,
    negative: Annotated[bool, typer.Option(
        "--negative", help="Only negative feedback (thumbs down, or a score below 0.5).")
    ] = False,
    since: Annotated[str | None, typer.Option(
        "--since", metavar="WHEN",
        help="Given since WHEN: a duration back (30m, 24h, 7d) or an ISO date or date-time.")
    ] = None,
    tenant: TenantOption = None,
    limit: LimitOption = 50,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """List feedback, newest first, with a summary (each person's newest verdict on a run
    counts once). Comments are masked as exports are ($KEEL_DATA_POLICY)."""
    screen = Screen()
    with reported(screen):
        start = None if since is None else parse_since(since, time.time())
        run_ids = None if run is None else [check_id("run_id", run)]
        scope = None if tenant is None else check_id("tenant", tenant)
        records = asyncio.run(_list(store_url(ctx, store), run_ids, scope, start))
        summary = summarize_feedback(records)
        shown = [f for f in records if f.negative or not negative][::-1][:limit]
        policy = data_policy()
        if as_json:
            typer.echo(to_json({"items": [feedback_json(f, policy) for f in shown],
                                "summary": summary.to_dict()}))
            return
        if shown:
            screen.out.print(_table(shown, policy))
        rate = "-" if summary.negative_rate is None else f"{summary.negative_rate:.1%}"
        mean = "-" if summary.mean_score is None else f"{summary.mean_score:.2f}"
        screen.line(safe(f"{summary.verdicts} verdict(s) on {summary.runs} run(s): "
                         f"{summary.up} up, {summary.down} down, mean score {mean}, "
                         f"negative rate {rate}"))
        if not records:
            screen.note("No feedback matches.")


async def _list(url: str, run_ids: list[str] | None, tenant: str | None,
                since: float | None) -> list[Feedback]:
    opened: RunStore | None = open_existing(url)
    if opened is None:
        return []
    async with opened:
        return await opened.list_feedback(run_ids=run_ids, tenant=tenant, since=since,
                                          limit=MAX_LISTED)


def masked_comment(feedback: Feedback, policy: DataPolicy) -> str | None:
    """``feedback``'s comment as it may leave the store (``exports`` rules, withheld if it
    holds a blocked kind)."""
    if feedback.comment is None:
        return None
    text: str = policy.scope(tenant=feedback.tenant).scrub_value(
        feedback.comment, "exports", where="comment", withhold=True)
    return text


def feedback_json(feedback: Feedback, policy: DataPolicy | None) -> dict[str, Any]:
    """A feedback record for ``--json`` (its comment masked when ``policy`` is given)."""
    return {"feedback_id": feedback.feedback_id, "run_id": feedback.run_id,
            "created_at": feedback.created_at, "thumbs": feedback.thumbs,
            "score": feedback.score,
            "comment": feedback.comment if policy is None else masked_comment(feedback,
                                                                               policy),
            "by": feedback.by, "tenant": feedback.tenant, "negative": feedback.negative,
            "metadata": feedback.metadata}


def _table(records: list[Feedback], policy: DataPolicy) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title="Feedback")
    for name in ("given (UTC)", "run", "thumbs", "score", "by", "comment"):
        table.add_column(name)
    for f in records:
        when = datetime.fromtimestamp(f.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(when, safe(f.run_id, limit=SHORT), f.thumbs or "-",
                      "-" if f.score is None else f"{f.score:g}",
                      safe(printable(f.by or "-"), limit=SHORT),
                      safe(masked_comment(f, policy) or "", limit=SHORT))
    return table
