"""Fixtures of the serving tests: fake backends and an OIP server running in a thread.

The client under test is synchronous, so the server runs on its own event loop in a
background thread and the tests call it from the main thread.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from support.servers import loopback_settings

from sedna.runtime import ServiceServer
from sedna.serving import (
    SERVICE_NAME,
    Backend,
    BackendMetadata,
    InferenceMetrics,
    OutputEncoder,
    ServedModel,
    StaticModelStore,
    TensorSpec,
    add_inference_service,
)

Array = npt.NDArray[np.generic]
START_DEADLINE_S = 15.0


class ScaleBackend:
    """``y = factor * x`` with x FP32 [-1, 2]; may block until ``release`` is set."""

    def __init__(self, factor: float = 2.0, *, blocking: bool = False) -> None:
        self.factor = factor
        self.entered = threading.Event()
        self.release = threading.Event()
        if not blocking:
            self.release.set()

    def metadata(self) -> BackendMetadata:
        return BackendMetadata(
            "fake", (TensorSpec("x", "FP32", (-1, 2)),), (TensorSpec("y", "FP32", (-1, 2)),)
        )

    def infer(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        self.entered.set()
        assert self.release.wait(30)
        return {"y": np.asarray(inputs["x"]) * np.float32(self.factor)}


class TwoOutputBackend:
    """x INT64 [-1, 3] → ``sum`` INT64 [-1] and ``neg`` INT64 [-1, 3]."""

    def metadata(self) -> BackendMetadata:
        return BackendMetadata(
            "fake",
            (TensorSpec("x", "INT64", (-1, 3)),),
            (TensorSpec("sum", "INT64", (-1,)), TensorSpec("neg", "INT64", (-1, 3))),
        )

    def infer(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        x = np.asarray(inputs["x"])
        return {"sum": x.sum(axis=1), "neg": -x}


class ThreadedServer:
    """An OIP server on 127.0.0.1 serving ``models``, on an event loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: ServiceServer | None = None
        self.port = 0

    def _run(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(START_DEADLINE_S)

    def start(self, models: Mapping[str, tuple[Backend, OutputEncoder | None]]) -> int:
        self.thread.start()

        async def start() -> int:
            server = ServiceServer(loopback_settings())
            metrics = InferenceMetrics(server.registry)
            store = StaticModelStore(metrics)
            add_inference_service(server, store)
            for name, (backend, encoder) in models.items():
                model = ServedModel(name, backend, metrics, encode_output=encoder)
                model.batcher.start()
                store.add(model)
            server.on_shutdown(store.close)
            await server.set_serving(SERVICE_NAME, store.server_ready())
            await server.start()
            self.server = server
            return server.port

        self.port = int(self._run(start()))
        return self.port

    def stop(self) -> None:
        if self.server is not None:
            self._run(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(START_DEADLINE_S)
        self.loop.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., int]]:
    """``serve({name: (backend, encoder)}) -> port``: start a server; stopped after the test."""
    servers: list[ThreadedServer] = []

    def start(models: Mapping[str, tuple[Backend, OutputEncoder | None]]) -> int:
        server = ThreadedServer()
        servers.append(server)
        return server.start(models)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def fakes() -> SimpleNamespace:
    """The fake backend classes (test modules cannot import conftest in importlib mode)."""
    return SimpleNamespace(ScaleBackend=ScaleBackend, TwoOutputBackend=TwoOutputBackend)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's worker variables out of every test."""
    keys = (
        "SEDNA_",
        "BIG_MODEL_",
        "SERVICE_NAME",
        "JOB_NAME",
        "MODEL_URL",
        "METRICS_PORT",
        "BACKEND_TYPE",
        "MODEL_HOT_UPDATE",
    )
    for key in list(os.environ):
        if key.upper().startswith(keys):
            monkeypatch.delenv(key)
