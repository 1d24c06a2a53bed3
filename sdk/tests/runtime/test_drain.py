"""Graceful drain: in-flight calls finish, new calls are refused, SIGTERM exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sedna.runtime import ChannelConfig, ServiceServer, open_channel

SCRIPT = Path(__file__).with_name("echo_service.py")


async def test_in_flight_call_completes_while_new_calls_are_refused(
    serve: Any, connect: Any, echo: Any
) -> None:
    running = await serve()
    address = running.server.address
    slow = asyncio.ensure_future(
        connect(address).unary_unary(echo.path("Slow"))(b"3.0", timeout=20)
    )
    await asyncio.wait_for(running.state.slow_started.wait(), 5)

    began = time.monotonic()
    stopping = asyncio.ensure_future(running.server.stop(grace=12))

    async def refused() -> bool:
        # A fresh channel per attempt: the drain closes the listening socket.
        channel = connect(address, default_timeout=0.5)
        code = grpc.StatusCode.OK
        try:
            await channel.unary_unary(echo.path("Echo"))(b"late")
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
        # A call that races the start of the drain may be CANCELLED by the server, or
        # accepted by a connection that is going away and never answered (seen in CI as
        # DEADLINE_EXCEEDED); once the listener is closed every new call is UNAVAILABLE.
        racing = {grpc.StatusCode.OK, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED}
        assert code in racing | {grpc.StatusCode.UNAVAILABLE}
        return code is grpc.StatusCode.UNAVAILABLE

    await echo.eventually(refused, within=2.5)
    assert not slow.done(), "the in-flight call must still be running while new ones fail"
    assert await asyncio.wait_for(slow, 8) == b"done"
    await asyncio.wait_for(stopping, 8)
    # The drain waited for the call (3 s), not for the whole grace period (12 s).
    assert time.monotonic() - began < 8


async def test_calls_still_running_at_the_deadline_are_cancelled(
    serve: Any, connect: Any, echo: Any
) -> None:
    running = await serve()
    slow = asyncio.ensure_future(
        connect(running.server.address).unary_unary(echo.path("Slow"))(b"30", timeout=60)
    )
    await asyncio.wait_for(running.state.slow_started.wait(), 5)
    began = time.monotonic()
    await running.server.stop(grace=0.3)
    assert time.monotonic() - began < 3
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(slow, 5)
    assert caught.value.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}


async def test_stop_is_idempotent_and_runs_shutdown_callbacks(
    settings_factory: Any, echo: Any
) -> None:
    server = ServiceServer(settings_factory())
    server.add_generic_handler(echo.build_handler(echo.EchoState()), echo.SERVICE)
    closed: list[str] = []

    async def close_store() -> None:
        closed.append("store")

    server.on_shutdown(close_store)
    server.on_shutdown(lambda: closed.append("cache"))
    await server.start()
    await asyncio.gather(server.stop(1), server.stop(1))
    await server.stop()
    assert closed == ["store", "cache"]
    await asyncio.wait_for(server.wait_for_termination(), 1)


async def test_serve_forever_returns_after_stop(settings_factory: Any, echo: Any) -> None:
    server = ServiceServer(settings_factory())
    server.add_generic_handler(echo.build_handler(echo.EchoState()), echo.SERVICE)
    serving = asyncio.ensure_future(server.serve_forever())
    await echo.eventually(lambda: _true_if(server.started), within=5)
    await server.stop(1)
    await asyncio.wait_for(serving, 5)


async def _true_if(value: bool) -> bool:
    return value


async def _read_event(stream: asyncio.StreamReader, event: str, within: float) -> dict[str, Any]:
    """Read JSON lines from the child's stdout until one has ``event``."""
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"child did not report {event!r} within {within} s")
        line = await asyncio.wait_for(stream.readline(), remaining)
        if not line:
            raise AssertionError(f"child closed stdout before reporting {event!r}")
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(message, dict) and message.get("event") == event:
            return message


async def _wait_serving(address: str, within: float) -> None:
    channel = open_channel(ChannelConfig(target=address, default_timeout=1))
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + within
    try:
        while True:
            try:
                response = await stub.Check(health_pb2.HealthCheckRequest(), wait_for_ready=True)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{address} not SERVING within {within} s")
            await asyncio.sleep(0.05)
    finally:
        await channel.close()


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SEDNA_")}
    env.update(
        SEDNA_HOST="127.0.0.1",
        SEDNA_PORT="0",
        SEDNA_METRICS_PORT="none",
        SEDNA_DRAIN_SECONDS="10",
        SEDNA_LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@pytest.mark.slow
async def test_sigterm_drains_in_flight_call_and_exits_zero(echo: Any) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "run_until_signal",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_child_env(),
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        started = await _read_event(process.stdout, "started", within=20)
        address = f"127.0.0.1:{started['port']}"
        await _wait_serving(address, within=10)

        channel = open_channel(ChannelConfig(target=address, default_timeout=15))
        try:
            slow = asyncio.ensure_future(channel.unary_unary(echo.path("Slow"))(b"1.0"))
            await _read_event(process.stdout, "slow-started", within=10)
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(slow, 10) == b"done"
        finally:
            await channel.close()

        stopped = await _read_event(process.stdout, "stopped", within=10)
        assert stopped["slow_calls"] == 1
        assert await asyncio.wait_for(process.wait(), 10) == 0
        stderr = (await process.stderr.read()).decode()
        messages = [
            json.loads(line)["message"] for line in stderr.splitlines() if line.startswith("{")
        ]
        assert "received SIGTERM, draining" in messages
        assert "gRPC server stopped" in messages
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.slow
async def test_run_service_entry_point_drains_on_sigterm(echo: Any) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "run_service",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_child_env(),
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        # run_service reports its bound port in the JSON "gRPC server started" log line.
        started = await _read_event_from_log(process.stderr, "gRPC server started", within=20)
        address = started["address"]
        await _wait_serving(address, within=10)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _read_event_from_log(
    stream: asyncio.StreamReader, message: str, within: float
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"child did not log {message!r} within {within} s")
        line = await asyncio.wait_for(stream.readline(), remaining)
        if not line:
            raise AssertionError(f"child closed stderr before logging {message!r}")
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("message") == message:
            return dict(record)


async def test_run_service_reports_start_failure_with_exit_code(tmp_path: Path, echo: Any) -> None:
    # Another socket holds the port (and SO_REUSEPORT is off), so the bind must fail.
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            "run_service",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_child_env(SEDNA_PORT=str(port)),
        )
        _, stderr = await asyncio.wait_for(process.communicate(), 20)
        assert process.returncode == 1
        assert "cannot start" in stderr.decode()
        assert f"127.0.0.1:{port}" in stderr.decode()
    finally:
        blocker.close()
        await blocker.wait_closed()


def test_a_service_that_asks_to_exit_drains_and_returns_its_code(settings_factory: Any) -> None:
    import logging

    from sedna.runtime.server import run_service

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level  # run_service configures logging
    seen: list[str] = []

    def setup(server: ServiceServer) -> None:
        server.on_startup(lambda: server.request_exit(3))
        server.on_startup(lambda: server.request_exit(5))  # the first code stays
        server.on_shutdown(lambda: seen.append("shutdown"))

    try:
        assert run_service(settings_factory(), setup) == 3
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert seen == ["shutdown"]
