"""wait_first (the first task to finish wins; the others are cancelled and awaited) and
require_positive."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from sedna.runtime import require_positive, wait_first


async def test_wait_first_cancels_and_awaits_the_others() -> None:
    finished: list[str] = []

    async def quick() -> str:
        return "quick"

    async def slow() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            finished.append("slow cleaned up")

    first = asyncio.ensure_future(quick())
    other = asyncio.ensure_future(slow())
    done = await wait_first({first, other})
    assert done == {first}
    assert first.result() == "quick"
    assert other.cancelled()
    assert finished == ["slow cleaned up"]


async def test_wait_first_leaves_exceptions_to_the_caller() -> None:
    async def boom() -> None:
        raise RuntimeError("boom")

    failing = asyncio.ensure_future(boom())
    waiting = asyncio.ensure_future(asyncio.Event().wait())
    (done,) = await wait_first([failing, waiting])
    assert isinstance(done.exception(), RuntimeError)
    assert waiting.cancelled()


async def test_wait_first_cancelled_caller_cancels_every_task() -> None:
    tasks = [asyncio.ensure_future(asyncio.sleep(60)) for _ in range(2)]
    waiter = asyncio.ensure_future(wait_first(tasks))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert all(t.cancelled() for t in tasks)


@dataclass
class _Timings:
    interval: float = 1.0
    timeout: float = 2.0
    retry: float | None = None


def test_require_positive() -> None:
    require_positive(_Timings(), "interval", "timeout", optional=["retry"])
    require_positive(_Timings(retry=0.5), "interval", optional=["retry"])
    with pytest.raises(ValueError, match=r"^timeout must be > 0, not 0$"):
        require_positive(_Timings(timeout=0), "interval", "timeout", optional=["retry"])
    with pytest.raises(ValueError, match=r"^retry must be > 0, not -1.0$"):
        require_positive(_Timings(retry=-1.0), "interval", optional=["retry"])
