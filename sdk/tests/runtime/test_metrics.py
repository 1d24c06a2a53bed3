"""gRPC server metrics scraped from the /metrics endpoint over HTTP."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from typing import Any

import grpc
import pytest
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from sedna.runtime import MetricsEndpoint, new_registry

UNARY = "unary"


def _scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        assert response.status == 200
        return response.read().decode()


class Scraped:
    """One parsed scrape: metric families by name and a lookup of sample values."""

    def __init__(self, text: str) -> None:
        self.families = {family.name: family for family in text_string_to_metric_families(text)}

    def type_of(self, family: str) -> str:
        return str(self.families[family].type)

    def value(self, sample_name: str, **labels: str) -> float:
        """Value of the one sample with this name and these labels (0 when absent)."""
        values = [
            s.value
            for family in self.families.values()
            for s in family.samples
            if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert len(values) <= 1, f"{sample_name}{labels} is ambiguous"
        return float(values[0]) if values else 0.0


async def scrape(port: int) -> Scraped:
    """Scrape /metrics over real HTTP and parse it."""
    return Scraped(await asyncio.to_thread(_scrape, port))


async def _known_sequence(channel: grpc.aio.Channel, echo: Any) -> None:
    for _ in range(3):
        assert await channel.unary_unary(echo.path("Echo"))(b"hi") == b"hi"
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await channel.unary_unary(echo.path("Fail"))(b"")
    assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError):
        await channel.unary_unary(echo.path("SetCode"))(b"")
    with pytest.raises(grpc.aio.AioRpcError):
        await channel.unary_unary(echo.path("Boom"))(b"")
    assert [m async for m in channel.unary_stream(echo.path("Stream"))(b"3")] == [b"0", b"1", b"2"]
    assert [m async for m in channel.unary_stream(echo.path("WriteStream"))(b"2")] == [
        b"w0",
        b"w1",
    ]
    assert await channel.stream_unary(echo.path("Collect"))(iter([b"a", b"b"])) == b"a,b"
    assert await channel.stream_unary(echo.path("ReadCollect"))(iter([b"x", b"y", b"z"])) == (
        b"x,y,z"
    )
    chat = channel.stream_stream(echo.path("Chat"))(iter([b"p", b"q"]))
    assert [m async for m in chat] == [b"P", b"Q"]


def labels(method: str, grpc_type: str = UNARY, **extra: str) -> dict[str, str]:
    """The go-grpc-prometheus labels of an EchoService method."""
    return {
        "grpc_type": grpc_type,
        "grpc_service": "sedna.testing.v1.EchoService",
        "grpc_method": method,
        **extra,
    }


@pytest.fixture
async def known(serve: Any, connect: Any, echo: Any) -> Scraped:
    """A scrape taken after a known sequence of calls of all kinds, failures included."""
    running = await serve()
    await _known_sequence(connect(running.server.address), echo)
    port = running.server.metrics_port

    async def complete() -> bool:
        # Aborted calls are recorded just after their status is sent: wait, bounded.
        scraped = await scrape(port)
        chat = labels("Chat", "bidi_stream", grpc_code="OK")
        boom = labels("Boom", grpc_code="UNKNOWN")
        return (
            scraped.value("grpc_server_handled_total", **chat) == 1
            and scraped.value("grpc_server_handled_total", **boom) == 1
        )

    await echo.eventually(complete)
    return await scrape(port)


def test_metric_names_and_types(known: Scraped) -> None:
    assert known.type_of("grpc_server_started") == "counter"
    assert known.type_of("grpc_server_handled") == "counter"
    assert known.type_of("grpc_server_handling_seconds") == "histogram"
    assert known.type_of("grpc_server_msg_received") == "counter"
    assert known.type_of("grpc_server_msg_sent") == "counter"
    # The per-server registry also carries the process collectors.
    assert "process_resident_memory_bytes" in known.families


def test_started_and_handled_counts(known: Scraped) -> None:
    def started(method: str, grpc_type: str = UNARY) -> float:
        return known.value("grpc_server_started_total", **labels(method, grpc_type))

    def handled(method: str, code: str, grpc_type: str = UNARY) -> float:
        return known.value("grpc_server_handled_total", **labels(method, grpc_type, grpc_code=code))

    assert started("Echo") == 3
    assert handled("Echo", "OK") == 3
    assert handled("Echo", "INVALID_ARGUMENT") == 0
    assert started("Fail") == 1
    assert handled("Fail", "INVALID_ARGUMENT") == 1
    assert handled("Fail", "OK") == 0
    assert handled("SetCode", "NOT_FOUND") == 1
    assert handled("Boom", "UNKNOWN") == 1
    assert started("Stream", "server_stream") == 1
    assert handled("Stream", "OK", "server_stream") == 1
    assert handled("WriteStream", "OK", "server_stream") == 1
    assert started("Collect", "client_stream") == 1
    assert handled("Collect", "OK", "client_stream") == 1
    assert handled("ReadCollect", "OK", "client_stream") == 1
    assert started("Chat", "bidi_stream") == 1
    assert handled("Chat", "OK", "bidi_stream") == 1


def test_message_counts(known: Scraped) -> None:
    def received(method: str, grpc_type: str = UNARY) -> float:
        return known.value("grpc_server_msg_received_total", **labels(method, grpc_type))

    def sent(method: str, grpc_type: str = UNARY) -> float:
        return known.value("grpc_server_msg_sent_total", **labels(method, grpc_type))

    # As in go-grpc-prometheus, a unary call receives 1 and sends 1 when it succeeds.
    assert received("Echo") == 3
    assert sent("Echo") == 3
    assert received("Fail") == 1
    assert sent("Fail") == 0
    assert received("Stream", "server_stream") == 1
    assert sent("Stream", "server_stream") == 3
    assert sent("WriteStream", "server_stream") == 2
    assert received("Collect", "client_stream") == 2
    assert sent("Collect", "client_stream") == 1
    assert received("ReadCollect", "client_stream") == 3
    assert received("Chat", "bidi_stream") == 2
    assert sent("Chat", "bidi_stream") == 2


def test_handling_time_histogram(known: Scraped) -> None:
    echo_labels = labels("Echo")
    assert known.value("grpc_server_handling_seconds_count", **echo_labels) == 3
    assert known.value("grpc_server_handling_seconds_bucket", le="+Inf", **echo_labels) == 3
    assert known.value("grpc_server_handling_seconds_bucket", le="10.0", **echo_labels) == 3
    assert known.value("grpc_server_handling_seconds_sum", **echo_labels) > 0
    fail_labels = labels("Fail")
    assert known.value("grpc_server_handling_seconds_count", **fail_labels) == 1


async def test_deadline_exceeded_is_recorded(serve: Any, connect: Any, echo: Any) -> None:
    running = await serve()
    channel = connect(running.server.address)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(echo.path("Slow"))(b"5", timeout=0.2)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED

    async def recorded() -> bool:
        scraped = await scrape(running.server.metrics_port)
        labels = {"grpc_method": "Slow", "grpc_code": "DEADLINE_EXCEEDED"}
        return scraped.value("grpc_server_handled_total", **labels) == 1

    await echo.eventually(recorded)


async def test_unauthenticated_calls_are_counted(serve: Any, connect: Any, echo: Any) -> None:
    running = await serve(auth_tokens=["metrics-test-token-1"])
    with pytest.raises(grpc.aio.AioRpcError):
        await connect(running.server.address).unary_unary(echo.path("Echo"))(b"x")

    async def recorded() -> bool:
        scraped = await scrape(running.server.metrics_port)
        labels = {"grpc_method": "Echo", "grpc_code": "UNAUTHENTICATED"}
        return scraped.value("grpc_server_handled_total", **labels) == 1

    await echo.eventually(recorded)


async def test_feature_metrics_share_the_server_registry(serve: Any) -> None:
    running = await serve()
    jobs = Counter(
        "sedna_test_jobs", "Jobs seen by the test feature.", registry=running.server.registry
    )
    jobs.inc(2)
    scraped = await scrape(running.server.metrics_port)
    assert scraped.type_of("sedna_test_jobs") == "counter"
    assert scraped.value("sedna_test_jobs_total") == 2


async def test_two_servers_in_one_process_have_separate_metrics(
    serve: Any, connect: Any, echo: Any
) -> None:
    first, second = await serve(), await serve()
    await connect(first.server.address).unary_unary(echo.path("Echo"))(b"x")
    echo_started = {"grpc_method": "Echo"}
    first_scrape = await scrape(first.server.metrics_port)
    second_scrape = await scrape(second.server.metrics_port)
    assert first_scrape.value("grpc_server_started_total", **echo_started) == 1
    assert second_scrape.value("grpc_server_started_total", **echo_started) == 0


def test_metrics_endpoint_binds_free_port_and_stops_cleanly() -> None:
    registry = new_registry(process_metrics=False)
    Counter("probe", "A probe.", registry=registry).inc()
    endpoint = MetricsEndpoint(registry, "127.0.0.1", 0)
    port = endpoint.start()
    assert port > 0
    assert endpoint.url == f"http://127.0.0.1:{port}/metrics"
    assert "probe_total 1.0" in _scrape(port)
    with pytest.raises(urllib.error.HTTPError) as not_found:
        _scrape(port, "/other")
    assert not_found.value.code == 404
    not_found.value.close()  # the error carries the open response
    endpoint.stop()
    endpoint.stop()  # idempotent
    with pytest.raises(OSError):  # noqa: PT011 - connection refused, the exact errno varies
        _scrape(port)
    # The port is free again: a new endpoint can bind it.
    again = MetricsEndpoint(registry, "127.0.0.1", port)
    assert again.start() == port
    again.stop()
