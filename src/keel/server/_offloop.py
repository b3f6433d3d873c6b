"""The run store as the server uses it: never on the server's event loop.

keel's SQLite store does its work synchronously inside its ``async`` methods (a journal
append costs microseconds, and an agent's loop is faster for it), but a request handler that
waits there for another process's write lock would stall every other request and stream.
:class:`OffLoopStore` runs each call of a wrapped store on one thread of its own, which has
its own event loop; the server's loop only awaits the answer. Postgres needs none of this
(psycopg's async driver yields while it waits), so only synchronous backends are wrapped.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from keel.store import RunStore, SQLiteStore

T = TypeVar("T")

#: the store methods a wrapper hands to its thread (every async method of the seam)
_METHODS = tuple(sorted(
    name for name in dir(RunStore)
    if not name.startswith("_") and asyncio.iscoroutinefunction(getattr(RunStore, name))
    and name != "close"))


class _StoreThread:
    """One daemon thread running an event loop that store calls are submitted to."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await asyncio.wrap_future(future)

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


def _delegate(name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    async def method(self: OffLoopStore, *args: Any, **kwargs: Any) -> Any:
        return await self._thread.call(getattr(self.inner, name)(*args, **kwargs))

    # the seam's signature (keyword checks such as ``tenant=`` read it)
    functools.update_wrapper(method, getattr(RunStore, name))
    method.__doc__ = f"``{name}`` of the wrapped store, on the store's own thread."
    return method


class OffLoopStore(RunStore):
    """``inner`` (a synchronous-bodied store such as SQLite) with every call made on a
    thread of its own. Attributes other than the store methods (``path``...) read through."""

    def __init__(self, inner: RunStore) -> None:
        self.inner = inner
        self._thread = _StoreThread(f"keel-store-{id(inner):x}")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"OffLoopStore({self.inner!r})"

    async def close(self) -> None:
        try:
            await self._thread.call(self.inner.close())
        finally:
            await asyncio.to_thread(self._thread.stop)


for _name in _METHODS:
    setattr(OffLoopStore, _name, _delegate(_name))
OffLoopStore.__abstractmethods__ = frozenset()


def off_loop(store: RunStore) -> RunStore:
    """``store`` as the server should use it: a synchronous backend wrapped, others as
    they are (an in-memory store does no I/O; Postgres is asynchronous)."""
    if isinstance(store, SQLiteStore):
        return OffLoopStore(store)  # type: ignore[abstract]  # methods set below the class
    return store


__all__ = ["OffLoopStore", "off_loop"]
