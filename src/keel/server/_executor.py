"""Runs started over HTTP: executed in this process (the default) or left to ``keel worker``
processes sharing the store, and handed back on shutdown.

In ``"server"`` mode a new run starts as a task of this process at once, and a
:class:`keel.Worker` of the app's agents continues runnable runs (a decision arrived, a dead
worker's run). In ``"workers"`` mode the server only writes the run record (``running``, no
lease): the first ``keel worker`` of that agent to poll claims it, so the server stays thin.
Either way the events a client streams come from the journal (see ``_events``).

On shutdown the server stops taking runs, gives in-flight runs ``grace_s`` to finish, then
hands the rest back (:func:`keel.runtime.hand_back`): they stay ``running`` with no lease,
and a worker or the next server continues each from its journal. Nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any, Literal

from keel.core import (
    ApprovalRequired,
    Escalate,
    KeelError,
    RunFinished,
    RunStarted,
    StepRecorded,
    TextDelta,
    UserError,
    new_run_id,
)
from keel.runtime import RunResult, Worker, hand_back
from keel.server._errors import ApiError
from keel.server._events import Tails
from keel.store import RunRecord, RunStore

_log = logging.getLogger("keel.server")
Mode = Literal["server", "workers"]


class Executor:
    """Starts and continues the runs of the app's agents and flows."""

    def __init__(self, store: RunStore, agents: Mapping[str, Any], tails: Tails, *,
                 mode: Mode = "server", concurrency: int = 64, grace_s: float = 10.0,
                 poll_s: float = 0.5) -> None:
        self.store = store
        self.agents = dict(agents)
        self.tails = tails
        self.mode = mode
        self.grace_s = grace_s
        self.closing = False
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._stop = asyncio.Event()
        self._worker = Worker(self.agents.values(), store=store, concurrency=concurrency,
                              poll_seconds=poll_s, on_event=self._event
                              ) if mode == "server" and agents else None
        self._worker_task: asyncio.Task[None] | None = None

    def agent(self, name: str) -> Any:
        found = self.agents.get(name)
        if found is None:
            raise ApiError(404, "not_found", f"no agent or flow named {name[:80]!r} here")
        return found

    async def open(self) -> None:
        if self._worker is not None:
            self._worker_task = asyncio.create_task(self._worker.serve(stop=self._stop))

    # ------------------------------------------------------------------------ starting runs

    async def start(self, name: str, text: str, *, tenant: str, user: str | None,
                    conversation: str | None) -> str:
        """Start a run and return its id once its record is in the store."""
        if self.closing:
            raise ApiError(503, "shutting_down", "the server is shutting down; start the run "
                           "on another one", headers={"Retry-After": "5"})
        agent = self.agent(name)
        try:
            agent.check_input(text)
        except UserError as exc:
            raise ApiError(400, "invalid", str(exc)) from None
        run_id = new_run_id()
        options: dict[str, Any] = {"store": self.store, "run_id": run_id, "tenant": tenant}
        if user is not None:
            options["user"] = user
        if conversation is not None:
            options["conversation"] = conversation
        if self.mode == "workers":
            await self._queue(agent, run_id, text, tenant, user, conversation)
            return run_id
        started = asyncio.Event()
        task = asyncio.create_task(self._drive(agent, text, options, started))
        self._tasks[run_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(run_id, None))
        waiting = asyncio.create_task(started.wait())
        await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if not started.is_set() and task.done():  # refused before anything was written
            failure = task.exception()
            if isinstance(failure, KeelError):
                raise ApiError(400, "refused", str(failure)) from None
            raise ApiError(500, "internal", "the run could not start; see the server log")
        return run_id

    async def _queue(self, agent: Any, run_id: str, text: str, tenant: str,
                     user: str | None, conversation: str | None) -> None:
        """``workers`` mode: write the record for a worker to claim."""
        now = time.time()
        await self.store.create_run(RunRecord(
            run_id=run_id, agent=agent.name, status="running", input=text, created_at=now,
            updated_at=now, metadata=agent.run_metadata(), tenant=tenant, user=user,
            conversation=conversation))

    async def _drive(self, agent: Any, text: str, options: dict[str, Any],
                     started: asyncio.Event) -> RunResult[Any] | None:
        run_id = options["run_id"]

        def on_event(event: Any) -> None:
            if isinstance(event, RunStarted):
                started.set()
                self.tails.wake(run_id)
            elif isinstance(event, TextDelta):
                self.tails.delta(run_id, event.text)
            elif isinstance(event, StepRecorded):
                self.tails.wake(run_id)

        try:
            if hasattr(agent, "stream"):
                result = None
                async for event in agent.stream(text, on_event=on_event, **options):
                    result = getattr(event, "result", result)
                return result
            return await agent.run(text, on_event=on_event, **options)  # type: ignore[no-any-return]
        except (ApprovalRequired, Escalate):
            return None  # suspended: a decision resumes it (see resume_soon)
        except KeelError as exc:
            _log.info("run %s stopped: %s: %s", run_id, type(exc).__name__, exc,
                      extra={"run_id": run_id})
            if not started.is_set():
                raise
            return None
        finally:
            self.tails.wake(run_id)

    def resume_soon(self, run_id: str, agent_name: str) -> None:
        """A decision made the run runnable: the worker of this process claims it now rather
        than at its next poll (``server`` mode). Resuming it here beside the worker would
        race it: both would hold the lease as this process."""
        if self._worker is not None and agent_name in self.agents and not self.closing:
            self._worker.wake()

    def _event(self, run_id: str, event: Any) -> None:
        """What the worker's runs emit, for their followers."""
        if isinstance(event, TextDelta):
            self.tails.delta(run_id, event.text)
        elif isinstance(event, StepRecorded | RunStarted | RunFinished):
            self.tails.wake(run_id)

    async def wait(self, run_id: str, timeout_s: float) -> RunRecord:
        """The run's record once it is no longer ``running``, or as it is at ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        task = self._tasks.get(run_id)
        if task is not None:
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(task), timeout_s)
        while True:
            record = await self.store.get_run(run_id)
            left = deadline - time.monotonic()
            if record.status != "running" or left <= 0:
                return record
            await asyncio.sleep(min(0.1, left))

    # ---------------------------------------------------------------------------- shutdown

    async def close(self) -> list[str]:
        """Stop taking runs, let in-flight ones finish for ``grace_s``, hand back the rest."""
        self.closing = True
        self._stop.set()
        handed = await hand_back(self.store, grace_s=self.grace_s)
        if self._worker_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._worker_task, 30)
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        if handed:
            _log.info("handed %d run(s) back to the store for other workers: %s",
                      len(handed), ", ".join(handed[:10]))
        return handed
