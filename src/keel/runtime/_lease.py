"""Leases: at most one worker continues a run at a time.

Each process has one worker id (``host:pid:random``). Starting or resuming a run acquires
the run's lease in the store; one background task per (process, store) renews every lease
this process holds in a single call, and watches the held runs for cancel requests (a
request's reason and who asked reach the run's journaled cancel step through the Hold). A run
whose lease was lost (this process stalled past the expiry and another worker took over) is
stopped; its writes were fenced off by the store in the meantime anyway.

A lease held by a process on this host that no longer exists (SIGKILL, OOM) is taken over at
once; a lease of another host is waited out (it expires ``seconds`` after its last renewal).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import weakref
from dataclasses import dataclass, field

from keel.core import RunLeased
from keel.store import CANCEL_REQUEST, RunRecord, RunStore

#: This process's worker id, the lease owner of every run it continues.
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
DEFAULT_LEASE_SECONDS = 15.0


def worker_id() -> str:
    """This process's worker id (read at call time: a forked child gets its own)."""
    return WORKER_ID


def _fork_reset() -> None:  # a forked child is another worker
    global WORKER_ID
    WORKER_ID = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fork_reset)


def holder_is_dead(holder: str | None) -> bool:
    """True if ``holder`` is a worker id of a process on this host that no longer runs."""
    if not holder:
        return False
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return holder != WORKER_ID  # an earlier incarnation of this pid (pid reuse)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed process its parent has not reaped yet still answers ``kill(pid, 0)``."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rpartition(")")[2].split()[:1] == ["Z"]
    except OSError:
        return False


@dataclass(slots=True)
class Hold:
    """One run held by this process: the task continuing it and why it was stopped."""

    run_id: str
    task: asyncio.Task[object] | None
    stop_reason: str | None = None  # "cancel", "lease-lost" or "hand-back"
    #: For a cancel: why and who asked, as given to ``request_cancel`` (None if not said).
    cancel_reason: str | None = None
    cancel_by: str | None = None


@dataclass(slots=True)
class LeaseKeeper:
    """Renews this process's leases in one store and watches for cancel requests."""

    store: RunStore
    seconds: float
    held: dict[str, Hold] = field(default_factory=dict)
    _renewer: asyncio.Task[None] | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def acquire(self, run_id: str, *, record: RunRecord | None = None) -> Hold:
        """Lease ``run_id`` for the current task. ``record``: a record this process just
        created with the lease already set (no store call needed)."""
        old = self.held.get(run_id)
        if old is not None and old.task is not None and old.task.done():
            del self.held[run_id]  # left over from an event loop that was closed under it
        if run_id in self.held:
            raise RunLeased(f"run {run_id} is already being continued in this process.",
                            holder=WORKER_ID)
        if record is None:
            try:
                await self.store.acquire_lease(run_id, WORKER_ID, self.seconds)
            except RunLeased as exc:
                if not holder_is_dead(exc.holder):
                    raise
                await self.store.acquire_lease(run_id, WORKER_ID, self.seconds,
                                               steal_from=exc.holder)
        hold = Hold(run_id=run_id, task=asyncio.current_task())
        self.held[run_id] = hold
        self._ensure_renewer()
        return hold

    def adopt(self, run_id: str) -> Hold:
        """Track a run this process leased through ``claim_runs``."""
        hold = Hold(run_id=run_id, task=asyncio.current_task())
        self.held[run_id] = hold
        self._ensure_renewer()
        return hold

    async def release(self, hold: Hold, *, in_store: bool = True) -> None:
        self.held.pop(hold.run_id, None)
        if in_store:
            with contextlib.suppress(Exception):  # the lease expires on its own anyway
                await self.store.release_lease(hold.run_id, WORKER_ID)

    def _ensure_renewer(self) -> None:
        loop = asyncio.get_running_loop()
        if self._renewer is None or self._renewer.done() or self._loop is not loop:
            self._loop = loop
            self._renewer = loop.create_task(self._renew_forever(), name="keel-lease-renewer")

    async def stop_renewing(self) -> None:
        """Stop the renewal task now (nothing is held: a shutdown), rather than leave it to
        the event loop's close."""
        task, self._renewer = self._renewer, None
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def interval(self) -> float:
        return max(0.05, self.seconds / 3.0)

    async def _renew_forever(self) -> None:
        while self.held:
            await asyncio.sleep(self.interval)
            if not self.held:
                break
            try:
                await self.tick()
            except Exception:  # a store hiccup: try again next round; fencing keeps us safe
                continue
        self._renewer = None

    async def tick(self) -> None:
        """Renew, stop runs whose lease was lost, stop runs asked to cancel."""
        still = await self.store.renew_leases(WORKER_ID, self.seconds)
        for run_id, hold in list(self.held.items()):
            if run_id not in still:
                self.stop(hold, "lease-lost")
                continue
            record = await self.store.get_run(run_id)
            if record.cancel_requested:
                request = record.metadata.get(CANCEL_REQUEST)
                request = request if isinstance(request, dict) else {}
                self.stop(hold, "cancel", cancel_reason=_text(request.get("reason")),
                          cancel_by=_text(request.get("by")))

    def stop(self, hold: Hold, reason: str, *, cancel_reason: str | None = None,
             cancel_by: str | None = None) -> None:
        """Stop the run's task; for a cancel, ``cancel_reason`` and ``cancel_by`` are what
        its journaled cancel step records."""
        if hold.stop_reason is None and hold.task is not None and not hold.task.done():
            hold.stop_reason = reason
            hold.cancel_reason, hold.cancel_by = cancel_reason, cancel_by
            hold.task.cancel(f"keel:{reason}")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


_KEEPERS: weakref.WeakKeyDictionary[RunStore, LeaseKeeper] = weakref.WeakKeyDictionary()


def keeper_for(store: RunStore, seconds: float = DEFAULT_LEASE_SECONDS) -> LeaseKeeper:
    keeper = _KEEPERS.get(store)
    if keeper is None:
        keeper = _KEEPERS[store] = LeaseKeeper(store, seconds)
    return keeper
