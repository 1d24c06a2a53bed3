"""Fixtures: a real loopback gRPC server with ResourceService on a store, and a client stub."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.memory_store import MemoryStore
from support.servers import loopback_settings

from sedna.api.gm.v1 import resource_service_pb2_grpc as pb_grpc
from sedna.runtime import ChannelConfig, ServiceServer, open_channel
from sedna_gm.api import ResourceApi, ResourceServicer
from sedna_gm.api.resource_servicer import SERVICE_NAME


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
        backend: Any = MemoryStore()
    else:
        cls = _sql_store_class()
        if cls is None:
            pytest.skip("sedna_gm.store.sql is not there yet")
        backend = cls(f"sqlite:///{tmp_path / 'gm.db'}")
    await backend.start()
    yield backend
    await backend.close()


@pytest.fixture
def memory_store() -> MemoryStore:
    return MemoryStore()


ServerFactory = Callable[..., Any]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    """``await serve(store, **api_options)`` -> (server, stub); everything stops at teardown."""
    servers: list[ServiceServer] = []
    channels: list[grpc.aio.Channel] = []

    async def start(store: Any, **options: Any) -> tuple[ServiceServer, Any]:
        server = ServiceServer(loopback_settings())
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
