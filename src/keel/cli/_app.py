"""The ``keel`` command line: typer wiring. What each command does is in ``_commands`` and
``_demo``; how failures become exit codes is in ``_errors``."""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

import keel
from keel.cli._audit import register as register_audit
from keel.cli._commands import (
    list_command,
    read_input,
    resume_command,
    run_command,
    show_command,
)
from keel.cli._compare import register as register_compare
from keel.cli._conversations import register as register_conversations
from keel.cli._cost import register as register_cost
from keel.cli._demo import demo_command
from keel.cli._errors import EXIT_RUN_FAILED, reported
from keel.cli._eval import register as register_eval
from keel.cli._events import register as register_events
from keel.cli._failures import register as register_failures
from keel.cli._feedback import register as register_feedback
from keel.cli._fleet import register as register_fleet
from keel.cli._history import register as register_history
from keel.cli._humans import approvals_app, escalations_app
from keel.cli._keys import register as register_keys
from keel.cli._mcp import register as register_mcp
from keel.cli._options import (
    JsonOption,
    LimitOption,
    LogJsonOption,
    State,
    StoreOption,
    store_url,
)
from keel.cli._redteam import register as register_redteam
from keel.cli._rollout import register as register_rollout
from keel.cli._serve import register as register_serve
from keel.cli._stats import register as register_stats
from keel.cli._temporal import (
    AddressOption,
    NamespaceOption,
    QueueOption,
    TemporalOption,
    TemporalOptions,
    temporal_run_command,
)
from keel.cli._text import Screen
from keel.runtime import default_store_url, register_engine

# The order ``keel --help`` lists commands in: the order a user meets them. Start a run, continue
# it, look at runs; answer what waits for a person; run workers for a fleet; then what a finished
# run is good for (replay, fork, diff); the offline demo last (the README starts with it anyway).
COMMAND_ORDER = ("run", "resume", "runs", "conversations", "approvals", "escalations",
                 "feedback", "audit", "keys", "stats", "cost", "rollout", "worker", "serve",
                 "mcp", "replay", "fork", "diff", "eval", "compare", "shadow", "redteam", "demo")
RUNS_ORDER = ("list", "show", "failures", "cancel", "resolve", "export", "import")


def _ordered(names: list[str], order: Sequence[str]) -> list[str]:
    rank = {name: i for i, name in enumerate(order)}
    return sorted(names, key=lambda n: (rank.get(n, len(order)), n))


def usage_error_lines(exc: typer.TyperException) -> tuple[str, str]:
    """A usage error as one line naming the problem, and a line naming the command's help."""
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "keel"
    message = " ".join(exc.format_message().split())
    return f"{path}: {message}", f"try: {path} --help"


class KeelGroup(TyperGroup):
    """The ``keel`` command group: commands in :data:`COMMAND_ORDER`, and usage errors (a bad
    option value, an unknown command, a missing argument) as one line on stderr, exit code 2,
    instead of typer's boxed error."""

    order: Sequence[str] = COMMAND_ORDER

    def list_commands(self, ctx: Any) -> list[str]:
        return _ordered(list(super().list_commands(ctx)), self.order)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        def run() -> Any:
            return super(KeelGroup, self).main(
                args, prog_name, complete_var, standalone_mode=False,
                windows_expand_args=windows_expand_args, **extra)

        if not standalone_mode:  # the caller handles exceptions, as with click
            return run()
        try:
            code = run()
        except typer.TyperException as exc:
            # click's exceptions (typer vendors click) derive from TyperException; a bare
            # ``keel`` or ``keel runs`` raises NoArgsIsHelpError after printing the help.
            if type(exc).__name__ != "NoArgsIsHelpError":
                problem, help_line = usage_error_lines(exc)
                Screen().error(problem, hint=help_line)
            code = exc.exit_code
        except typer.Abort:
            Screen().note("aborted.")
            code = 1
        sys.exit(code if isinstance(code, int) else 0)


class RunsGroup(KeelGroup):
    """``keel runs``: its commands in :data:`RUNS_ORDER`."""

    order = RUNS_ORDER


EPILOG = ("Exit codes: 0 success · 1 the run failed · 2 usage or user error · 3 the run is "
          "suspended · 130 interrupted.")

app = typer.Typer(
    name="keel",
    help="keel: run, inspect and resume durable AI agent runs.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=KeelGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
)
runs_app = typer.Typer(help="List, inspect, cancel, resolve, export and import stored runs; "
                            "report how they failed.",
                       no_args_is_help=True, epilog=EPILOG, cls=RunsGroup)
