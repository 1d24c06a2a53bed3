"""A real GlobalManager resource API (plus fake NodeService / NodeAgentService) on loopback.

The CLI is synchronous, so the servers run on their own event loop in a background thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
import typer
from google.protobuf.timestamp_pb2 import Timestamp
from support.memory_store import MemoryStore
from support.servers import loopback_settings

from sedna.api.gm.v1 import node_service_pb2 as npb
from sedna.api.gm.v1 import node_service_pb2_grpc as npb_grpc
from sedna.api.lc.v1 import worker_service_pb2 as wpb
from sedna.api.lc.v1 import worker_service_pb2_grpc as wpb_grpc
from sedna.cli.resources import register_resource_commands
from sedna.runtime import ServiceServer
from sedna_gm.api import add_resource_service
from sedna_gm.controllers import MemoryEventRecorder

REPO = Path(__file__).resolve().parents[3]
UPSTREAM = REPO / "examples" / "upstream"


def _new_store(tmp_path: Path) -> Any:
    try:
        from sedna_gm.store.sql import SqlResourceStore  # type: ignore[import-not-found]
    except ImportError:
        return MemoryStore()
    return SqlResourceStore(f"sqlite:///{tmp_path / 'gm.db'}")


LOG_LINES = [f"line {i}\n".encode() for i in range(1, 6)]


class FakeNodeAgent(wpb_grpc.NodeAgentServiceServicer):
    async def StreamWorkerLogs(self, request: Any, context: Any) -> Any:  # noqa: N802
        if (request.namespace, request.worker_name) != ("default", "w1"):
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"worker {request.worker_name} not found"
            )
        lines = LOG_LINES[-request.tail_lines :] if request.tail_lines else LOG_LINES
        for line in lines:
            yield wpb.StreamWorkerLogsResponse(data=line)


class FakeNodes(npb_grpc.NodeServiceServicer):
    def __init__(self) -> None:
        self.agent_address = ""

    def _nodes(self) -> list[npb.Node]:
        seen = Timestamp()
        seen.FromDatetime(datetime.now(UTC))
        return [
            npb.Node(
                name="edge0",
                connected=True,
                last_seen=seen,
                agent_address=self.agent_address,
                labels={"zone": "a"},
                pending_messages=2,
                resource_count=3,
            ),
            npb.Node(name="edge1", connected=False),
        ]

    async def ListNodes(self, request: Any, context: Any) -> npb.ListNodesResponse:  # noqa: N802
        return npb.ListNodesResponse(nodes=self._nodes())

    async def GetNode(self, request: Any, context: Any) -> npb.GetNodeResponse:  # noqa: N802
        for node in self._nodes():
            if node.name == request.name:
                return npb.GetNodeResponse(node=node)
        await context.abort(grpc.StatusCode.NOT_FOUND, f"node {request.name} not found")
        raise AssertionError


class Cluster:
    """GM (resources + fake nodes) and a fake LC, served from a background event loop."""

    def __init__(self, tmp_path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.store = _new_store(tmp_path)
        self.nodes = FakeNodes()
        self.recorder = MemoryEventRecorder()
        self.gm = ServiceServer(loopback_settings())
        self.lc = ServiceServer(loopback_settings())

        async def start() -> None:
            await self.store.start()
            add_resource_service(self.gm, self.store, self.recorder)
            self.gm.add_servicer(
                npb_grpc.add_NodeServiceServicer_to_server,
                self.nodes,
                "sedna.api.gm.v1.NodeService",
            )
            self.lc.add_servicer(
                wpb_grpc.add_NodeAgentServiceServicer_to_server,
                FakeNodeAgent(),
                "sedna.api.lc.v1.NodeAgentService",
            )
            await self.gm.start()
            await self.lc.start()
            self.nodes.agent_address = self.lc.address

        self.run(start())

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=15)

    @property
    def address(self) -> str:
        return self.gm.address

    def close(self) -> None:
        async def stop() -> None:
            await self.gm.stop(0.5)
            await self.lc.stop(0.5)
            await self.store.close()

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.upper().startswith("SEDNA_"):
            monkeypatch.delenv(key)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path)
    yield cluster
    cluster.close()


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """Test root."""

    register_resource_commands(app)
    return app
