"""What ``keel run``, ``keel resume`` and ``keel runs list|show`` do (the typer wiring is in
``_app``). Each opens the store once, for the whole command, and closes it."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

import typer

from keel.cli._errors import CliError, reported
from keel.cli._load import Runnable, load_agent, structured
from keel.cli._plan_render import plan_tables, plans_json
from keel.cli._render import LiveView, result_json, summary_panel
from keel.cli._scrub import data_policy, scrubbed_export
from keel.cli._text import Screen, safe, to_json
from keel.cli._timeline import error_panel, record_json, record_panel, runs_table, timeline_table
from keel.core import RunNotFound, configure_json_logging
from keel.runtime import RunResult
from keel.store import (
    ENGINE_KEY,
    JournalEntry,
    MemoryStore,
    RunFilter,
    RunRecord,
    RunStore,
    check_id,
    check_status,
    open_store,
)


def read_input(value: str) -> str:
    """The run's input: the argument itself, or standard input for ``-``."""
    return sys.stdin.read() if value == "-" else value


@contextmanager
def json_step_logs(path: str | None) -> Iterator[None]:
    """While running, write keel's structured step logs as JSON lines to ``path`` (appended;
    ``-`` for stderr)."""
    if path is None:
        yield
        return
    logger = logging.getLogger("keel")
    with ExitStack() as stack:
        if path == "-":
            stream: IO[str] = sys.stderr
        else:
            try:
                stream = stack.enter_context(Path(path).open("a", encoding="utf-8"))
            except OSError as exc:
                raise CliError(f"cannot write the step log {path} ({exc.strerror}); give "
                               "--log-json a writable file path.") from None
        level = logger.level
        handler = configure_json_logging(stream, scrub=data_policy().log_scrubber())

        def detach() -> None:
            logger.removeHandler(handler)
            logger.setLevel(level)
            handler.flush()

        stack.callback(detach)
        yield


def _print_result(screen: Screen, result: RunResult[Any], as_json: bool) -> None:
    if as_json:
        typer.echo(to_json(result_json(result)))
    else:
        screen.out.print(summary_panel(result))


# --------------------------------------------------------------------------------- run


def run_command(screen: Screen, *, store: str, target: str, text: str, as_json: bool,
                log_json: str | None, tenant: str | None = None,
                user: str | None = None, conversation: str | None = None) -> None:
    view = LiveView(screen, quiet=as_json)
    with reported(screen, run_id=lambda: view.run_id, as_json=as_json):
        owner = {k: check_id(k, v) for k, v in (("tenant", tenant), ("user", user),
                                                 ("conversation", conversation))
                 if v is not None}  # refused before the agent is loaded or the store opened
        agent, canonical = load_agent(target)
        view.structured = structured(agent)
        with json_step_logs(log_json):
            result = asyncio.run(_run(agent, text, store, canonical, view, owner))
        _print_result(screen, result, as_json)


async def _run(agent: Runnable, text: str, url: str, target: str,
               view: LiveView, owner: dict[str, str]) -> RunResult[Any]:
    agent.prepare()  # an unknown model, a missing key or a blank input fails before the
    agent.check_input(text)  # store is opened (and created)
    async with open_store(url) as store:
        return await agent.run(text, store=store, target=target, on_event=view,
                               tenant=owner.get("tenant"), user=owner.get("user"),
                               conversation=owner.get("conversation"))


# ------------------------------------------------------------------------------ resume