app.add_typer(runs_app, name="runs")
app.add_typer(approvals_app, name="approvals")
app.add_typer(escalations_app, name="escalations")
register_history(app, runs_app)
register_audit(app)
register_keys(app)
register_stats(app)
register_cost(app)
register_rollout(app)
register_conversations(app)
register_serve(app)
register_mcp(app)
register_events(app)
register_eval(app)
register_feedback(app)
register_compare(app)
register_redteam(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"keel {keel.__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    store: StoreOption = None,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    """keel: run, inspect and resume durable AI agent runs."""
    ctx.obj = State(store=store or default_store_url())
    # A decision or cancel of a Temporal run signals its workflow (imported only then).
    register_engine("temporal", "keel.temporal:notify_decided")


@app.command("run")
def run(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(
        metavar="MODULE:AGENT",
        help="The agent: a .py file or a dotted module, a colon, and the Agent's name, e.g. "
             "examples/tool_use.py:agent.")],
    input: Annotated[str, typer.Argument(
        metavar="INPUT", help="The run's input; '-' reads it from standard input.")],
    as_json: JsonOption = False,
    log_json: LogJsonOption = None,
    store: StoreOption = None,
    tenant: Annotated[str | None, typer.Option(
        "--tenant", metavar="TENANT", help="The tenant the run is for (stored with it; "
                                           "`keel runs list --tenant` filters on it).")] = None,
    user: Annotated[str | None, typer.Option(
        "--user", metavar="USER", help="The user the run acts for (stored with it).")] = None,
    conversation: Annotated[str | None, typer.Option(
        "--conversation", metavar="ID",
        help="Run the next turn of this conversation: the agent starts from its earlier "
             "runs' messages (`keel conversations show ID`).")] = None,
    temporal: TemporalOption = False,
    temporal_address: AddressOption = None,
    namespace: NamespaceOption = None,
    task_queue: QueueOption = None,
) -> None:
    """Run an agent, showing each step live, and store the run so it can be resumed.

    With --temporal the run is a Temporal workflow that a `keel worker --temporal` serving the
    agent executes (into the worker's store); this waits for it and prints its result, and
    with --store (the worker's store) each step as the worker records it."""
    opts = TemporalOptions(temporal, temporal_address, namespace, task_queue)
    if opts != TemporalOptions():
        temporal_run_command(Screen(), target=target, text=read_input(input), as_json=as_json,
                             log_json=log_json, tenant=tenant, user=user,
                             conversation=conversation, opts=opts, follow=store)
        return
    run_command(Screen(), store=store_url(ctx, store), target=target, text=read_input(input),
                as_json=as_json, log_json=log_json, tenant=tenant, user=user,
                conversation=conversation)


@app.command("resume")
def resume(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run to continue.")],
    as_json: JsonOption = False,
    log_json: LogJsonOption = None,
    store: StoreOption = None,
) -> None:
    """Continue a failed, interrupted, crashed, approved or answered run where it stopped.

    Recorded steps replay from the journal (dimmed) and the rest run now. A completed run, or
    one stopped with `keel runs cancel`, is not resumed: `keel fork` starts a new run from it."""
    resume_command(Screen(), store=store_url(ctx, store), run_id=run_id, as_json=as_json,
                   log_json=log_json)


@app.command("demo")
def demo() -> None:
    """Run the examples offline on scripted models (no LLM is called, nothing is kept)."""
    screen = Screen()
    with reported(screen):
        ok = demo_command(screen)
    if not ok:
        raise typer.Exit(EXIT_RUN_FAILED)


@runs_app.command("list")
def runs_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(
        "--status", help="Only runs with this status: running, suspended, completed, failed "
                         "or cancelled.")] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent's runs.")] = None,
    tenant: Annotated[str | None, typer.Option(
        "--tenant", metavar="TENANT", help="Only this tenant's runs.")] = None,
    conversation: Annotated[str | None, typer.Option(
        "--conversation", metavar="ID", help="Only the runs (turns) of this conversation.")
    ] = None,
    limit: LimitOption = 20,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """List runs, newest first."""
    list_command(Screen(), store=store_url(ctx, store), status=status, agent=agent, limit=limit,
                 as_json=as_json, tenant=tenant, conversation=conversation)


@runs_app.command("show")
def runs_show(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run to show.")],
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """Show a run's record and its journal as a timeline."""
    show_command(Screen(), store=store_url(ctx, store), run_id=run_id, as_json=as_json)


register_fleet(runs_app, app)
register_failures(runs_app)


def main() -> None:
    """The ``keel`` console script."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            # Text a terminal's encoding cannot show is escaped, never a crash.
            stream.reconfigure(errors="backslashreplace")
    app(prog_name="keel")
