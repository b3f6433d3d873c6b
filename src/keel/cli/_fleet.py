"""``keel runs cancel``, ``keel runs resolve`` and ``keel worker``: the fleet commands."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Annotated, Any

import typer

from keel.cli._commands import json_step_logs, open_existing
from keel.cli._errors import CliError, reported
from keel.cli._load import Runnable, load_agent
from keel.cli._observe import ObserveOptions, observing
from keel.cli._options import ByOption, JsonOption, LogJsonOption, StoreOption, store_url
from keel.cli._temporal import (
    AddressOption,
    NamespaceOption,
    QueueOption,
    TemporalOption,
    TemporalOptions,
    temporal_worker_command,
)
from keel.cli._text import Screen, safe, to_json
from keel.core import RunNotFound
from keel.runtime import Worker, cancel_run, resolve_unknown_outcome, worker_id
from keel.store import TERMINAL_STATUSES, open_store


def _who() -> str:
    return os.environ.get("USER") or os.environ.get("USERNAME") or "cli"


async def _cancel(url: str, run_id: str, reason: str, wait: float) -> tuple[str, str]:
    store = open_existing(url)
    if store is None:
        raise RunNotFound(f"no run {run_id!r}: there is no run store at {url} yet.")
    async with store:
        record = await store.get_run(run_id)
        agent: Runnable | None = None
        if record.target:
            try:
                agent = load_agent(record.target)[0]
            except Exception:  # the hooks are a courtesy; cancelling must still work
                agent = None
        outcome = await cancel_run(run_id, store=store, reason=reason, by=_who(), agent=agent)
        deadline = time.monotonic() + wait
        while outcome == "requested" and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            if (await store.get_run(run_id)).status in TERMINAL_STATUSES:
                outcome = "cancelled"
        return outcome, (await store.get_run(run_id)).status


def cancel_command(screen: Screen, *, store: str, run_id: str, reason: str, wait: float,
                   as_json: bool) -> None:
    with reported(screen):
        if wait < 0:
            raise CliError("--wait must be 0 or more seconds.")
        outcome, status = asyncio.run(_cancel(store, run_id, reason, wait))
        if as_json:
            typer.echo(to_json({"run_id": run_id, "outcome": outcome, "status": status}))
            return
        if outcome == "cancelled" or status == "cancelled":
            screen.out.print(safe(f"run {run_id} is cancelled."))
        elif status in TERMINAL_STATUSES:
            screen.out.print(safe(f"run {run_id} ended as {status} before the cancel took "
                                  "effect."))
        else:
            screen.out.print(safe(f"run {run_id} is being continued by a worker; it was asked "
                                  "to stop and will within a few seconds (`keel runs show "
                                  f"{run_id}`)."))


async def _resolve(url: str, run_id: str, *, outcome: str, result: Any, comment: str | None,
                   step: str | None, by: str) -> str:
    store = open_existing(url)
    if store is None:
        raise RunNotFound(f"no run {run_id!r}: there is no run store at {url} yet.")
    async with store:
        entry = await resolve_unknown_outcome(
            store, run_id, outcome=outcome,  # type: ignore[arg-type]  # checked by the callee
            by=by, result=result, comment=comment, step_key=step)
    return entry.key


def resolve_command(screen: Screen, *, store: str, run_id: str, outcome: str,
                    result: str | None, comment: str | None, step: str | None, by: str | None,
                    as_json: bool) -> None:
    with reported(screen):
        if outcome not in ("succeeded", "failed"):
            raise CliError(f"--outcome must be succeeded or failed, not {outcome!r}.")
        if result is not None and outcome == "failed":
            raise CliError("--result is what a call that succeeded returned; leave it out "
                           "with --outcome failed (say why with --comment).")
        value: Any = None
        if result is not None:
            try:
                value = json.loads(result)
            except ValueError as exc:
                raise CliError(f"--result is not valid JSON ({exc}); quote a string as "
                               """'"text"'.""") from None
        who = by or _who()
        key = asyncio.run(_resolve(store, run_id, outcome=outcome, result=value,
                                   comment=comment, step=step, by=who))
        if as_json:
            typer.echo(to_json({"run_id": run_id, "step_key": key, "outcome": outcome,
                                "by": who}))
            return
        screen.out.print(safe(f"step {key} of run {run_id} is recorded as {outcome} (by {who}); "
                              f"`keel resume {run_id}` continues the run without running it "
                              "again."))


async def _work(url: str, targets: list[str], concurrency: int, once: bool,
                screen: Screen, observe: ObserveOptions | None = None) -> int:
    agents = [load_agent(t)[0] for t in targets]
    names = [a.name for a in agents]
    if len(set(names)) != len(names):
        raise CliError(f"two targets give agents with the same name ({', '.join(names)}); "
                       "a worker tells runs apart by agent name.")
    async with open_store(url) as store, observing(store, observe or ObserveOptions(), screen):
        worker = Worker(agents, store=store, concurrency=concurrency)
        screen.out.print(safe(f"worker {worker_id()} on {url}: agents {', '.join(names)}", "dim"))
        if once:
            outcomes = await worker.run_until_idle()
            for o in outcomes:
                line = f"{o.run_id} {o.agent}: {o.status}" + (f" ({o.error})" if o.error else "")
                screen.out.print(safe(line))
            screen.out.print(safe(f"{len(outcomes)} run(s) continued; nothing runnable left.",
                                  "dim"))
            return len(outcomes)
        await worker.serve()
    return 0


def worker_command(screen: Screen, *, store: str, targets: list[str], concurrency: int,
                   once: bool, log_json: str | None,
                   observe: ObserveOptions | None = None) -> None:
    with reported(screen), json_step_logs(log_json):
        if concurrency < 1:
            raise CliError("--concurrency must be at least 1.")
        asyncio.run(_work(store, targets, concurrency, once, screen, observe))


def register(runs_app: typer.Typer, app: typer.Typer) -> None:
    """Add ``keel runs cancel``, ``keel runs resolve`` and ``keel worker`` to ``keel``."""
    @runs_app.command("cancel")
    def runs_cancel(
        ctx: typer.Context,
        run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run to stop.")],
        reason: Annotated[str, typer.Option("--reason", help="Why (kept in the journal).")]
        = "cancelled from the command line",
        wait: Annotated[float, typer.Option(
            "--wait", help="Seconds to wait for a live worker to stop the run.")] = 10.0,
        as_json: JsonOption = False,
        store: StoreOption = None,
    ) -> None:
        """Cancel a running or suspended run; the stop and who asked are journaled.

        The run's end hooks run; a run a worker is continuing is stopped by that worker."""
        cancel_command(Screen(), store=store_url(ctx, store), run_id=run_id, reason=reason,
                       wait=wait, as_json=as_json)

    @runs_app.command("resolve")
    def runs_resolve(
        ctx: typer.Context,
        run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run to resolve.")],
        outcome: Annotated[str, typer.Option(
            "--outcome", metavar="succeeded|failed",
            help="What you found in the outside system: the call took effect, or it did not.")],
        result: Annotated[str | None, typer.Option(
            "--result", metavar="JSON",
            help="With succeeded: what the call returned, as JSON (the model sees it).")]
        = None,
        comment: Annotated[str | None, typer.Option(
            "--comment", help="Why (kept in the journal; with failed, the model sees it).")]
        = None,
        step: Annotated[str | None, typer.Option(
            "--step", metavar="STEP_KEY",
            help="The step to resolve; needed only if the run has several unresolved steps.")]
        = None,
        by: ByOption = None,
        as_json: JsonOption = False,
        store: StoreOption = None,
    ) -> None:
        """Record whether a step with an unknown outcome took effect, so the run can resume.

        For a run stopped by UnknownOutcome: a non-idempotent tool started but its result was
        never recorded. Check the outside system, record what you found (journaled with who
        decided), then `keel resume RUN_ID`: the step replays and is never run again."""
        resolve_command(Screen(), store=store_url(ctx, store), run_id=run_id, outcome=outcome,
                        result=result, comment=comment, step=step, by=by, as_json=as_json)

    _register_worker(app)


