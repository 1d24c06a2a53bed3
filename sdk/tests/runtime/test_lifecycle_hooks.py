"""Server lifecycle hooks: startup (after bind), drain (ends long streams), auth exemptions."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest

from sedna.runtime import ServiceServer
from sedna.runtime.server import ServerStartError

TOKEN = "hooks-token-123"


async def test_startup_callbacks_see_the_bound_port(settings_factory: Any, echo: Any) -> None:
    server = ServiceServer(settings_factory())
    server.add_generic_handler(echo.build_handler(echo.EchoState()), echo.SERVICE)
    seen: list[int] = []

    async def announce() -> None:
        seen.append(server.port)

    server.on_startup(announce)
    await server.start()
    try:
        assert seen == [server.port]
        assert seen[0] > 0
    finally:
        await server.stop(0)


async def test_failing_startup_callback_stops_the_server(settings_factory: Any, echo: Any) -> None:
    server = ServiceServer(settings_factory())
    server.add_generic_handler(echo.build_handler(echo.EchoState()), echo.SERVICE)

    def broken() -> None:
        raise OSError("cannot bind the side port")

    server.on_startup(broken)
    with pytest.raises(ServerStartError, match="startup failed: OSError: cannot bind"):
        await server.start()
    await asyncio.wait_for(server.wait_for_termination(), 5)


async def test_drain_callback_ends_long_streams_before_the_grace_period(
    settings_factory: Any, connect: Any, echo: Any
) -> None:
    state = echo.EchoState()
    server = ServiceServer(settings_factory())
    server.add_generic_handler(echo.build_handler(state), echo.SERVICE)
    server.on_drain(state.slow_release.set)
    await server.start()
    # "Slow" waits for the given seconds or until released: a stand-in for a node stream.
    slow = asyncio.ensure_future(
        connect(server.address).unary_unary(echo.path("Slow"))(b"60", timeout=90)
    )
    await asyncio.wait_for(state.slow_started.wait(), 5)
    began = time.monotonic()
    await server.stop(grace=30)
    assert time.monotonic() - began < 5, "the drain waited for the stream's grace period"
    assert await asyncio.wait_for(slow, 5) == b"done"


async def test_exempt_service_needs_no_token_others_still_do(
    settings_factory: Any, connect: Any, echo: Any
) -> None:
    server = ServiceServer(settings_factory(auth_tokens=[TOKEN]))
    server.add_generic_handler(echo.build_handler(echo.EchoState()), echo.SERVICE)
    server.exempt_from_token_auth(echo.SERVICE)
    await server.start()
    try:
        channel = connect(server.address)
        assert await channel.unary_unary(echo.path("Echo"))(b"hi") == b"hi"
    finally:
        await server.stop(0)

    guarded = ServiceServer(settings_factory(auth_tokens=[TOKEN]))
    guarded.add_generic_handler(echo.build_handler(echo.EchoState()), echo.SERVICE)
    await guarded.start()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await connect(guarded.address).unary_unary(echo.path("Echo"))(b"hi")
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    finally:
        await guarded.stop(0)
