"""Engines other than keel's own workers that drive runs (keel.temporal): after a person
decides something a run waits for, or a run is cancelled, its engine is told at once.

A run driven by another engine says so in its metadata (``metadata["engine"]``, see
:data:`keel.store.ENGINE_KEY`). :func:`decide_approval`, :func:`resolve_escalation` and
:func:`cancel_run` (what the CLI, the HTTP server and Python code all call) end with
:func:`notify_engine`, which calls the notifier registered for that engine. The notice is an
optimisation: the engine also polls the run store, so a notice that fails (the engine's
server is down, the notifier is not installed) is logged and changes nothing.

Nothing is registered by importing keel. ``keel.temporal`` registers itself when a worker or
client of it is created; the CLI and the server register it by name, so that the module (and
its dependencies) is imported only when a decided run is a Temporal run.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable

from keel.core import KeelError
from keel.store import ENGINE_KEY, RunRecord, RunStore

_log = logging.getLogger("keel.engines")

#: Told that a run it drives may go on (or ended): gets the run's record.
Notifier = Callable[[RunRecord], Awaitable[None]]
#: How long a notice may take before it is given up (the engine's poll still sees it).
NOTIFY_TIMEOUT_S = 5.0

_NOTIFIERS: dict[str, Notifier | str] = {}


def register_engine(name: str, notifier: Notifier | str) -> None:
    """Call ``notifier`` for runs whose metadata names engine ``name`` after a decision or a
    cancel. ``notifier`` may be a ``"module:function"`` path, imported on first use."""
    _NOTIFIERS[name] = notifier


def _resolve(name: str) -> Notifier | None:
    entry = _NOTIFIERS.get(name)
    if not isinstance(entry, str):
        return entry
    module, _, attr = entry.partition(":")
    try:
        found: Notifier = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        _log.warning("engine %s: cannot load its notifier %s (%s); its runs go on at its "
                     "next poll", name, entry, exc)
        return None
    _NOTIFIERS[name] = found
    return found


async def notify_engine(store: RunStore, run_id: str) -> bool:
    """Tell the engine that drives run ``run_id`` (if another engine does) that the run may
    go on; True if a notice was sent. Never raises: the engine's poll is the guarantee."""
    if not _NOTIFIERS:  # nothing registered: not even a read
        return False
    try:
        record = await store.get_run(run_id)
    except KeelError:
        return False
    engine = record.metadata.get(ENGINE_KEY)
    if not isinstance(engine, str):
        return False
    notifier = _resolve(engine)
    if notifier is None:
        return False
    try:
        await asyncio.wait_for(notifier(record), NOTIFY_TIMEOUT_S)
    except Exception as exc:  # the decision is recorded; the engine's poll will see it
        _log.warning("run %s: could not notify its engine %s (%s: %s); it goes on at the "
                     "engine's next poll", run_id, engine, type(exc).__name__, exc,
                     extra={"run_id": run_id})
        return False
    return True