def resume_command(screen: Screen, *, store: str, run_id: str, as_json: bool,
                   log_json: str | None) -> None:
    view = LiveView(screen, quiet=as_json)
    view.run_id = run_id
    with reported(screen, run_id=lambda: view.run_id, as_json=as_json):
        record, entries = asyncio.run(_read_run(store, run_id, journal=True))
        if record.target is None:
            raise CliError(
                f"run {run_id} was not started from the CLI, so keel does not know which agent "
                "to import; resume it from Python with the agent that started it: "
                f"`await agent.resume({run_id!r})`.")
        if record.status == "completed":
            raise CliError(f"run {run_id} already completed; nothing to resume. "
                           f"`keel runs show {run_id}` prints its journal.")
        engine = record.metadata.get(ENGINE_KEY)
        if engine is not None and record.status in ("running", "suspended"):
            raise CliError(f"run {run_id} is driven by {engine} (workflow "
                           f"{record.metadata.get('workflow_id', '?')}), which continues it; "
                           "decide what it waits for with `keel approvals` / `keel "
                           "escalations`, or stop it with `keel runs cancel`.")
        if record.status == "running" and not as_json:
            screen.note(f"note: run {run_id} is marked running but no live worker holds it "
                        "(its process stopped, or a decision made it runnable); continuing it "
                        "here.", style="dim")
        agent, _ = load_agent(record.target)
        view.structured = structured(agent)
        view.recorded = frozenset(e.key for e in entries if e.phase == "result")
        with json_step_logs(log_json):
            result = asyncio.run(_resume(agent, run_id, store, view))
        _print_result(screen, result, as_json)


async def _resume(agent: Runnable, run_id: str, url: str, view: LiveView) -> RunResult[Any]:
    agent.prepare()
    async with open_store(url) as store:
        return await agent.resume(run_id, store=store, on_event=view)


# -------------------------------------------------------------------------------- runs


def open_existing(url: str) -> RunStore | None:
    """The store at ``url`` for reading, or for writing to runs already in it; ``None`` if its
    file does not exist yet. It is opened with ``create=False``: these commands never create
    or initialise a store (an empty file, or a Postgres schema without keel tables, is
    refused, naming it)."""
    store = open_store(url, create=False)
    if isinstance(store, MemoryStore):
        raise CliError(
            f"the {url!r} store keeps runs only inside the process that made them, so another "
            "keel command cannot read them; use a file store: --store sqlite:///path/runs.db.")
    from keel.store import SQLiteStore

    if isinstance(store, SQLiteStore) and not store.path.exists():
        return None
    return store


async def _read_run(url: str, run_id: str, *,
                    journal: bool) -> tuple[RunRecord, list[JournalEntry]]:
    store = open_existing(url)
    if store is None:
        raise RunNotFound(f"no run {run_id!r}: there is no run store at {url} yet. Pass "
                          "--store (or set KEEL_STORE) to the store the run was written to.")
    async with store:
        record = await store.get_run(run_id)
        entries = await store.read_journal(run_id) if journal else []
    return record, entries


async def _list_runs(url: str, filt: RunFilter) -> list[RunRecord] | None:
    store = open_existing(url)
    if store is None:
        return None
    async with store:
        return await store.list_runs(filt)


def list_command(screen: Screen, *, store: str, status: str | None, agent: str | None,
                 limit: int, as_json: bool, tenant: str | None = None,
                 conversation: str | None = None) -> None:
    with reported(screen):
        filt = RunFilter(status=None if status is None else check_status(status), agent=agent,
                         tenant=tenant, conversation=conversation, limit=limit)
        records = asyncio.run(_list_runs(store, filt))
        if as_json:
            policy = data_policy()
            typer.echo(to_json([scrubbed_export(record_json(r), r, policy)
                                for r in records or []]))
            return
        if not records:
            where = "no run store there yet" if records is None else "none match"
            screen.out.print(safe(f"No runs in {store} ({where}). Start one with "
                                  '`keel run MODULE:AGENT "input"`.'))
            return
        screen.out.print(runs_table(records, screen.out.width))


def show_command(screen: Screen, *, store: str, run_id: str, as_json: bool) -> None:
    with reported(screen):
        record, entries = asyncio.run(_read_run(store, run_id, journal=True))
        if as_json:
            data = record_json(record, entries)
            if plans := plans_json(entries):
                data["plans"] = plans
            typer.echo(to_json(scrubbed_export(data, record)))
            return
        screen.out.print(record_panel(record))
        if entries:
            screen.out.print(timeline_table(entries))
        else:
            screen.out.print(safe("(the journal is empty: the run stopped before its first "
                                  "step)", "dim"))
        for table in plan_tables(entries):
            screen.out.print(table)
        failure = error_panel(record)
        if failure is not None:
            screen.out.print(failure)
