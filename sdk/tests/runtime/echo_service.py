"""The test service ``sedna.testing.v1.EchoService``: bytes in, bytes out, no proto needed.

Used by the runtime tests in-process (via conftest.py) and as a subprocess server script
(``python echo_service.py [run_until_signal|run_service]``) for the SIGTERM tests.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from sedna.runtime import ServiceServer, ServiceSettings, load_settings, run_service
from sedna.runtime.logging import configure_logging

SERVICE = "sedna.testing.v1.EchoService"


@dataclass
class EchoState:
    """What the handlers observed, for assertions (all in the server's event loop)."""

    slow_started: asyncio.Event = field(default_factory=asyncio.Event)
    # Set to end every "Slow" call at once (a stand-in for closing a long-lived stream).
    slow_release: asyncio.Event = field(default_factory=asyncio.Event)
    slow_calls: int = 0
    flaky_attempts: collections.Counter[bytes] = field(default_factory=collections.Counter)
    on_slow_start: Callable[[], None] | None = None


def build_handler(state: EchoState) -> grpc.GenericRpcHandler:
    """The generic handler of EchoService; request/response serializers are identity."""

    async def echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return request

    async def slow(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        # The request is the number of seconds to sleep, as ASCII.
        state.slow_calls += 1
        state.slow_started.set()
        if state.on_slow_start is not None:
            state.on_slow_start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.slow_release.wait(), float(request.decode()))
        return b"done"

    async def stream(
        request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        for i in range(int(request.decode())):
            yield str(i).encode()

    async def write_stream(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        # The coroutine style of server streaming: context.write() instead of yield.
        for i in range(int(request.decode())):
            await context.write(b"w%d" % i)

    async def fail(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad request: Fail always fails")

    async def flaky(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        # UNAVAILABLE for the first two attempts per request key, then OK.
        state.flaky_attempts[request] += 1
        attempt = state.flaky_attempts[request]
        if attempt <= 2:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"attempt {attempt}: try again")
        return b"ok after %d attempts" % attempt

    async def collect(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        return b",".join([message async for message in requests])

    async def read_collect(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        # The context.read() style of client streaming.
        parts = []
        while (message := await context.read()) is not grpc.aio.EOF:
            parts.append(message)
        return b",".join(parts)

    async def chat(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        async for message in requests:
            yield message.upper()

    async def set_code(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        context.set_code(grpc.StatusCode.NOT_FOUND)
        context.set_details("no such thing")
        return b""

    async def boom(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        raise RuntimeError("boom")

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "WriteStream": grpc.unary_stream_rpc_method_handler(write_stream),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
            "Flaky": grpc.unary_unary_rpc_method_handler(flaky),
            "Collect": grpc.stream_unary_rpc_method_handler(collect),
            "ReadCollect": grpc.stream_unary_rpc_method_handler(read_collect),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
            "SetCode": grpc.unary_unary_rpc_method_handler(set_code),
            "Boom": grpc.unary_unary_rpc_method_handler(boom),
        },
    )


def path(method: str) -> str:
    """The full method path of an EchoService method."""
    return f"/{SERVICE}/{method}"


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 5.0, interval: float = 0.02
) -> None:
    """Poll ``check`` until it returns True; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(interval)


def _announce(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def _serve_until_signal(settings: ServiceSettings) -> None:
    state = EchoState(on_slow_start=lambda: _announce(event="slow-started"))
    server = ServiceServer(settings)
    server.add_generic_handler(build_handler(state), SERVICE)
    await server.start()
    _announce(event="started", port=server.port)
    await server.run_until_signal()
    _announce(event="stopped", slow_calls=state.slow_calls)


def main(argv: list[str]) -> int:
    """Run the echo server; settings come from SEDNA_* environment variables."""
    mode = argv[1] if len(argv) > 1 else "run_until_signal"
    settings = load_settings(ServiceSettings)
    if mode == "run_service":

        def setup(server: ServiceServer) -> None:
            state = EchoState(on_slow_start=lambda: _announce(event="slow-started"))
            server.add_generic_handler(build_handler(state), SERVICE)

        return run_service(settings, setup)
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(_serve_until_signal(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
