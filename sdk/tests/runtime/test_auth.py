"""Bearer-token authentication over loopback, aio and sync clients."""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc.aio._interceptor import InterceptedStreamStreamCall
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sedna.runtime import (
    ChannelConfig,
    TokenAuthInterceptor,
    bearer_token_metadata,
    configure_logging,
    open_channel,
    open_sync_channel,
)

TOKEN = "sedna-test-token-7f3a9c"
OTHER = "sedna-test-token-rotated-2"


async def _echo_code(channel: grpc.aio.Channel, echo: Any, **call: Any) -> grpc.StatusCode:
    try:
        await channel.unary_unary(echo.path("Echo"))(b"x", **call)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_right_token_is_accepted(serve: Any, connect: Any, echo: Any) -> None:
    running = await serve(auth_tokens=[TOKEN, OTHER])
    assert (
        await _echo_code(connect(running.server.address, token=TOKEN), echo) is grpc.StatusCode.OK
    )
    assert (
        await _echo_code(connect(running.server.address, token=OTHER), echo) is grpc.StatusCode.OK
    )


async def test_all_call_kinds_carry_the_token(serve: Any, connect: Any, echo: Any) -> None:
    running = await serve(auth_tokens=[TOKEN])
    channel = connect(running.server.address, token=TOKEN)
    assert [m async for m in channel.unary_stream(echo.path("Stream"))(b"2")] == [b"0", b"1"]
    assert await channel.stream_unary(echo.path("Collect"))(iter([b"a"])) == b"a"
    assert [m async for m in channel.stream_stream(echo.path("Chat"))(iter([b"z"]))] == [b"Z"]


async def test_a_channel_without_bidi_interceptors_leaves_their_token_to_the_call(
    serve: Any, echo: Any
) -> None:
    running = await serve(auth_tokens=[TOKEN])
    config = ChannelConfig(target=running.server.address, token=TOKEN, default_timeout=5.0)
    async with open_channel(config, intercept_bidi_streams=False) as channel:
        # Other call kinds still get the token from the channel.
        assert await _echo_code(channel, echo) is grpc.StatusCode.OK
        chat = channel.stream_stream(echo.path("Chat"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            [m async for m in chat(iter([b"z"]), timeout=5.0)]
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
        # A bidi call written with write() is a plain grpc.aio call (no interceptor proxy,
        # whose request task grpc.aio leaves pending when the server ends the call first).
        call = chat(timeout=5.0, metadata=bearer_token_metadata(TOKEN))
        assert not isinstance(call, InterceptedStreamStreamCall)
        await call.write(b"z")
        await call.done_writing()
        assert [m async for m in call] == [b"Z"]


async def test_wrong_and_missing_token_are_unauthenticated(
    serve: Any, connect: Any, echo: Any
) -> None:
    running = await serve(auth_tokens=[TOKEN])
    address = running.server.address
    for channel, expected in [
        (connect(address), "missing bearer token"),
        (connect(address, token="wrong-token-123456"), "invalid bearer token"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(echo.path("Echo"))(b"x")
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert expected in caught.value.details()
        assert "wrong-token" not in caught.value.details()
    # Streams are rejected too.
    with pytest.raises(grpc.aio.AioRpcError) as stream_error:
        [m async for m in connect(address).unary_stream(echo.path("Stream"))(b"2")]
    assert stream_error.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_malformed_authorization_is_unauthenticated(
    serve: Any, connect: Any, echo: Any
) -> None:
    running = await serve(auth_tokens=[TOKEN])
    channel = connect(running.server.address)
    code = await _echo_code(channel, echo, metadata=(("authorization", f"Basic {TOKEN}"),))
    assert code is grpc.StatusCode.UNAUTHENTICATED


async def test_health_and_reflection_need_no_token(serve: Any, connect: Any) -> None:
    running = await serve(auth_tokens=[TOKEN])
    channel = connect(running.server.address)
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = [r async for r in stub.ServerReflectionInfo(iter([request]))]
    assert responses[0].list_services_response.service


async def test_token_file_is_accepted(serve: Any, connect: Any, echo: Any, tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text(f"# rotated weekly\n\n{OTHER}\n")
    running = await serve(auth_token_file=token_file)
    assert (
        await _echo_code(connect(running.server.address, token=OTHER), echo) is grpc.StatusCode.OK
    )
    assert (
        await _echo_code(connect(running.server.address, token=TOKEN), echo)
        is grpc.StatusCode.UNAUTHENTICATED
    )


async def test_sync_client_sends_token(serve: Any, echo: Any) -> None:
    running = await serve(auth_tokens=[TOKEN])

    def call(token: str | None) -> grpc.StatusCode:
        config = ChannelConfig(target=running.server.address, token=token, default_timeout=5)
        with open_sync_channel(config) as channel:
            try:
                channel.unary_unary(echo.path("Echo"))(b"x")
            except grpc.RpcError as exc:
                return exc.code()  # type: ignore[no-any-return,attr-defined]
            return grpc.StatusCode.OK

    assert await asyncio.to_thread(call, TOKEN) is grpc.StatusCode.OK
    assert await asyncio.to_thread(call, None) is grpc.StatusCode.UNAUTHENTICATED


async def test_token_never_reaches_logs(
    serve: Any, connect: Any, echo: Any, caplog: pytest.LogCaptureFixture
) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream=stream)
    caplog.set_level(logging.DEBUG)
    running = await serve(auth_tokens=[TOKEN])
    await _echo_code(connect(running.server.address, token=TOKEN), echo)
    await _echo_code(connect(running.server.address, token="wrong-token-abcdef"), echo)
    await _echo_code(connect(running.server.address), echo)
    # Even a careless log line is redacted by the handler configure_logging installed.
    logging.getLogger("sedna.careless").info("calling with Authorization: Bearer %s", TOKEN)
    logging.getLogger("sedna.careless").info("settings", extra={"auth_tokens": [TOKEN]})

    output = stream.getvalue()
    assert "rejected unauthenticated call" in output  # the rejections were logged...
    assert TOKEN not in output  # ...without the token
    assert "wrong-token-abcdef" not in output
    assert "Bearer [REDACTED]" in output
    assert TOKEN not in caplog.text  # other root handlers got the redaction filter too
    assert "wrong-token-abcdef" not in caplog.text


def test_interceptor_needs_a_token() -> None:
    with pytest.raises(ValueError, match="at least one"):
        TokenAuthInterceptor([])
