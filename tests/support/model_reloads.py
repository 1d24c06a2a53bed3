"""Helpers for tests of the inference server's model repository and its hot reload."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import numpy as np
from prometheus_client import CollectorRegistry

from sedna_inference.repository import ModelRepository

__all__ = ["DEADLINE_S", "reloads", "scale_model", "until", "watching"]

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


def scale_model(factor: float) -> bytes:
    """An ONNX model ``y = factor * x``, x and y FP32 [N, 4] (a new ``factor``: a new version)."""
    from onnx import TensorProto, helper, numpy_helper  # the tests that call this need onnx

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["y"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializer=[numpy_helper.from_array(np.array(factor, dtype=np.float32), "k")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())
