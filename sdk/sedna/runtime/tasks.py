"""Small asyncio helpers for the long-running loops of the services."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any, TypeVar

__all__ = ["wait_first"]

_F = TypeVar("_F", bound="asyncio.Future[Any]")


async def wait_first(tasks: Collection[_F]) -> set[_F]:
    """Wait until one of ``tasks`` is done, then cancel the others and wait for them to end.

    Parameters
    ----------
    tasks
        Tasks (or futures) that run together, e.g. the send, receive and heartbeat loops of
        one stream: when one ends, the others have nothing left to do.

    Returns
    -------
    set
        The tasks that were done first; their results and exceptions are left to the caller.
        The others are cancelled and finished when this returns, also when the caller itself
        is cancelled while waiting.
    """
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return done