def _register_worker(app: typer.Typer) -> None:
    """Add ``keel worker`` to ``keel``."""
    @app.command("worker")
    def worker(
        ctx: typer.Context,
        targets: Annotated[list[str], typer.Argument(
            metavar="MODULE:AGENT...", help="The agents whose runs this worker continues.")],
        concurrency: Annotated[int, typer.Option("--concurrency",
                                                 help="Runs continued at once.")] = 8,
        once: Annotated[bool, typer.Option(
            "--once", help="Continue what is runnable now, then exit.")] = False,
        log_json: LogJsonOption = None,
        store: StoreOption = None,
        metrics_port: Annotated[int | None, typer.Option(
            "--metrics-port", help="Serve Prometheus /metrics on this port (0: any free one). "
            "Several worker processes: set PROMETHEUS_MULTIPROC_DIR.")] = None,
        metrics_host: Annotated[str, typer.Option(
            "--metrics-host", help="The address /metrics listens on.")] = "127.0.0.1",
        alerts: Annotated[str | None, typer.Option(
            "--alerts", metavar="MODULE:RULES",
            help="Fleet alert rules (a list of keel.observe rules, or a FleetAlerts).")] = None,
        alert_webhook: Annotated[str | None, typer.Option(
            "--alert-webhook", help="POST each alert as JSON to this URL.")] = None,
        alert_interval: Annotated[float, typer.Option(
            "--alert-interval", help="Seconds between alert evaluations.")] = 30.0,
        temporal: TemporalOption = False,
        temporal_address: AddressOption = None,
        namespace: NamespaceOption = None,
        task_queue: QueueOption = None,
    ) -> None:
        """Continue the runnable runs of a shared store, as many workers as you like.

        Runnable: approved or answered runs, and runs whose worker died (a dead worker on this
        host at once, one elsewhere when its lease expires). Leases make sure no two workers
        continue the same run.

        With --temporal it is a Temporal worker instead: it executes the keel.run workflows
        and their steps (activities) of the task queue for these agents, into --store; keel's
        own workers never take those runs. --concurrency is then how many steps run at once."""
        observe = ObserveOptions(metrics_port=metrics_port, metrics_host=metrics_host,
                                 alerts=alerts, alert_webhook=alert_webhook,
                                 alert_interval=alert_interval)
        opts = TemporalOptions(temporal, temporal_address, namespace, task_queue)
        if opts != TemporalOptions():
            temporal_worker_command(Screen(), store=store_url(ctx, store), targets=targets,
                                    concurrency=concurrency, once=once, log_json=log_json,
                                    opts=opts, observe=observe)
            return
        worker_command(Screen(), store=store_url(ctx, store), targets=targets,
                       concurrency=concurrency, once=once, log_json=log_json, observe=observe)
