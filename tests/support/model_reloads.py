"""Helpers for tests of the inference server's model repository and its hot reload."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from prometheus_client import CollectorRegistry

from sedna_inference.repository import ModelRepository

__all__ = ["DEADLINE_S", "reloads", "until", "watching"]

DEADLINE_S = 15.0
"""How long a test waits for a reload before it fails."""


def reloads(registry: CollectorRegistry, result: str, model: str = "m") -> float:
    """``sedna_inference_model_reloads_total{model, result}`` (0 before the first one)."""
    value = registry.get_sample_value(
        "sedna_inference_model_reloads_total", {"model": model, "result": result}
    )
    return value or 0.0


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; fail after :data:`DEADLINE_S` naming ``what``."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def watching(repo: ModelRepository) -> AsyncIterator[None]:
    """Run ``repo.watch_all()`` for the block, then stop it and close the repository."""
    task = asyncio.create_task(repo.watch_all())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await repo.close()
