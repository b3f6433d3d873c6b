"""Plain ``def`` tools run in keel's own worker threads, so a slow one never holds the loop.

``asyncio.to_thread`` hands a call to the event loop's default executor through two futures
(a ``concurrent.futures.Future`` chained to an asyncio one), and every ``asyncio.run`` makes a
new default executor - new threads - that it joins at the end. A tool call needs less: the
function, a copy of the caller's context variables, and one future on the loop that the worker
resolves with ``call_soon_threadsafe``. The threads are shared by every event loop of the
process, started when a call finds none idle (up to :data:`MAX_WORKERS`), and are daemon
threads: a tool still stuck past its timeout does not keep the interpreter from exiting.

The timeout is one ``loop.call_at`` handle that fails the future (no ``asyncio.timeout``
context, no task cancellation). A call that times out is abandoned, not stopped - Python
cannot stop a thread - and its late result is dropped.

Nothing is started at import; a forked child starts afresh (its parent's threads do not
exist there).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

#: The most worker threads (the default executor's ``min(32, cpus + 4)`` is 6 on two cores,
#: which caps how many slow tool calls can wait at once).
MAX_WORKERS = 64

_Item = tuple[Callable[[], Any], contextvars.Context, asyncio.AbstractEventLoop,
              "asyncio.Future[Any]"]


class _Pool:
    __slots__ = ("idle", "lock", "queue", "threads")

    def __init__(self) -> None:
        self.queue: SimpleQueue[_Item] = SimpleQueue()
        self.idle = threading.Semaphore(0)  # released by a worker each time it is free again
        self.lock = threading.Lock()
        self.threads = 0

    def submit(self, item: _Item) -> None:
        if not self.idle.acquire(blocking=False):
            with self.lock:
                if self.threads < MAX_WORKERS:
                    self.threads += 1
                    threading.Thread(target=self._work, name=f"keel-tool-{self.threads}",
                                     daemon=True).start()
        self.queue.put(item)

    def _work(self) -> None:
        get, idle = self.queue.get, self.idle
        while True:  # a new thread takes the item that started it, so idle only after one
            fn, ctx, loop, fut = get()
            try:
                value, error = ctx.run(fn), None
            except BaseException as exc:  # delivered to the awaiting task
                value, error = None, exc
            _deliver(loop, fut, value, error)
            del fn, ctx, loop, fut, value, error  # no reference outlives the call
            idle.release()


def _deliver(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any], value: Any,
             exc: BaseException | None) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for the result
        loop.call_soon_threadsafe(_settle, fut, value, exc)


def _settle(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if fut.done():  # timed out or cancelled: the late result is dropped
        return
    if exc is None:
        fut.set_result(value)
    elif isinstance(exc, StopIteration):  # an asyncio future refuses it (and would never end)
        fut.set_exception(RuntimeError(f"the function raised StopIteration({exc.value!r})"))
    else:
        fut.set_exception(exc)


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


_pool: _Pool | None = None
_pool_lock = threading.Lock()


def _get_pool() -> _Pool:
    global _pool
    pool = _pool
    if pool is None:
        with _pool_lock:
            if _pool is None:
                if hasattr(os, "register_at_fork") and not _fork_hooked:
                    _hook_fork()
                _pool = _Pool()
            pool = _pool
    return pool


_fork_hooked = False


def _hook_fork() -> None:
    global _fork_hooked
    _fork_hooked = True
    os.register_at_fork(after_in_child=_forget_pool)


def _forget_pool() -> None:
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


async def run_in_worker(fn: Callable[[], Any], seconds: float | None) -> Any:
    """``fn()`` in a worker thread with the caller's context variables; raises what it
    raises, or ``TimeoutError`` after ``seconds`` (None: no limit; the thread is then
    abandoned, not stopped)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    _get_pool().submit((fn, contextvars.copy_context(), loop, fut))
    if seconds is None:
        return await fut
    timer = loop.call_at(loop.time() + seconds, _expire, fut)
    try:
        return await fut
    finally:
        timer.cancel()


def worker_threads() -> int:
    """How many worker threads this process has started (for tests)."""
    return 0 if _pool is None else _pool.threads
