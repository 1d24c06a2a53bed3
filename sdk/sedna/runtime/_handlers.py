"""Helpers shared by the server interceptors: method names, RPC kinds, handler rewriting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Literal

import grpc

RpcType = Literal["unary", "client_stream", "server_stream", "bidi_stream"]

Behaviour = Callable[[Any, Any], Any]
"""A servicer method as grpc.aio calls it: ``(request or request iterator, context)``."""

_FACTORIES: Final = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}

_TYPES: Final[dict[tuple[bool, bool], RpcType]] = {
    (False, False): "unary",
    (True, False): "client_stream",
    (False, True): "server_stream",
    (True, True): "bidi_stream",
}


def split_method(full_method: str | bytes) -> tuple[str, str]:
    """Split ``/package.Service/Method`` into ``("package.Service", "Method")``."""
    text = full_method.decode() if isinstance(full_method, bytes) else full_method
    service, _, method = text.lstrip("/").rpartition("/")
    if not service:
        return "unknown", method or "unknown"
    return service, method


def rpc_type(handler: grpc.RpcMethodHandler[Any, Any]) -> RpcType:
    """The go-grpc-prometheus ``grpc_type`` label of a handler."""
    return _TYPES[(bool(handler.request_streaming), bool(handler.response_streaming))]


def behaviour_of(handler: grpc.RpcMethodHandler[Any, Any]) -> Behaviour:
    """The servicer callable of a handler, whatever its kind."""
    kind = (bool(handler.request_streaming), bool(handler.response_streaming))
    behaviour: Behaviour | None
    if kind == (False, False):
        behaviour = handler.unary_unary
    elif kind == (True, False):
        behaviour = handler.stream_unary
    elif kind == (False, True):
        behaviour = handler.unary_stream
    else:
        behaviour = handler.stream_stream
    if behaviour is None:
        raise TypeError("RPC method handler has no behaviour for its own kind")
    return behaviour


def with_behaviour(
    handler: grpc.RpcMethodHandler[Any, Any], behaviour: Behaviour
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same kind and serializers as ``handler`` that runs ``behaviour``."""
    factory = _FACTORIES[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return factory(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
