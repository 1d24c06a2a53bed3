"""The GM link's view of one HubService stream, and its grpc.aio implementation."""

from __future__ import annotations

import asyncio
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
    metadata
        The call's metadata (the bearer token: the link's channel leaves bidi streams
        unintercepted, see :func:`sedna.runtime.open_channel`).
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        timeout: float,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        stub = hub_service_pb2_grpc.HubServiceStub(channel)
        self._call: Any = stub.Connect(timeout=timeout, metadata=metadata or None)

    async def send(self, message: hub_service_pb2.ConnectRequest) -> None:
        """Write one request."""
        try:
            await self._call.write(message)
        except asyncio.InvalidStateError:
            # The call ended before this write: say why it ended, not "RPC already finished".
            code = await self._call.code()
            details = await self._call.details()
            raise ConnectionError(f"the Connect stream ended: {code.name}: {details}") from None

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
