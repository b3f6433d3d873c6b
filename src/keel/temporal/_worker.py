""":class:`TemporalWorker`: a Temporal worker that runs the ``keel.run`` workflow and its
activities for the given agents and flows, against one keel run store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from keel.core import ConfigError
from keel.runtime import hand_back, using_store
from keel.store import RunStore
from keel.temporal._activities import KeelActivities
from keel.temporal._client import register
from keel.temporal._workflow import KeelRunWorkflow


def workflow_runner() -> SandboxedWorkflowRunner:
    """The workflow sandbox, with keel passed through: the workflow module uses only keel's
    plain dataclasses, and re-importing keel in every sandbox would be slow and open
    nothing new."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("keel"))


class TemporalWorker:
    """Serves keel runs on ``task_queue``: the ``keel.run`` workflow, and its activities for
    the given agents and flows (known by name), writing to ``store`` (a RunStore or a URL;
    a URL is opened when the worker starts and closed when it stops).

    ``await worker.run()`` serves until cancelled; ``async with worker:`` serves in the
    background for the block's duration."""

    def __init__(self, client: Client, runnables: Iterable[Any], *,
                 store: RunStore | str | None = None, task_queue: str = "keel",
                 max_concurrent_activities: int = 64,
                 targets: dict[str, str] | None = None, grace_s: float = 10.0) -> None:
        """``targets``: name -> ``module:attr`` for each runnable loaded from one (stored
        with the run, for ``keel runs cancel`` to load its hooks). ``grace_s``: when the
        worker stops, how long steps in flight may take to finish; then they stop where
        they are, their runs stay ``running`` and Temporal retries the step on another
        worker, which goes on from the journal."""
        found: dict[str, Any] = {}
        for r in runnables:
            name = getattr(r, "name", None)
            if not isinstance(name, str) or not hasattr(r, "driver"):
                raise ConfigError("runnables", f"expected agents or flows, got "
                                  f"{type(r).__name__}")
            if name in found and found[name] is not r:
                raise ConfigError("runnables", f"two agents or flows are named {name!r}; a "
                                  "worker tells runs apart by name")
            found[name] = r
        if not found:
            raise ConfigError("runnables", "a Temporal worker needs at least one agent or flow")
        if not isinstance(task_queue, str) or not task_queue.strip():
            raise ConfigError("task_queue", f"must be a task queue name, not {task_queue!r}")
        if (not isinstance(max_concurrent_activities, int)
                or isinstance(max_concurrent_activities, bool)
                or max_concurrent_activities < 1):
            raise ConfigError("max_concurrent_activities", f"must be a whole number >= 1, not "
                              f"{max_concurrent_activities!r}")
        for r in found.values():
            r.prepare()  # a bad model id or a missing key fails here, not in every step
        self.client = client
        self.runnables = found
        self.store = store
        self.task_queue = task_queue
        self.max_concurrent_activities = max_concurrent_activities
        self.targets = dict(targets or {})
        if isinstance(grace_s, bool) or not isinstance(grace_s, int | float) or grace_s < 0:
            raise ConfigError("grace_s", f"must be a number of seconds >= 0, not {grace_s!r}")
        self.grace_s = float(grace_s)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        register()  # decisions made in this process signal the workflows they unblock

    async def run(self) -> None:
        """Serve until cancelled (or the worker fails)."""
        async with using_store(self.store) as store:
            activities = KeelActivities(
                self.runnables, store, targets=self.targets, namespace=self.client.namespace,
                address=self.client.service_client.config.target_host)
            worker = Worker(self.client, task_queue=self.task_queue,
                            workflows=[KeelRunWorkflow], activities=activities.all(),
                            max_concurrent_activities=self.max_concurrent_activities,
                            workflow_runner=workflow_runner())
            async with worker:
                self._ready.set()
                try:
                    await asyncio.Event().wait()
                finally:  # before Temporal cancels the steps in flight (which would end
                    # their runs as cancelled): hand them back, to be retried elsewhere
                    await hand_back(store, grace_s=self.grace_s)

    async def __aenter__(self) -> TemporalWorker:
        self._task = asyncio.create_task(self.run(), name="keel-temporal-worker")
        waiter = asyncio.ensure_future(self._ready.wait())
        done, _ = await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
            self._task.result()  # raises why it stopped
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


