import asyncio

import pytest

from keel.tools._eager import await_with_timeout


async def test_synchronous_completion_needs_no_timer() -> None:
    async def instant() -> int:
        return 7

    assert await await_with_timeout(instant(), 0.001) == 7


async def test_suspending_coroutine_finishes_with_its_value() -> None:
    async def waits() -> str:
        await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        return "done"

    assert await await_with_timeout(waits(), 5) == "done"


async def test_timeout_cancels_the_rest_and_runs_its_cleanup() -> None:
    cleaned: list[str] = []

    async def slow() -> str:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.append("yes")
        return "late"

    with pytest.raises(TimeoutError):
        await await_with_timeout(slow(), 0.02)
    assert cleaned == ["yes"]


async def test_exceptions_before_and_after_suspension_propagate() -> None:
    async def early() -> None:
        raise ValueError("early")

    async def late() -> None:
        await asyncio.sleep(0)
        raise KeyError("late")

    with pytest.raises(ValueError, match="early"):
        await await_with_timeout(early(), 1)
    with pytest.raises(KeyError, match="late"):
        await await_with_timeout(late(), 1)


async def test_outside_cancellation_is_not_turned_into_a_timeout() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(await_with_timeout(forever(), 30))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_no_timeout_means_plain_await() -> None:
    async def value() -> int:
        await asyncio.sleep(0)
        return 3

    assert await await_with_timeout(value(), None) == 3
