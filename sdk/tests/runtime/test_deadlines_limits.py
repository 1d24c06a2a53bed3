"""Deadlines (explicit and channel default) and message-size limits."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest

from sedna.runtime import ChannelConfig, open_sync_channel


async def test_short_timeout_gives_deadline_exceeded(serve: Any, connect: Any, echo: Any) -> None:
    running = await serve()
    channel = connect(running.server.address)
    began = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(echo.path("Slow"))(b"5", timeout=0.2)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - began < 3


async def test_channel_default_deadline_applies_when_call_sets_none(
    serve: Any, connect: Any, echo: Any
) -> None:
    running = await serve()
    channel = connect(running.server.address, default_timeout=0.3)
    began = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(echo.path("Slow"))(b"5")
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - began < 3
    # Streams get the default deadline too.
    chat = channel.stream_stream(echo.path("Chat"))()
    with pytest.raises(grpc.aio.AioRpcError) as stream_caught:
        await chat.read()
    assert stream_caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


async def test_explicit_timeout_beats_channel_default(serve: Any, connect: Any, echo: Any) -> None:
    running = await serve()
    channel = connect(running.server.address, default_timeout=0.1)
    assert await channel.unary_unary(echo.path("Slow"))(b"0.3", timeout=5) == b"done"


async def test_sync_channel_default_deadline(serve: Any, echo: Any) -> None:
    running = await serve()
    config = ChannelConfig(target=running.server.address, default_timeout=0.3)

    def call() -> grpc.StatusCode:
        with open_sync_channel(config) as channel:
            try:
                channel.unary_unary(echo.path("Slow"))(b"5")
            except grpc.RpcError as exc:
                return exc.code()  # type: ignore[no-any-return,attr-defined]
        return grpc.StatusCode.OK

    assert await asyncio.to_thread(call) is grpc.StatusCode.DEADLINE_EXCEEDED


async def test_request_over_server_limit_is_resource_exhausted(
    serve: Any, connect: Any, echo: Any
) -> None:
    running = await serve(max_receive_message_bytes=1024)
    channel = connect(running.server.address)
    assert await channel.unary_unary(echo.path("Echo"))(b"x" * 512) == b"x" * 512
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(echo.path("Echo"))(b"x" * 4096)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "1024" in caught.value.details()
    assert "4096" in caught.value.details()


async def test_response_over_client_limit_is_resource_exhausted(
    serve: Any, connect: Any, echo: Any
) -> None:
    running = await serve()
    channel = connect(running.server.address, max_receive_message_bytes=1000)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(echo.path("Echo"))(b"y" * 2000)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "1000" in caught.value.details()


async def test_response_over_server_send_limit_fails(serve: Any, connect: Any, echo: Any) -> None:
    running = await serve(max_send_message_bytes=1000)
    channel = connect(running.server.address)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(echo.path("Echo"))(b"z" * 2000)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_max_concurrent_rpcs_rejects_excess_calls(
    serve: Any, connect: Any, echo: Any
) -> None:
    running = await serve(max_concurrent_rpcs=1)
    channel = connect(running.server.address)
    slow = asyncio.ensure_future(channel.unary_unary(echo.path("Slow"))(b"0.5"))
    await asyncio.wait_for(running.state.slow_started.wait(), 5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(echo.path("Echo"))(b"x")
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await slow == b"done"
