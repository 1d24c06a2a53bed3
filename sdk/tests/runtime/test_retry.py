"""Retries with gRPC's native retryPolicy, for idempotent methods only."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest

from sedna.runtime import ChannelConfig, RetryPolicy, open_sync_channel

FAST = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)


async def test_idempotent_method_is_retried_until_ok(serve: Any, connect: Any, echo: Any) -> None:
    running = await serve()
    channel = connect(running.server.address, idempotent=(f"{echo.SERVICE}/Flaky",), retry=FAST)
    assert await channel.unary_unary(echo.path("Flaky"))(b"k1") == b"ok after 3 attempts"
    assert running.state.flaky_attempts[b"k1"] == 3


async def test_idempotent_service_covers_all_its_methods(
    serve: Any, connect: Any, echo: Any
) -> None:
    running = await serve()
    channel = connect(running.server.address, idempotent=(echo.SERVICE,), retry=FAST)
    assert await channel.unary_unary(echo.path("Flaky"))(b"k2") == b"ok after 3 attempts"
    assert running.state.flaky_attempts[b"k2"] == 3


async def test_non_idempotent_method_is_tried_once(serve: Any, connect: Any, echo: Any) -> None:
    running = await serve()
    # Another method is idempotent; Flaky is not.
    channel = connect(running.server.address, idempotent=(f"{echo.SERVICE}/Echo",), retry=FAST)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(echo.path("Flaky"))(b"k3")
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert running.state.flaky_attempts[b"k3"] == 1


async def test_attempts_are_bounded_by_max_attempts(serve: Any, connect: Any, echo: Any) -> None:
    running = await serve()
    two = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.05)
    channel = connect(running.server.address, idempotent=(echo.SERVICE,), retry=two)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(echo.path("Flaky"))(b"k4")
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert running.state.flaky_attempts[b"k4"] == 2


async def test_other_codes_are_not_retried_by_default(serve: Any, connect: Any, echo: Any) -> None:
    running = await serve()
    channel = connect(running.server.address, idempotent=(echo.SERVICE,), retry=FAST)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(echo.path("Fail"))(b"")
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_sync_channel_retries_idempotent_method(serve: Any, echo: Any) -> None:
    running = await serve()
    config = ChannelConfig(
        target=running.server.address,
        idempotent=(f"/{echo.SERVICE}/Flaky",),
        retry=FAST,
        default_timeout=5,
    )

    def call() -> bytes:
        with open_sync_channel(config) as channel:
            response: bytes = channel.unary_unary(echo.path("Flaky"))(b"k5")
            return response

    assert await asyncio.to_thread(call) == b"ok after 3 attempts"


def test_service_config_json() -> None:
    config = ChannelConfig(
        target="gm:50051",
        idempotent=("sedna.api.gm.v1.ResourceService/Get", "sedna.api.kb.v1.KnowledgeBase"),
        retry=RetryPolicy(
            max_attempts=5,
            initial_backoff=0.2,
            max_backoff=3,
            backoff_multiplier=1.5,
            retryable_status_codes=(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED),
        ),
    )
    assert config.service_config() == {
        "methodConfig": [
            {
                "name": [
                    {"service": "sedna.api.gm.v1.ResourceService", "method": "Get"},
                    {"service": "sedna.api.kb.v1.KnowledgeBase"},
                ],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "3s",
                    "backoffMultiplier": 1.5,
                    "retryableStatusCodes": ["UNAVAILABLE", "ABORTED"],
                },
            }
        ]
    }
    options = dict(config.channel_options())
    assert options["grpc.enable_retries"] == 1
    assert json.loads(options["grpc.service_config"]) == config.service_config()
    assert options["grpc.max_send_message_length"] == 64 * 1024 * 1024
    assert options["grpc.max_receive_message_length"] == 64 * 1024 * 1024
    assert "grpc.keepalive_time_ms" in options


def test_nothing_idempotent_means_no_retry_policy() -> None:
    assert ChannelConfig(target="x:1").service_config() == {"methodConfig": []}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 1},
        {"max_attempts": 6},
        {"initial_backoff": 0},
        {"initial_backoff": 2, "max_backoff": 1},
        {"backoff_multiplier": 0},
        {"retryable_status_codes": ()},
        {"retryable_status_codes": (grpc.StatusCode.OK,)},
    ],
)
def test_invalid_retry_policy_is_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        RetryPolicy(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"idempotent": ("a.B/C/D",)},
        {"idempotent": ("",)},
        {"default_timeout": 0},
        {"max_receive_message_bytes": 0},
        {"target": " "},
    ],
)
def test_invalid_channel_config_is_rejected(kwargs: dict[str, Any]) -> None:
    values: dict[str, Any] = {"target": "x:1", **kwargs}
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        ChannelConfig(**values)
