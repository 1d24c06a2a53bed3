"""``sedna.api.gm.v1.HubService`` over grpc.aio: a thin adapter around :class:`NodeHub`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import grpc

from sedna.api.gm.v1 import hub_service_pb2, hub_service_pb2_grpc
from sedna_gm.hub.core import HubRejectedError, NodeHub, NodeStream, RejectCode

__all__ = ["HUB_SERVICE_NAME", "GrpcNodeStream", "HubServicer", "bearer_token"]

HUB_SERVICE_NAME: Final = "sedna.api.gm.v1.HubService"

_CODES: Final[dict[RejectCode, grpc.StatusCode]] = {
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "permission_denied": grpc.StatusCode.PERMISSION_DENIED,
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
}


def bearer_token(metadata: Any) -> str | None:
    """The token of an ``authorization: Bearer <token>`` entry, or None.

    Parameters
    ----------
    metadata
        Invocation metadata: pairs of key and value.

    Returns
    -------
    str | None
        The token; None when absent or not a bearer credential.
    """
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        scheme, _, credential = text.strip().partition(" ")
        if scheme.lower() == "bearer" and credential.strip():
            return credential.strip()
    return None


class GrpcNodeStream:
    """A :class:`~sedna_gm.hub.core.NodeStream` on a grpc.aio bidirectional call."""

    def __init__(
        self,
        requests: AsyncIterator[hub_service_pb2.ConnectRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        self._requests = requests
        self._context = context

    async def recv(self) -> hub_service_pb2.ConnectRequest | None:
        """The next request, or None at the end of the stream."""
        try:
            return await anext(self._requests)
        except StopAsyncIteration:
            return None

    async def send(self, message: hub_service_pb2.ConnectResponse) -> None:
        """Write one response."""
        await self._context.write(message)


class HubServicer(hub_service_pb2_grpc.HubServiceServicer):
    """Serves ``HubService.Connect`` with a :class:`NodeHub`.

    Parameters
    ----------
    hub
        The core.
    wrap_stream
        Optional wrapper around every stream (fault injection in tests, tracing).
    """

    def __init__(
        self, hub: NodeHub, *, wrap_stream: Callable[[NodeStream], NodeStream] | None = None
    ) -> None:
        self._hub = hub
        self._wrap = wrap_stream

    # A coroutine writing with context.write() is a valid grpc.aio streaming handler; the
    # generated stub only knows the iterator form.
    async def Connect(  # type: ignore[override]  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[hub_service_pb2.ConnectRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        """Run the node's stream; rejections end it with the matching status code."""
        token = bearer_token(context.invocation_metadata())
        stream: NodeStream = GrpcNodeStream(request_iterator, context)
        if self._wrap is not None:
            stream = self._wrap(stream)
        try:
            await self._hub.serve(stream, token)
        except HubRejectedError as exc:
            await context.abort(_CODES[exc.code], exc.message)
