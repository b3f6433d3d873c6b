"""Await a coroutine with a timeout, arming the timer only if the coroutine suspends.

Most tool calls in a busy agent either finish without ever waiting (a cache hit, a pure
computation) or wait on real I/O. A timer costs the first kind more than the work itself, so
the coroutine is started eagerly: if it finishes on its first step no timer is created; if it
suspends, the rest of it is awaited under ``asyncio.timeout`` as usual.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


async def await_with_timeout(coro: Coroutine[Any, Any, T], seconds: float | None) -> T:
    """Like ``asyncio.wait_for(coro, seconds)`` without a new task, and without a timer when
    ``coro`` completes synchronously. Raises ``TimeoutError`` when the time runs out."""
    if seconds is None:
        return await coro
    try:
        first = coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    async with asyncio.timeout(seconds):
        result: T = await _Resumed(coro, first)
        return result


class _Resumed:
    """Awaitable that continues a coroutine already advanced to its first suspension."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self.coro, self.first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation (a timeout) goes into the coroutine
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value
