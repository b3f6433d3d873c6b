"""``keel rollout status|advance|rollback|pause|resume|history NAME``: see and steer a
rollout (``keel.rollout.Rollout``) kept in the run store.

Every change is a compare-and-set on the rollout's state: ``--expect-version N`` (the
version ``status`` showed) refuses the change if anyone changed the rollout since. A change
reaches every worker within the rollout's state TTL (2 s by default); runs already started
finish on their version. Reading commands never create a store.
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

from keel.cli._commands import open_existing
from keel.cli._errors import reported
from keel.cli._options import ByOption, JsonOption, StoreOption, store_url
from keel.cli._text import Screen, safe, to_json
from keel.rollout import (
    RolloutError,
    RolloutState,
    change_rollout,
    read_rollout,
    rollout_history,
)
from keel.store import RunStore, check_id

rollout_app = typer.Typer(
    help="See and steer gradual rollouts: status, advance, rollback, pause, resume, history.",
    no_args_is_help=True)

NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="The rollout's name.")]
ReasonOption = Annotated[str | None, typer.Option(
    "--reason", metavar="TEXT", help="Why (kept in the rollout's history).")]
ExpectOption = Annotated[int | None, typer.Option(
    "--expect-version", metavar="N", min=1,
    help="Change only if the rollout is still at version N (as `status` showed).")]


def register(app: typer.Typer) -> None:
    app.add_typer(rollout_app, name="rollout")


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S") if at else "-"


def _who(by: str | None) -> str:
    return check_id("by", by if by is not None else (os.environ.get("USER") or "cli"))


async def _with_store(url: str, work: Any) -> Any:
    store: RunStore | None = open_existing(url)
    if store is None:
        raise RolloutError(f"there is no run store at {url}, so no rollout; pass --store "
                           "(or set KEEL_STORE) to the store the workers use")
    async with store:
        return await work(store)


def _show(screen: Screen, state: RolloutState, as_json: bool) -> None:
    if as_json:
        typer.echo(to_json(state.to_dict()))
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_row("rollout", safe(state.name))
    grid.add_row("versions", safe(f"{state.current} (current) -> {state.candidate} "
                                  "(candidate)"))
    grid.add_row("status", safe(state.status))
    grid.add_row("candidate share", f"{state.candidate_share():g}% (steps "
                                    f"{', '.join(f'{s:g}' for s in state.steps)})")
    grid.add_row("last change", safe(f"{state.reason or '-'} (by {state.by or '?'}, "
                                     f"{_when(state.at)})"))
    grid.add_row("state version", f"{state.version} (for --expect-version)")
    screen.out.print(grid)


@rollout_app.command("status")
def status(ctx: typer.Context, name: NameArgument, as_json: JsonOption = False,
           store: StoreOption = None) -> None:
    """Show a rollout: versions, status, the candidate's share, the last change."""
    screen = Screen()
    with reported(screen):
        async def work(opened: RunStore) -> RolloutState:
            return await read_rollout(opened, name)

        _show(screen, asyncio.run(_with_store(store_url(ctx, store), work)), as_json)


def _change(ctx: typer.Context, action: str, name: str, by: str | None, reason: str | None,
            expect: int | None, as_json: bool, store: str | None) -> None:
    screen = Screen()
    with reported(screen):
        who = _who(by)

        async def work(opened: RunStore) -> RolloutState:
            return await change_rollout(opened, name, action,  # type: ignore[arg-type]
                                        now=time.time(), by=who, reason=reason,
                                        expect_version=expect)

        state = asyncio.run(_with_store(store_url(ctx, store), work))
        _show(screen, state, as_json)
        if not as_json:
            screen.note("new runs pick this up within the workers' state TTL (2 s by "
                        "default); runs already started finish on their version.",
                        style="dim")


@rollout_app.command("advance")
def advance(ctx: typer.Context, name: NameArgument, by: ByOption = None,
            reason: ReasonOption = None, expect_version: ExpectOption = None,
            as_json: JsonOption = False, store: StoreOption = None) -> None:
    """Move the rollout to its next step now (completed at 100%)."""
    _change(ctx, "advance", name, by, reason, expect_version, as_json, store)


@rollout_app.command("rollback")
def rollback(ctx: typer.Context, name: NameArgument, by: ByOption = None,
             reason: ReasonOption = None, expect_version: ExpectOption = None,
             as_json: JsonOption = False, store: StoreOption = None) -> None:
    """Send every new conversation back to the current version (share 0%)."""
    _change(ctx, "rollback", name, by, reason, expect_version, as_json, store)


@rollout_app.command("pause")
def pause(ctx: typer.Context, name: NameArgument, by: ByOption = None,
          reason: ReasonOption = None, expect_version: ExpectOption = None,
          as_json: JsonOption = False, store: StoreOption = None) -> None:
    """Hold the rollout at its share (no automatic advance; a broken gate still rolls back)."""
    _change(ctx, "pause", name, by, reason, expect_version, as_json, store)


@rollout_app.command("resume")
def resume(ctx: typer.Context, name: NameArgument, by: ByOption = None,
           reason: ReasonOption = None, expect_version: ExpectOption = None,
           as_json: JsonOption = False, store: StoreOption = None) -> None:
    """Let a paused rollout advance again."""
    _change(ctx, "resume", name, by, reason, expect_version, as_json, store)


@rollout_app.command("history")
def history(ctx: typer.Context, name: NameArgument, as_json: JsonOption = False,
            store: StoreOption = None) -> None:
    """Every state the rollout went through, oldest first (its journal)."""
    screen = Screen()
    with reported(screen):
        async def work(opened: RunStore) -> list[RolloutState]:
            return await rollout_history(opened, name)

        states: list[RolloutState] = asyncio.run(_with_store(store_url(ctx, store), work))
        if as_json:
            typer.echo(to_json([s.to_dict() for s in states]))
            return
        table = Table(box=box.SIMPLE_HEAD)
        for column in ("version", "when", "status", "share", "by", "reason"):
            table.add_column(column)
        for s in states:
            table.add_row(str(s.version), _when(s.at), safe(s.status),
                          f"{s.candidate_share():g}%", safe(s.by or "-"),
                          safe(s.reason or "-"))
        screen.out.print(table)
