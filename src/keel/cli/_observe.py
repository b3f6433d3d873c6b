"""What ``keel worker`` serves and watches besides runs: ``/metrics`` and the fleet alerts.

``--metrics-port`` serves the Prometheus endpoint (loopback unless ``--metrics-host`` says
otherwise); ``--alerts MODULE:ATTR`` loads a list of rules (or a ``FleetAlerts``) that a
background tick evaluates every ``--alert-interval`` seconds, after refreshing the gauges of
approvals and escalations waiting from the store. ``--alert-webhook URL`` sends the alerts
there (keel.guard's WebhookNotifier, retried with back-off); they always go to the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.cli._errors import CliError
from keel.cli._load import is_path, load_file, load_module, split_target
from keel.cli._text import Screen, safe
from keel.core import ConfigError
from keel.observe import (
    FleetAlerts,
    Rule,
    mark_process_dead,
    refresh_human_tasks,
    serve_metrics,
)
from keel.store import RunStore

_log = logging.getLogger("keel.observe")


@dataclass(frozen=True, slots=True, kw_only=True)
class ObserveOptions:
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    alerts: str | None = None
    alert_webhook: str | None = None
    alert_interval: float = 30.0


def load_alerts(target: str, webhook: str | None) -> FleetAlerts:
    """The ``FleetAlerts`` at ``MODULE:ATTR`` (or made from the list of rules there)."""
    module_ref, attr = split_target(target)
    module = load_file(Path(module_ref).expanduser().resolve()) if is_path(module_ref) \
        else load_module(module_ref)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CliError(f"{module_ref} has no attribute {attr!r}: point --alerts at a list "
                           "of rules or a keel.observe.FleetAlerts")
        obj = getattr(obj, part)
    notifier = None
    if webhook is not None:
        from keel.guard import WebhookNotifier

        notifier = WebhookNotifier(webhook)
    if isinstance(obj, FleetAlerts):
        if notifier is not None:
            obj.notifier = notifier
        return obj
    if isinstance(obj, list | tuple) and all(isinstance(r, Rule) for r in obj):
        return FleetAlerts(obj, notifier=notifier)
    raise CliError(f"{target} is a {type(obj).__name__}, not a list of rules or a "
                   "keel.observe.FleetAlerts")


async def _tick(store: RunStore, alerts: FleetAlerts | None, interval: float) -> None:
    while True:
        try:
            await refresh_human_tasks(store)
            if alerts is not None:
                await alerts.evaluate()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed tick must not stop the worker
            _log.warning("metrics/alerts tick failed (%s: %s); trying again in %gs",
                         type(exc).__name__, exc, interval)
        await asyncio.sleep(interval)


@asynccontextmanager
async def observing(store: RunStore, opts: ObserveOptions,
                    screen: Screen) -> AsyncIterator[None]:
    """Serve ``/metrics`` and run the alert tick for as long as the worker runs."""
    if opts.alert_webhook is not None and opts.alerts is None:
        raise CliError("--alert-webhook needs --alerts MODULE:RULES (the rules to send)")
    if not 0 < opts.alert_interval <= 86_400:
        raise CliError(f"--alert-interval must be seconds in (0, 86400], not "
                       f"{opts.alert_interval!r}")
    try:
        alerts = load_alerts(opts.alerts, opts.alert_webhook) if opts.alerts else None
        server = (serve_metrics(opts.metrics_port, opts.metrics_host)
                  if opts.metrics_port is not None else None)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if server is not None:
        screen.out.print(safe(f"metrics on {server.url}", "dim"))
    task = None
    if server is not None or alerts is not None:
        task = asyncio.get_running_loop().create_task(_tick(store, alerts, opts.alert_interval))
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if alerts is not None:
            await alerts.drain(5.0)
        if server is not None:
            server.close()
        mark_process_dead()
