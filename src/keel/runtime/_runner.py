"""Run lifecycle: create or load the run record, drive the loop, record the outcome."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pydantic

from keel.core import (
    KeelError,
    RunError,
    RunEvent,
    RunFinished,
    RunStarted,
    Signal,
    StoreError,
    new_run_id,
)
from keel.core._redact import redact
from keel.runtime._budget import BudgetTracker
from keel.runtime._journal import Journal
from keel.runtime._loop import AgentLoop, model_name
from keel.runtime._middleware import RunEndInput, RunStartInput
from keel.runtime._result import RunResult
from keel.store import RunRecord, RunStore, open_store

if TYPE_CHECKING:
    from keel.runtime._agent import Agent

DEFAULT_STORE_URL = "sqlite:///.keel/runs.db"


def default_store_url() -> str:
    """``KEEL_STORE`` if set, else ``.keel/runs.db`` under the working directory."""
    return os.environ.get("KEEL_STORE") or DEFAULT_STORE_URL


class using_store:
    """The given store, or one opened from a URL / the default and closed afterwards.

    A plain class rather than ``@asynccontextmanager``: this runs once per run, and an async
    generator costs a registration with the event loop each time."""

    __slots__ = ("_opened", "_store")

    def __init__(self, store: RunStore | str | None) -> None:
        self._store = store
        self._opened: RunStore | None = None

    async def __aenter__(self) -> RunStore:
        if isinstance(self._store, RunStore):
            return self._store
        self._opened = open_store(self._store or default_store_url())
        return self._opened

    async def __aexit__(self, *exc: object) -> None:
        if self._opened is not None:
            await self._opened.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class Launch:
    """How to start one execution: a new run (``input``) or a resume (``resume_id``)."""

    input: str | None = None
    resume_id: str | None = None
    run_id: str | None = None
    deps: Any = None
    target: str | None = None
    emit: Callable[[RunEvent], None] | None = None
    streaming: bool = False


async def execute(agent: Agent[Any], store: RunStore, launch: Launch) -> RunResult[Any]:
    agent.resolved_model()  # fail on a bad id or a missing key before anything is written
    record, entries = await _open_run(agent, store, launch)
    tracker = BudgetTracker(agent.budget)
    fork = record.metadata.get("fork") if isinstance(record.metadata, dict) else None
    trusted = fork.get("trusted_seq", -1) if isinstance(fork, dict) else -1
    journal = Journal(store, record.run_id, agent.name, entries, tracker,
                      trusted_seq=trusted if isinstance(trusted, int) else -1)
    loop = AgentLoop(agent, journal, deps=launch.deps, emit=launch.emit,
                     streaming=launch.streaming)
    resumed = launch.resume_id is not None
    if launch.emit is not None:
        launch.emit(RunStarted(run_id=record.run_id, agent=agent.name, resumed=resumed))
    await agent.stack.run_start(RunStartInput(run_id=record.run_id, agent=agent.name,
                                              input=record.input, resumed=resumed))
    try:
        result = await loop.run(str(record.input))
    except BaseException as exc:
        await _record_failure(store, record, tracker, journal, exc)
        await agent.stack.run_end(RunEndInput(run_id=record.run_id, agent=agent.name,
                                              status=_status_for(exc), output=None, error=exc))
        raise
    await store.finish_run(record.with_status(
        "completed", output=_jsonable(result.output), updated_at=time.time(),
        usage=_totals(tracker), error=None), journal.take_pending())
    await agent.stack.run_end(RunEndInput(run_id=record.run_id, agent=agent.name,
                                          status="completed", output=result.output, error=None))
    if launch.emit is not None:
        launch.emit(RunFinished(run_id=record.run_id, status="completed", result=result))
    return result


async def _open_run(agent: Agent[Any], store: RunStore,
                    launch: Launch) -> tuple[RunRecord, list[Any]]:
    if launch.resume_id is None:
        now = time.time()
        record = RunRecord(run_id=launch.run_id or new_run_id(), agent=agent.name,
                           status="running", input=launch.input, created_at=now, updated_at=now,
                           target=launch.target, metadata={"model": model_name(agent)})
        await store.create_run(record)
        return record, []
    record = await store.get_run(launch.resume_id)
    if record.agent != agent.name:
        raise StoreError(
            f"run {record.run_id} belongs to agent {record.agent!r}, not {agent.name!r}; resume "
            "it with the agent that started it.")
    if record.status == "completed":
        raise StoreError(
            f"run {record.run_id} already completed; nothing to resume. `keel runs show "
            f"{record.run_id}` prints its journal.")
    entries = await store.read_journal(record.run_id)
    record = record.with_status("running", updated_at=time.time(), error=None)
    await store.update_run(record)
    return record, entries


def _status_for(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        return "cancelled"
    if isinstance(exc, Signal):
        return "suspended"
    return "failed"


def _totals(tracker: BudgetTracker) -> dict[str, Any]:
    return {**tracker.usage.to_dict(), "steps": tracker.steps}


async def _record_failure(store: RunStore, record: RunRecord, tracker: BudgetTracker,
                          journal: Journal, exc: BaseException) -> None:
    """Mark the run failed, cancelled or suspended, committing its deferred records with the
    status; a failing store must not hide the run's own error."""
    if isinstance(exc, RunError) and exc.run_id is None:
        exc.run_id = record.run_id
    error = {"type": type(exc).__name__, "message": redact(getattr(exc, "message", str(exc))),
             "step_key": getattr(exc, "step_key", None),
             "retryable": bool(getattr(exc, "retryable", False))}
    if not isinstance(exc, KeelError | asyncio.CancelledError | KeyboardInterrupt):
        error["message"] = redact(f"{type(exc).__name__}: {exc}")
    status = _status_for(exc)
    try:
        await asyncio.shield(store.finish_run(record.with_status(
            status, error=error, updated_at=time.time(),  # type: ignore[arg-type]
            usage=_totals(tracker)), journal.take_pending()))
    except Exception:  # the original failure matters more than a failed status write
        return


_PLAIN = frozenset({str, int, float, bool, type(None)})


def _jsonable(value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    try:
        return _adapter(type(value)).dump_python(value, mode="json")
    except (pydantic.PydanticSchemaGenerationError, TypeError, ValueError):
        return str(value)


_ADAPTERS: dict[type[Any], pydantic.TypeAdapter[Any]] = {}


def _adapter(kind: type[Any]) -> pydantic.TypeAdapter[Any]:
    adapter = _ADAPTERS.get(kind)
    if adapter is None:
        if len(_ADAPTERS) > 256:
            _ADAPTERS.clear()
        adapter = _ADAPTERS[kind] = pydantic.TypeAdapter(kind)
    return adapter
