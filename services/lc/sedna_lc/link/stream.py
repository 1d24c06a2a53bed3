"""The GM link's view of one HubService stream, and its grpc.aio implementation."""

from __future__ import annotations

from typing import Any, Protocol

import grpc

from sedna.api.gm.v1 import hub_service_pb2, hub_service_pb2_grpc

__all__ = ["GrpcLinkStream", "LinkStream"]


class LinkStream(Protocol):
    """One bidirectional stream with the GM hub, as the link sees it."""

    async def send(self, message: hub_service_pb2.ConnectRequest) -> None:
        """Send one message (called from one task at a time)."""

    async def recv(self) -> hub_service_pb2.ConnectResponse | None:
        """The next message, or None when the GM ended the stream."""
        ...

    def close(self) -> None:
        """Cancel the stream."""


class GrpcLinkStream:
    """A :class:`LinkStream` on a ``HubService.Connect`` call.

    Parameters
    ----------
    channel
        An open grpc.aio channel to the GM.
    timeout
        Deadline of the stream (the link reconnects when it expires).
    """

    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        stub = hub_service_pb2_grpc.HubServiceStub(channel)
        self._call: Any = stub.Connect(timeout=timeout)

    async def send(self, message: hub_service_pb2.ConnectRequest) -> None:
        """Write one request."""
        await self._call.write(message)

    async def recv(self) -> hub_service_pb2.ConnectResponse | None:
        """Read one response; None at the end of the stream (errors raise AioRpcError)."""
        message = await self._call.read()
        if message is grpc.aio.EOF:
            return None
        result: hub_service_pb2.ConnectResponse = message
        return result

    def close(self) -> None:
        """Cancel the call."""
        self._call.cancel()
