"""``keel replay``, ``keel fork``, ``keel diff`` and ``keel runs export|import``: what a
recorded run is good for after it ended. :func:`register` adds them to the typer apps."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from keel.cli._commands import open_existing
from keel.cli._dataset import dataset_filter, export_dataset
from keel.cli._errors import EXIT_RUN_FAILED, CliError, reported
from keel.cli._load import Runnable, load_agent
from keel.cli._options import JsonOption, StoreOption, store_url
from keel.cli._render import LiveView, result_json, summary_panel
from keel.cli._scrub import scrubbed_export
from keel.cli._text import LONG, SHORT, Screen, safe, to_json
from keel.cli._timeline import label_grid
from keel.core import RunNotFound, to_text
from keel.evals import MAX_HARVEST
from keel.runtime import Agent, ReplayReport, RunDiff, RunResult, plan_fork
from keel.store import (
    MAX_EXPORT_BYTES,
    MemoryStore,
    RunRecord,
    RunStore,
    dump_export,
    export_run,
    import_run,
    open_store,
    parse_export,
)

AgentOption = Annotated[str | None, typer.Option(
    "--agent", metavar="MODULE:AGENT",
    help="The agent to use; default: the one the run was started with (its stored target).")]


def register(app: typer.Typer, runs_app: typer.Typer) -> None:
    """Add the history commands to ``keel`` and ``keel runs``."""
    app.command("replay")(replay)
    app.command("fork")(fork)
    app.command("diff")(diff)
    runs_app.command("export")(runs_export)
    runs_app.command("import")(runs_import)


# ---------------------------------------------------------------------------------- replay


def replay(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Argument(
        metavar="RUN_ID", help="The run to replay (optional with --file).")] = None,
    agent: AgentOption = None,
    file: Annotated[Path | None, typer.Option(
        "--file", metavar="EXPORT.json",
        help="Replay an exported run (keel runs export) without a store.")] = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """Check that a finished run reproduces: re-execute it against its journal.

    No model or tool is called and nothing is written. Exit 0 identical, 1 different."""
    screen = Screen()
    with reported(screen):
        report = asyncio.run(_replay(store_url(ctx, store), run_id, agent, file))
        if as_json:
            typer.echo(to_json(report.to_dict()))
        else:
            screen.out.print(replay_panel(report))
    if not report.identical:
        raise typer.Exit(EXIT_RUN_FAILED)


async def _replay(url: str, run_id: str | None, target: str | None,
                  file: Path | None) -> ReplayReport:
    from keel.runtime import replay_run

    if file is not None:
        scratch = MemoryStore()
        imported = await import_run(parse_export(read_file(file)), store=scratch)
        if run_id is not None and run_id != imported:
            raise CliError(f"{file} holds run {imported}, not {run_id}; drop RUN_ID or give "
                           "the matching file.")
        return await replay_run(_agent_for(await scratch.get_run(imported), target), imported,
                                store=scratch)
    if run_id is None:
        raise CliError("give the RUN_ID to replay, or --file EXPORT.json for an exported run.")
    async with _reading(url, run_id) as opened:
        record = await opened.get_run(run_id)
        return await replay_run(_agent_for(record, target), run_id, store=opened)


def _agent_for(record: RunRecord, target: str | None) -> Runnable:
    if target is None:
        target = record.target
        if target is None:
            raise CliError(
                f"run {record.run_id} was not started from the CLI, so keel does not know "
                "which agent to import; pass --agent MODULE:AGENT.")
    return load_agent(target)[0]


def replay_panel(report: ReplayReport) -> Panel:
    grid = label_grid()
    grid.add_row("run id", safe(report.run_id))
    grid.add_row("agent", safe(report.agent))
    grid.add_row("status", safe(report.status))
    grid.add_row("steps", f"{report.steps_replayed} of {report.steps_recorded} recorded steps "
                          "replayed")
    verdict = Text("identical" if report.identical else "different",
                   style="bold green" if report.identical else "bold red")
    verdict.append(" · ")
    verdict.append_text(safe(report.reason, limit=LONG))
    grid.add_row("result", verdict)
    if report.identical:
        if report.status == "completed":
            grid.add_row("output", safe(to_text(report.recorded_output, indent=2)))
        elif report.recorded_error:
            grid.add_row("error", _error_text(report.recorded_error))
        return _panel(grid, report)
    if report.status == "completed":
        grid.add_row("recorded output", safe(to_text(report.recorded_output, indent=2)))
    if report.replayed_output is not None:
        grid.add_row("replayed output", safe(to_text(report.replayed_output, indent=2)))
    if report.recorded_error:
        grid.add_row("recorded error", _error_text(report.recorded_error))
    div = report.divergence
    if div is not None:
        grid.add_row("diverged at", safe(div.step, "bold", limit=SHORT))
        grid.add_row("recorded", safe(_side(div.recorded)))
        grid.add_row("requested", safe(_side(div.requested)))
    elif report.replayed_error:
        grid.add_row("replayed error", _error_text(report.replayed_error))
    if report.unused_steps and div is None:
        grid.add_row("not replayed", safe(", ".join(report.unused_steps[:5]) + (
            f" … ({len(report.unused_steps) - 5} more)" if len(report.unused_steps) > 5
            else "")))
    return _panel(grid, report)


def _panel(grid: Table, report: ReplayReport) -> Panel:
    style = "green" if report.identical else "red"
    title = "replay identical" if report.identical else "replay different"
    return Panel(grid, title=title, title_align="left", border_style=style, expand=False)


def _error_text(err: dict[str, Any]) -> Text:
    text = f"{err.get('type', '?')}: {err.get('message', '')}"
    if err.get("step_key"):
        text += f" (step {err['step_key']})"
    return safe(text, "red")


def _side(side: dict[str, Any]) -> str:
    if side.get("kind") is None:
        return "nothing (the recorded run has no such step)"
    parts = [f"{side.get('kind')} {side.get('name')}"]
    if side.get("input_hash"):
        parts.append(f"input {side['input_hash']}")
    if side.get("summary"):
        parts.append(str(side["summary"]))
    return " · ".join(parts)


# ------------------------------------------------------------------------------------ fork


def fork(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run to fork.")],
    at: Annotated[str, typer.Option(
        "--at", metavar="STEP",
        help="Where the fork starts: a step key, or a 0-based step number (the run's result "
             "entries in journal order). Steps before it are copied; it and the rest run "
             "live.")],
    model: Annotated[str | None, typer.Option(
        "--model", metavar="ID", help="Continue with this model, e.g. openai:gpt-4o.")] = None,
    instructions: Annotated[Path | None, typer.Option(
        "--instructions", metavar="FILE",
        help="Continue with the instructions in FILE (UTF-8 text).")] = None,
    agent: AgentOption = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """Fork a run at a step and continue it live, for example with another model or prompt.

    The steps before --at are copied into a new run; it prints the new run id and result."""
    screen = Screen()
    view = LiveView(screen, quiet=as_json)
    with reported(screen, run_id=lambda: view.run_id, as_json=as_json):
        step: int | str = int(at) if at.isdigit() else at
        text = None if instructions is None else _read_text(instructions)
        result, parent, key = asyncio.run(_fork(
            store_url(ctx, store), run_id, step, model=model, instructions=text, target=agent,
            view=view))
        if as_json:
            typer.echo(to_json({**result_json(result), "fork": {"parent": parent, "at": key}}))
        else:
            screen.out.print(summary_panel(result))


async def _fork(url: str, run_id: str, at: int | str, *, model: str | None,
                instructions: str | None, target: str | None,
                view: LiveView) -> tuple[RunResult[Any], str, str]:
    from keel.runtime import fork_run

    async with _reading(url, run_id) as opened:
        record = await opened.get_run(run_id)
        agent = _agent_for(record, target)
        if not isinstance(agent, Agent):
            raise CliError(f"run {run_id} was made by the {type(agent).__name__} "
                           f"{agent.name!r}; fork re-runs one agent with another model or "
                           "prompt, so fork a run of an agent (replay works for any run).")
        plan = plan_fork(record, await opened.read_journal(run_id), at)
        view.structured = agent.final_result_spec() is not None
        view.recorded = plan.copied_steps
        if not view.quiet:
            where = plan.at if plan.index is None else f"{plan.index} ({plan.at})"
            line = Text("fork of run ")
            line.append_text(safe(run_id, "bold", limit=SHORT))
            line.append(" at step ")
            line.append_text(safe(where, "bold", limit=SHORT))
            line.append(f" · {len(plan.copied_steps)} steps copied")
            if model:
                line.append(" · model ")
                line.append_text(safe(model, limit=SHORT))
            if instructions is not None:
                line.append(" · new instructions")
            view.screen.line(line)
        result = await fork_run(agent, run_id, at=at, store=opened, model=model,
                                instructions=instructions, on_event=view)
    return result, run_id, plan.at


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CliError(f"{path} is not UTF-8 text; save the instructions as UTF-8.") from None
    except OSError as exc:
        raise CliError(f"cannot read {path} ({exc.strerror}); give --instructions a readable "
                       "text file.") from None


# ------------------------------------------------------------------------------------ diff


def diff(
    ctx: typer.Context,
    run_a: Annotated[str, typer.Argument(metavar="RUN_A", help="The first run (A).")],
    run_b: Annotated[str, typer.Argument(metavar="RUN_B", help="The second run (B).")],
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """Compare two runs step by step, for example a fork and its parent.

    Shows which steps are the same, changed or only in one run, the first divergent step,
    the outputs, and totals with their differences."""
    screen = Screen()
    with reported(screen):
        result = asyncio.run(_diff(store_url(ctx, store), run_a, run_b))
        if as_json:
            typer.echo(to_json(result.to_dict()))
            return
        for part in diff_renderables(result):
            screen.out.print(part)


async def _diff(url: str, run_a: str, run_b: str) -> RunDiff:
    from keel.runtime import diff_runs

    async with _reading(url, run_a) as opened:
        return await diff_runs(run_a, run_b, store=opened)


_STEP_STYLE = {"same": ("same", "dim"), "changed": ("changed", "yellow"),
               "only_a": ("only A", "red"), "only_b": ("only B", "green")}


def diff_renderables(d: RunDiff) -> list[Any]:
    head = label_grid()
    head.add_row("A", safe(f"{d.run_a} ({d.status_a})", limit=SHORT))
    head.add_row("B", safe(f"{d.run_b} ({d.status_b})", limit=SHORT))
    for name, other, fork in (("B", d.run_a, d.fork_b), ("A", d.run_b, d.fork_a)):
        if fork is not None and fork.get("parent") == other:
            head.add_row("fork", safe(_fork_text(name, fork), limit=SHORT))
    counts = d.counts()
    head.add_row("steps", f"{counts['same']} same · {counts['changed']} changed · "
                          f"{counts['only_a']} only in A · {counts['only_b']} only in B")
    head.add_row("first divergence",
                 safe(d.first_divergence, "bold yellow", limit=SHORT) if d.first_divergence
                 else Text("none", style="green"))
    if d.outputs_equal:
        head.add_row("output", Group(Text("equal", style="green"),
                                     safe(to_text(d.output_a, indent=2))))
    else:
        head.add_row("output A", safe(to_text(d.output_a, indent=2)))
        head.add_row("output B", safe(to_text(d.output_b, indent=2)))
    title = "same steps and output" if d.identical else "runs differ"
    parts: list[Any] = [Panel(head, title=title, title_align="left", expand=False,
                              border_style="green" if d.identical else "yellow")]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, title="steps",
                  title_justify="left", padding=(0, 1, 0, 0))
    table.add_column("step", overflow="fold", max_width=40)
    table.add_column("", no_wrap=True)
    table.add_column("A", overflow="fold", ratio=1)
    table.add_column("B", overflow="fold", ratio=1)
    for s in d.steps:
        label, style = _STEP_STYLE[s.status]
        b = (Text("(same)", style="dim") if s.status == "same"
             else safe(s.b or "", limit=None))
        table.add_row(safe(s.key, limit=SHORT), Text(label, style=style),
                      safe(s.a or "", limit=None), b)
    parts.append(table)
    parts.append(_totals_table(d))
    return parts


def _fork_text(name: str, fork: dict[str, Any]) -> str:
    other = "A" if name == "B" else "B"
    text = f"{name} forks {other} at step {fork.get('at')} · model {fork.get('model')}"
    if fork.get("instructions_changed"):
        text += " · new instructions"
    return text


def _totals_table(d: RunDiff) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, title="totals",
                  title_justify="left", padding=(0, 2, 0, 0))
    table.add_column("")
    table.add_column("A", justify="right")
    table.add_column("B", justify="right")
    table.add_column("B − A", justify="right")
    a, b, delta = d.totals_a, d.totals_b, d.deltas()
    table.add_row("steps", f"{a.steps:,}", f"{b.steps:,}", f"{delta['steps']:+,}")
    table.add_row("tokens", f"{a.tokens:,}", f"{b.tokens:,}", f"{delta['tokens']:+,}")
    table.add_row("cost", f"${a.cost_usd:.4f}", f"${b.cost_usd:.4f}",
                  f"{'+' if delta['cost_usd'] >= 0 else '-'}${abs(delta['cost_usd']):.4f}")
    return table


# --------------------------------------------------------------------------- export/import


def runs_export(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Argument(
        metavar="RUN_ID", help="The run to export (not with --as-dataset).")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE",
        help="Write to FILE instead of standard output.")] = None,
    unmasked: Annotated[bool, typer.Option(
        "--unmasked", help="Export the run as stored, personal data in clear, for a "
                           "faithful copy: to move it to another store, or to replay it "
                           "from the file.")] = False,
    as_dataset: Annotated[str | None, typer.Option(
        "--as-dataset", metavar="FILE",
        help="Write the runs the filters pick as an evaluation dataset (JSONL, one case a "
             "line; '-' for standard output) instead of one run.")] = None,
    agent: Annotated[str | None, typer.Option(
        "--agent", help="--as-dataset: only this agent's runs.")] = None,
    status: Annotated[str | None, typer.Option(
        "--status", help="--as-dataset: only runs with this status.")] = None,
    escalated: Annotated[bool, typer.Option(
        "--escalated", help="--as-dataset: only runs that escalated to a person.")] = False,
    approval: Annotated[bool, typer.Option(
        "--approval", help="--as-dataset: only runs that asked for an approval.")] = False,
    feedback: Annotated[str | None, typer.Option(
        "--feedback", metavar="negative|positive",
        help="--as-dataset: only runs with negative (or positive) user feedback.")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", metavar="WHEN",
        help="--as-dataset: runs created since WHEN (30m, 24h, 7d, or an ISO date).")
    ] = None,
    tenant: Annotated[str | None, typer.Option(
        "--tenant", metavar="TENANT", help="--as-dataset: only this tenant's runs.")] = None,
    limit: Annotated[int, typer.Option(
        "--limit", min=1, max=MAX_HARVEST,
        help="--as-dataset: at most this many cases (newest runs first).")] = 1000,
    no_redact: Annotated[bool, typer.Option(
        "--no-redact", help="--as-dataset: keep personal data in clear (masked by "
                            "default).")] = False,
    store: StoreOption = None,
) -> None:
    """Write a run and its journal as JSON (for keel runs import, or keel replay --file), or
    with --as-dataset FILE the runs the filters pick as dataset cases for keel eval.

    Personal data and secrets are masked as the data policy says for exports
    ($KEEL_DATA_POLICY; by default personal data and secrets are masked). A masked export
    reads well but does not replay or resume: the model's recorded inputs held the real
    values. Use --unmasked for a copy that does."""
    screen = Screen()
    with reported(screen):
        filters = {"--agent": agent, "--status": status, "--escalated": escalated,
                   "--approval": approval, "--feedback": feedback, "--since": since,
                   "--tenant": tenant, "--no-redact": no_redact,
                   "--limit": None if limit == 1000 else limit}
        if as_dataset is not None:
            if run_id is not None or output is not None or unmasked:
                raise CliError("--as-dataset FILE exports the runs the filters pick: give "
                               "no RUN_ID, -o or --unmasked with it.")
            export_dataset(screen, store_url(ctx, store), as_dataset, dataset_filter(
                filters, time.time()), redact=not no_redact)
            return
        given = [name for name, value in filters.items() if value not in (None, False)]
        if given:
            raise CliError(f"{', '.join(given)} only go with --as-dataset FILE (an export of "
                           "one run takes RUN_ID).")
        if run_id is None:
            raise CliError("give the RUN_ID to export, or --as-dataset FILE with filters.")
        data = asyncio.run(_export(store_url(ctx, store), run_id, unmasked))
        text = dump_export(data)
        if output is None or str(output) == "-":
            typer.echo(text)
            return
        try:
            output.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot write {output} ({exc.strerror}); give -o a writable file "
                           "path.") from None
        screen.note(f"exported run {run_id} ({len(data['journal'])} journal entries) to "
                    f"{output}", style="green")


async def _export(url: str, run_id: str, unmasked: bool) -> dict[str, Any]:
    async with _reading(url, run_id) as opened:
        data = await export_run(run_id, store=opened)
        return data if unmasked else scrubbed_export(data, await opened.get_run(run_id))


def runs_import(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(
        metavar="FILE", help="An export from keel runs export; '-' reads standard input.")],
    new_id: Annotated[bool, typer.Option(
        "--new-id", help="Store the run under a new id (the original is kept in its "
                         "metadata as imported_from).")] = False,
    store: StoreOption = None,
) -> None:
    """Import an exported run into the store.

    Refuses a run id that exists (unless --new-id), a file from a newer keel and malformed
    files, changing nothing."""
    screen = Screen()
    with reported(screen):
        raw = sys.stdin.buffer.read(MAX_EXPORT_BYTES + 1) if file == "-" else read_file(
            Path(file))
        data = parse_export(raw)
        url = store_url(ctx, store)
        run_id = asyncio.run(_import(url, data, new_id))
        line = Text("imported run ")
        line.append_text(safe(run_id, "bold", limit=SHORT))
        line.append(f" ({len(data.get('journal') or [])} journal entries) into ")
        line.append_text(safe(url, limit=SHORT))
        screen.line(line)


async def _import(url: str, data: dict[str, Any], new_id: bool) -> str:
    opened = open_store(url)
    if isinstance(opened, MemoryStore):
        raise CliError(f"the {url!r} store keeps nothing after this command; import into a "
                       "file store: --store sqlite:///path/runs.db.")
    async with opened:
        return await import_run(data, store=opened, new_id=new_id)


def read_file(path: Path) -> bytes:
    """An export file's bytes (at most one byte over the size limit, which parse_export
    then refuses)."""
    try:
        with path.open("rb") as f:
            return f.read(MAX_EXPORT_BYTES + 1)
    except IsADirectoryError:
        raise CliError(f"{path} is a directory; give the path to an export file.") from None
    except OSError as exc:
        raise CliError(f"cannot read {path} ({exc.strerror}).") from None


# --------------------------------------------------------------------------------- helpers


class _reading:
    """The store at ``url`` for reading (RunNotFound if there is no store file yet)."""

    def __init__(self, url: str, run_id: str) -> None:
        self._url = url
        self._run_id = run_id
        self._store: RunStore | None = None

    async def __aenter__(self) -> RunStore:
        store = open_existing(self._url)
        if store is None:
            raise RunNotFound(f"no run {self._run_id!r}: there is no run store at {self._url} "
                              "yet. Pass --store (or set KEEL_STORE) to the store the run was "
                              "written to.")
        self._store = store
        return store

    async def __aexit__(self, *exc: object) -> None:
        if self._store is not None:
            await self._store.close()

