"""``keel worker --temporal`` and ``keel run --temporal``: runs on Temporal from the command
line (the typer wiring is in ``_app`` and ``_fleet``). keel.temporal (and temporalio) is
imported only by these commands."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.text import Text

from keel.cli._commands import _print_result, json_step_logs, open_existing
from keel.cli._errors import EXIT_INTERRUPTED, CliError, reported
from keel.cli._load import load_agent
from keel.cli._observe import ObserveOptions, observing
from keel.cli._text import SHORT, Screen, safe
from keel.cli._timeline import describe_entry
from keel.core import KeelError
from keel.store import check_id, open_store

DEFAULT_ADDRESS = "127.0.0.1:7233"

TemporalOption = Annotated[bool, typer.Option(
    "--temporal", help="On Temporal: runs are keel.run workflows, each step an activity "
    "(needs the temporal extra and a Temporal server).")]
AddressOption = Annotated[str | None, typer.Option(
    "--temporal-address", metavar="HOST:PORT",
    help=f"The Temporal server (with --temporal). Default: {DEFAULT_ADDRESS}.")]
NamespaceOption = Annotated[str | None, typer.Option(
    "--namespace", metavar="NAME", help="The Temporal namespace (with --temporal). "
    "Default: default.")]
QueueOption = Annotated[str | None, typer.Option(
    "--task-queue", metavar="NAME", help="The Temporal task queue (with --temporal). "
    "Default: keel.")]


@dataclass(frozen=True, slots=True)
class TemporalOptions:
    """Where runs on Temporal go: the ``--temporal*`` options of one command."""

    on: bool = False
    address: str | None = None
    namespace: str | None = None
    task_queue: str | None = None

    def checked(self) -> TemporalOptions:
        """The options, refused if a Temporal option is given without ``--temporal``."""
        given = [n for n, v in (("--temporal-address", self.address),
                                ("--namespace", self.namespace),
                                ("--task-queue", self.task_queue)) if v is not None]
        if given and not self.on:
            raise CliError(f"{', '.join(given)} only make sense with --temporal.")
        for name, value in (("--temporal-address", self.address), ("--namespace",
                            self.namespace), ("--task-queue", self.task_queue)):
            if value is not None and (not value.strip() or len(value) > 200
                                      or not value.isprintable()):
                raise CliError(f"{name} {value[:40]!r} is not a valid value.")
        return self

    @property
    def queue(self) -> str:
        return self.task_queue or "keel"


def _temporal() -> Any:
    try:
        import keel.temporal as temporal
    except ImportError as exc:
        raise CliError(f"--temporal needs the temporal extra: pip install "
                       f"'keel-agents[temporal]' ({exc})") from None
    return temporal


async def _connect(temporal: Any, opts: TemporalOptions) -> Any:
    return await temporal.connect(opts.address or DEFAULT_ADDRESS,
                                  namespace=opts.namespace or "default")


# ------------------------------------------------------------------------------- worker


def temporal_worker_command(screen: Screen, *, store: str, targets: list[str],
                            concurrency: int, once: bool, log_json: str | None,
                            opts: TemporalOptions,
                            observe: ObserveOptions | None = None) -> None:
    with reported(screen), json_step_logs(log_json):
        opts.checked()
        if once:
            raise CliError("--once is for keel's own workers; a Temporal worker serves its "
                           "task queue until it is stopped (Ctrl-C).")
        if concurrency < 1:
            raise CliError("--concurrency must be at least 1.")
        temporal = _temporal()
        loaded = [load_agent(t) for t in targets]
        names = [a.name for a, _ in loaded]
        if len(set(names)) != len(names):
            raise CliError(f"two targets give agents with the same name ({', '.join(names)}); "
                           "a worker tells runs apart by agent name.")
        try:
            asyncio.run(_serve(temporal, screen, store, loaded, concurrency, opts,
                               observe or ObserveOptions()))
        except KeyboardInterrupt:
            screen.note("stopped; runs in flight go on in another worker (Temporal retries "
                        "their step there).")
            raise typer.Exit(EXIT_INTERRUPTED) from None


async def _serve(temporal: Any, screen: Screen, url: str, loaded: list[tuple[Any, str]],
                 concurrency: int, opts: TemporalOptions, observe: ObserveOptions) -> None:
    client = await _connect(temporal, opts)
    async with open_store(url) as store, observing(store, observe, screen):
        worker = temporal.TemporalWorker(
            client, [a for a, _ in loaded], store=store, task_queue=opts.queue,
            max_concurrent_activities=concurrency, targets={a.name: t for a, t in loaded})
        screen.out.print(safe(f"temporal worker on {opts.address or DEFAULT_ADDRESS} "
                              f"(namespace {opts.namespace or 'default'}, task queue "
                              f"{opts.queue}), store {url}: agents "
                              f"{', '.join(a.name for a, _ in loaded)}", "dim"))
        await worker.run()


# ---------------------------------------------------------------------------------- run


def temporal_run_command(screen: Screen, *, target: str, text: str, as_json: bool,
                         log_json: str | None, tenant: str | None, user: str | None,
                         conversation: str | None, opts: TemporalOptions,
                         follow: str | None = None) -> None:
    """``follow``: the worker's store (``--store``), read while waiting to print each step
    as the worker records it."""
    started: list[str] = []
    with reported(screen, as_json=as_json), json_step_logs(log_json):
        opts.checked()
        owner = {k: check_id(k, v) for k, v in (("tenant", tenant), ("user", user),
                                                 ("conversation", conversation))
                 if v is not None}
        agent, _ = load_agent(target)  # a bad target fails here, before Temporal is asked
        agent.prepare()
        agent.check_input(text)
        temporal = _temporal()
        try:
            result = asyncio.run(_start_and_wait(
                temporal, screen, agent.name, text, owner, opts, started, quiet=as_json,
                follow=None if as_json else follow))
        except KeyboardInterrupt:
            if started:
                screen.note(f"stopped waiting; run {started[0]} goes on on Temporal "
                            f"(`keel runs show {started[0]}` with the worker's store).")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        _print_result(screen, result, as_json)


async def _start_and_wait(temporal: Any, screen: Screen, name: str, text: str,
                          owner: dict[str, str], opts: TemporalOptions, started: list[str],
                          *, quiet: bool, follow: str | None) -> Any:
    client = await _connect(temporal, opts)
    run_id = await temporal.start_run(client, name, text, task_queue=opts.queue,
                                      tenant=owner.get("tenant"), user=owner.get("user"),
                                      conversation=owner.get("conversation"))
    started.append(run_id)
    if not quiet:
        screen.note(f"run {run_id} started on Temporal (workflow "
                    f"{temporal.workflow_id_for(run_id)}, task queue {opts.queue}); waiting "
                    "for it to end (a run waiting for people goes on when they decide).",
                    style="dim")
    if follow is None:
        return await temporal.run_result(client, run_id)
    shown: set[tuple[int, str]] = set()
    watcher = asyncio.create_task(_follow(screen, follow, run_id, shown))
    try:
        return await temporal.run_result(client, run_id)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        with contextlib.suppress(KeelError):  # the last steps, recorded as it ended
            await _show_new(screen, follow, run_id, shown)


#: How often ``keel run --temporal --store`` reads the worker's store for new steps.
FOLLOW_EVERY_S = 0.5


async def _follow(screen: Screen, url: str, run_id: str, shown: set[tuple[int, str]]) -> None:
    while True:
        with contextlib.suppress(KeelError):  # not created yet, or a store hiccup
            await _show_new(screen, url, run_id, shown)
        await asyncio.sleep(FOLLOW_EVERY_S)


async def _show_new(screen: Screen, url: str, run_id: str,
                    shown: set[tuple[int, str]]) -> None:
    """Print the run's journal entries not printed yet, one line each."""
    store = open_existing(url)
    if store is None:
        return
    async with store:
        entries = await store.read_journal(run_id)
    for e in entries:
        if (e.seq, e.phase) in shown:
            continue
        shown.add((e.seq, e.phase))
        line = Text(f"{e.seq:>3} ", style="dim") + safe(e.key, limit=SHORT)
        line += Text(f" {e.phase} {e.kind} ", style="dim") + describe_entry(e)
        screen.line(line)
