"""Fixtures: a real loopback gRPC server with ResourceService on a store, and a client stub."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest

from sedna.api.gm.v1 import resource_service_pb2_grpc as pb_grpc
from sedna.runtime import ChannelConfig, ServiceServer, ServiceSettings, open_channel
from sedna_gm.api import ResourceApi, ResourceServicer
from sedna_gm.api.resource_servicer import SERVICE_NAME


def _load(name: str) -> ModuleType:
    # --import-mode=importlib keeps test folders off sys.path: load helpers by path.
    full = f"sedna_gm_api_tests_{name}"
    if full in sys.modules:
        return sys.modules[full]
    spec = importlib.util.spec_from_file_location(full, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    spec.loader.exec_module(module)
    return module


MEMORY = _load("memory_store")


def _sql_store_class() -> Any:
    try:
        from sedna_gm.store.sql import SqlResourceStore  # type: ignore[import-not-found]
    except ImportError:
        return None
    return SqlResourceStore


@pytest.fixture(params=["memory", "sql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """Each test runs on the in-memory double and on the real SQLite store (when present)."""
    if request.param == "memory":
        backend: Any = MEMORY.MemoryStore()
    else:
        cls = _sql_store_class()
        if cls is None:
            pytest.skip("sedna_gm.store.sql is not there yet")
        backend = cls(f"sqlite:///{tmp_path / 'gm.db'}")
    await backend.start()
    yield backend
    await backend.close()


@pytest.fixture
def memory_store() -> Any:
    return MEMORY.MemoryStore()


ServerFactory = Callable[..., Any]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    """``await serve(store, **api_options)`` -> (server, stub); everything stops at teardown."""
    servers: list[ServiceServer] = []
    channels: list[grpc.aio.Channel] = []

    async def start(store: Any, **options: Any) -> tuple[ServiceServer, Any]:
        settings = ServiceSettings(
            host="127.0.0.1", port=0, metrics_port=None, drain_seconds=1.0, log_format="console"
        )
        server = ServiceServer(settings)
        server.add_servicer(
            pb_grpc.add_ResourceServiceServicer_to_server,
            ResourceServicer(ResourceApi(store, **options)),
            SERVICE_NAME,
        )
        await server.start()
        servers.append(server)
        channel = open_channel(ChannelConfig(target=server.address, default_timeout=10.0))
        channels.append(channel)
        return server, pb_grpc.ResourceServiceStub(channel)

    yield start
    for channel in channels:
        await channel.close()
    for server in servers:
        await server.stop(0.5)
