"""Health and reflection over real loopback connections."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sedna.runtime import HEALTH_SERVICE, REFLECTION_SERVICE, ServiceServer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _check(channel: grpc.aio.Channel, service: str = "") -> Any:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
    return response.status


async def test_health_check_reports_serving(serve: Any, connect: Any, echo: Any) -> None:
    running = await serve()
    channel = connect(running.server.address)
    assert await _check(channel) == SERVING
    assert await _check(channel, echo.SERVICE) == SERVING


async def test_unknown_service_health_is_not_found(serve: Any, connect: Any) -> None:
    running = await serve()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _check(connect(running.server.address), "no.such.Service")
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


async def test_set_serving_drives_overall_status(serve: Any, connect: Any, echo: Any) -> None:
    running = await serve()
    channel = connect(running.server.address)
    await running.server.set_serving(echo.SERVICE, False)
    assert await _check(channel, echo.SERVICE) == NOT_SERVING
    # Kubernetes probes check "": not ready while any service is not serving.
    assert await _check(channel) == NOT_SERVING
    await running.server.set_serving(echo.SERVICE, True)
    assert await _check(channel) == SERVING
    with pytest.raises(KeyError):
        await running.server.set_serving("no.such.Service", True)


async def test_initial_status_can_be_set_before_start(
    settings_factory: Any, connect: Any, echo: Any
) -> None:
    server = ServiceServer(settings_factory())
    server.add_generic_handler(echo.build_handler(echo.EchoState()), echo.SERVICE)
    await server.set_serving(echo.SERVICE, False)  # e.g. a model still loading
    await server.start()
    try:
        assert await _check(connect(server.address)) == NOT_SERVING
    finally:
        await server.stop(0)


async def test_watch_gets_not_serving_when_stop_begins_then_ends(serve: Any, connect: Any) -> None:
    running = await serve()
    stub = health_pb2_grpc.HealthStub(connect(running.server.address))
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
    first = await asyncio.wait_for(watch.read(), 5)
    assert first.status == SERVING

    stopping = asyncio.ensure_future(running.server.stop(grace=8))
    second = await asyncio.wait_for(watch.read(), 5)
    assert second.status == NOT_SERVING
    # The stream completes instead of holding the drain until its deadline.
    assert await asyncio.wait_for(watch.read(), 5) is grpc.aio.EOF
    assert await watch.code() is grpc.StatusCode.OK
    await asyncio.wait_for(stopping, 5)


async def test_health_and_reflection_are_listed_by_reflection(
    serve: Any, connect: Any, echo: Any
) -> None:
    running = await serve()
    stub = reflection_pb2_grpc.ServerReflectionStub(connect(running.server.address))
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = [response async for response in stub.ServerReflectionInfo(iter([request]))]
    assert len(responses) == 1
    names = {service.name for service in responses[0].list_services_response.service}
    assert names == {echo.SERVICE, HEALTH_SERVICE, REFLECTION_SERVICE}


async def test_server_reports_bound_ports(serve: Any) -> None:
    running = await serve()
    assert running.server.port > 0
    assert running.server.metrics_port is not None
    assert running.server.metrics_port > 0
    assert running.server.metrics_port != running.server.port
    assert running.server.address == f"127.0.0.1:{running.server.port}"


async def test_metrics_endpoint_can_be_disabled(serve: Any) -> None:
    running = await serve(metrics_port=None)
    assert running.server.metrics_port is None


async def test_port_in_use_is_a_clear_start_error(serve: Any, settings_factory: Any) -> None:
    from sedna.runtime import ServerStartError

    running = await serve()
    second = ServiceServer(settings_factory(port=running.server.port))
    with pytest.raises(ServerStartError, match=f"127.0.0.1:{running.server.port}"):
        await second.start()


async def test_services_cannot_be_added_after_start(serve: Any, echo: Any) -> None:
    running = await serve()
    with pytest.raises(RuntimeError, match="before start"):
        running.server.add_generic_handler(echo.build_handler(echo.EchoState()), "x.y.Other")


async def test_metrics_port_in_use_is_a_clear_start_error(
    serve: Any, settings_factory: Any
) -> None:
    from sedna.runtime import ServerStartError

    running = await serve()
    taken = running.server.metrics_port
    second = ServiceServer(settings_factory(metrics_port=taken))
    with pytest.raises(ServerStartError, match=f"metrics endpoint to 127.0.0.1:{taken}"):
        await second.start()
    assert not second.started
