"""The bulk port end to end: a real aggregator (``app.setup``) and real ``AggregationClient``s.

Clients join over gRPC, see the advertised bulk port, and push and pull their weights there;
the aggregate is checked against a reference FedAvg. Refusals, tokens, TLS, a client cut
midway, bad frames and an unreachable port (gRPC fallback) are covered too.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from support.pki import make_pki

from sedna.api.aggregator.v1 import bulk_transfer_pb2 as bulk_pb
from sedna.runtime import ChannelConfig, ServiceServer
from sedna.service.aggregation_client import (
    AggregationClient,
    AggregationClientError,
    NotJoinedError,
    UpdateRejectedError,
    WrongRoundError,
)
from sedna.service.bulk_wire import recv_message, send_message
from sedna.tensor import FramePlan, plan_frames
from sedna_aggregator import app
from sedna_aggregator.bulk import _read_groups
from sedna_aggregator.servicer import AggregationServicer
from sedna_aggregator.settings import AggregatorSettings

Array = npt.NDArray[Any]
SID = "default/fl-bulk"
SHAPES = [(64, 33), (0,), (1000,), (7, 5, 3), (40_000,)]


def model(seed: int) -> list[Array]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape, dtype=np.float32) for shape in SHAPES]


def fedavg(updates: list[tuple[list[Array], int]]) -> list[Array]:
    total = sum(n for _w, n in updates)
    return [
        sum(w[i].astype(np.float64) * n for w, n in updates) / total  # type: ignore[misc]
        for i in range(len(SHAPES))
    ]


@asynccontextmanager
async def serve(**fields: Any) -> AsyncIterator[tuple[ServiceServer, AggregationServicer]]:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": None,
        "drain_seconds": 0.1,
        "bulk_port": 0,
        "min_participants": 1,
        "exit_round": 3,
        **fields,
    }
    settings = AggregatorSettings(**values)
    server = ServiceServer(settings)
    servicer = app.setup(server, settings)
    await server.start()
    try:
        yield server, servicer
    finally:
        await server.stop(0.1)


def client_for(server: ServiceServer, **kwargs: Any) -> AggregationClient:
    return AggregationClient("127.0.0.1", server.port, timeout=20.0, chunk_size=16 << 10, **kwargs)


def uses_bulk(client: AggregationClient) -> bool:
    return client._bulk is not None  # the transport the client picked


async def until_metric(server: ServiceServer, name: str, want: float, **labels: str) -> None:
    """Wait (10 s deadline) until a metric sample reads ``want``.

    The server counts a request once it has answered it, so a client can see the
    answer a moment before the count moves.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    while (got := server.registry.get_sample_value(name, labels)) != want:
        assert loop.time() < deadline, f"{name}{labels} is {got}, expected {want}"
        await asyncio.sleep(0.01)


async def test_a_fedavg_round_over_the_bulk_port_matches_the_reference() -> None:
    async with serve(min_participants=2, expected_clients=2) as (server, servicer):
        assert servicer.bulk_port > 0
        updates = [(model(1), 100), (model(2), 300)]

        def trainer(cid: str, weights: list[Array], n: int) -> list[Array]:
            with client_for(server) as client:
                client.join(SID, cid, sample_count=n)
                assert uses_bulk(client)
                client.push(1, weights, sample_count=n)
                got = client.pull(1, timeout=20.0)
                assert uses_bulk(client)
                assert got.round == 1
                assert not got.exit
                return list(got.weights)

        results = await asyncio.gather(
            *(asyncio.to_thread(trainer, f"t{i}", w, n) for i, (w, n) in enumerate(updates))
        )
        expected = fedavg(updates)
        for weights in results:
            assert [a.shape for a in weights] == SHAPES
            for got, want in zip(weights, expected, strict=True):
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        status = servicer.sessions[SID].status()
        assert status.current_round == 2

        # The bulk port's requests show in its own metrics (not in grpc_server_*).
        await until_metric(
            server, "sedna_aggregator_bulk_requests_total", 2, kind="push", outcome="ok"
        )
        await until_metric(
            server, "sedna_aggregator_bulk_requests_total", 2, kind="pull", outcome="ok"
        )
        # Both clients closed theirs: the server sees each end within a moment.
        await until_metric(server, "sedna_aggregator_bulk_connections", 0)


async def test_a_pull_into_the_callers_arrays_receives_in_place() -> None:
    async with serve(min_participants=1) as (server, _servicer):

        def trainer() -> None:
            with client_for(server) as client:
                client.join(SID, "solo", sample_count=5)
                weights = model(3)
                client.push(1, weights, sample_count=5)
                mine = [np.zeros(shape, np.float32) for shape in SHAPES]
                got = client.pull(1, timeout=20.0, into=mine)
                for got_layer, buffer, sent in zip(got.weights, mine, weights, strict=True):
                    assert got_layer is buffer
                    np.testing.assert_allclose(got_layer, sent, rtol=1e-6)

        await asyncio.to_thread(trainer)


async def test_refusals_over_the_bulk_port_are_the_grpc_ones_and_keep_the_connection() -> None:
    async with serve() as (server, _servicer):

        def trainer() -> None:
            with client_for(server) as client:
                client.join(SID, "a", sample_count=10)
                with pytest.raises(WrongRoundError) as wrong:
                    client.push(2, model(1), sample_count=10, timeout=1.0)
                assert wrong.value.current_round == 1
                bad = model(1)
                bad[4][123] = np.nan
                with pytest.raises(UpdateRejectedError, match=r"layer\.4.*(NaN|non-finite)"):
                    client.push(1, bad, sample_count=10)
                # Layers 0-3 are small: one read from the socket brings all their chunks in,
                # and a refusal at the third of them must still drain exactly what is left.
                bad = model(1)
                bad[3][1, 2, 0] = np.inf
                with pytest.raises(UpdateRejectedError, match=r"layer\.3.*(NaN|infinite)"):
                    client.push(1, bad, sample_count=10)
                connection = client._bulk._sock if client._bulk else None
                assert connection is not None  # a refusal leaves the connection open
                assert client.push(1, model(1), sample_count=10) == 1
                assert client._bulk is not None
                assert client._bulk._sock is connection

        await asyncio.to_thread(trainer)


def test_small_chunks_are_read_with_their_neighbours_up_to_a_buffer() -> None:
    spans = [(0, 0, 4096), (1, 0, 100), (2, 0, 8), (3, 0, 3000), (3, 3000, 1000), (4, 0, 0)]
    assert _read_groups(spans, 4096) == [
        ([(0, 0, 4096)], 4096),
        ([(1, 0, 100), (2, 0, 8), (3, 0, 3000)], 3108),
        ([(3, 3000, 1000), (4, 0, 0)], 1000),
    ]
    assert _read_groups([], 4096) == []


async def test_a_push_before_joining_is_refused_as_not_joined() -> None:
    async with serve() as (server, _servicer):

        def trainer() -> None:
            with client_for(server) as first:
                first.join(SID, "a", sample_count=10)
            with client_for(server) as client:
                client.join(SID, "b", sample_count=10)
                client.client_id = "never-joined"
                with pytest.raises(NotJoinedError):
                    client.push(1, model(1), sample_count=10)

        await asyncio.to_thread(trainer)


async def test_the_bulk_port_requires_the_token_when_the_server_does() -> None:
    async with serve(auth_tokens=["s3cret"]) as (server, _servicer):

        def trainer(token: str) -> None:
            config = ChannelConfig(target="unused", token="s3cret")
            with client_for(server, channel_config=config) as client:
                client.join(SID, "a", sample_count=10)  # gRPC, with the right token
                assert client._bulk is not None
                client._bulk._token = token  # the bulk connection alone has another one
                client.push(1, model(1), sample_count=10)

        await asyncio.to_thread(trainer, "s3cret")
        with pytest.raises(AggregationClientError, match=r"UNAUTHENTICATED.*invalid bearer token"):
            await asyncio.to_thread(trainer, "wrong")
        await until_metric(
            server,
            "sedna_aggregator_bulk_requests_total",
            1,
            kind="push",
            outcome="unauthenticated",
        )


async def test_the_bulk_port_speaks_tls_when_the_server_does(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    async with serve(
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
        tls_client_ca_file=pki.ca,
        min_participants=1,
    ) as (server, _servicer):

        def trainer() -> None:
            config = ChannelConfig(
                target="unused",
                ca_file=pki.ca,
                cert_file=pki.client_cert,
                key_file=pki.client_key,
                server_name="localhost",
            )
            with client_for(server, channel_config=config) as client:
                client.join(SID, "a", sample_count=10)
                weights = model(4)
                client.push(1, weights, sample_count=10)
                got = client.pull(1, timeout=20.0)
                assert uses_bulk(client)
                np.testing.assert_allclose(got.weights[4], weights[4], rtol=1e-6)

        await asyncio.to_thread(trainer)


async def test_an_unreachable_bulk_port_falls_back_to_grpc(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serve(min_participants=1) as (server, servicer):
        with socket.socket() as probe:  # a port nothing listens on
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        servicer.bulk_port = closed_port

        def trainer() -> None:
            with client_for(server) as client:
                client.join(SID, "a", sample_count=10)
                weights = model(5)
                client.push(1, weights, sample_count=10)
                assert not uses_bulk(client)
                got = client.pull(1, timeout=20.0)
                np.testing.assert_allclose(got.weights[0], weights[0], rtol=1e-6)

        with caplog.at_level(logging.WARNING, logger="sedna.service.aggregation_client"):
            await asyncio.to_thread(trainer)
        assert f"bulk port 127.0.0.1:{closed_port}" in caplog.text
        assert "over gRPC instead" in caplog.text


def raw_push(
    client_id: str, weights: list[Array], samples: int
) -> tuple[bulk_pb.BulkRequest, FramePlan]:
    """A bulk push request of round 1 for ``weights`` in 16 KiB chunks, and its frame plan
    (``plan.payloads``: the bytes to send after the server's ready)."""
    plan = plan_frames([(f"layer.{i}", w) for i, w in enumerate(weights)], chunk_size=16 << 10)
    request = bulk_pb.BulkRequest(timeout_seconds=10.0)
    request.push.header.session_id = SID
    request.push.header.client_id = client_id
    request.push.header.round = 1
    request.push.header.sample_count = samples
    request.push.manifest.CopyFrom(plan.manifest)
    return request, plan


def raw_connection(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10.0)


async def test_a_client_cut_midway_leaves_no_trace_and_may_push_again() -> None:
    async with serve() as (server, servicer):

        def cut_then_push() -> int:
            with client_for(server) as client:
                client.join(SID, "a", sample_count=10)
            weights = model(6)
            request, plan = raw_push("a", weights, 10)
            with raw_connection(servicer.bulk_port) as sock:
                send_message(sock, request)
                ready = recv_message(sock, bulk_pb.BulkResponse)
                assert ready is not None
                assert ready.WhichOneof("response") == "ready"
                sock.sendall(plan.payloads[0][:1000])  # part of the first tensor, then gone
            with client_for(server) as client:
                client.join(SID, "a", sample_count=10)
                # Not a duplicate: the cut update was backed out.
                return client.push(1, weights, sample_count=10, timeout=10.0)

        assert await asyncio.to_thread(cut_then_push) == 1


async def test_a_corrupted_chunk_fails_its_tensors_crc_and_leaves_the_round_clean() -> None:
    async with serve(min_participants=2, expected_clients=2) as (server, servicer):
        weights = model(7)

        def corrupt_then_push() -> list[Array]:
            with client_for(server) as client:
                client.join(SID, "a", sample_count=100)
            request, plan = raw_push("a", weights, 100)
            payloads = [bytearray(payload) for payload in plan.payloads]
            # A flipped bit in the 7th of layer.4's ten 16 KiB chunks: the bytes still make
            # finite float32 values, so only the tensor's CRC-32 can tell.
            payloads[4][6 * (16 << 10) + 5] ^= 0x01
            with raw_connection(servicer.bulk_port) as sock:
                send_message(sock, request)
                ready = recv_message(sock, bulk_pb.BulkResponse)
                assert ready is not None
                assert ready.WhichOneof("response") == "ready"
                for payload in payloads:
                    sock.sendall(payload)
                answer = recv_message(sock, bulk_pb.BulkResponse)
                assert answer is not None
                assert answer.WhichOneof("response") == "error"
                assert "layer.4" in answer.error.message
                assert "CRC-32 mismatch" in answer.error.message
            with client_for(server) as client:  # the same update, intact this time
                client.join(SID, "a", sample_count=100)
                assert client.push(1, weights, sample_count=100) in (1, 2)  # b's may be in
                return list(client.pull(1, timeout=20.0).weights)

        with client_for(server) as other:
            # b first: with both joined the round is open when a's raw push arrives.
            await asyncio.to_thread(other.join, SID, "b", sample_count=300)
            got, _ = await asyncio.gather(
                asyncio.to_thread(corrupt_then_push),
                asyncio.to_thread(other.push, 1, model(8), sample_count=300),
            )
        for layer, want in zip(got, fedavg([(weights, 100), (model(8), 300)]), strict=True):
            np.testing.assert_allclose(layer, want, rtol=1e-5, atol=1e-6)


async def test_frames_that_break_the_protocol_close_only_their_connection() -> None:
    async with serve() as (server, servicer):

        def abuse() -> None:
            with raw_connection(servicer.bulk_port) as sock:
                sock.sendall(struct.pack("!I", 64 << 20))  # a 64 MiB "message"
                assert sock.recv(1) == b""  # closed
            with raw_connection(servicer.bulk_port) as sock:
                send_message(sock, bulk_pb.BulkRequest())  # neither push nor pull
                answer = recv_message(sock, bulk_pb.BulkResponse)
                assert answer is not None
                assert answer.error.code == 3  # INVALID_ARGUMENT
                assert "neither push nor pull" in answer.error.message
            request = bulk_pb.BulkRequest()
            request.push.header.session_id = SID
            request.push.header.client_id = "a"
            request.push.manifest.chunk_size = 1 << 30
            with raw_connection(servicer.bulk_port) as sock:
                send_message(sock, request)
                answer = recv_message(sock, bulk_pb.BulkResponse)
                assert answer is not None
                assert "chunk_size" in answer.error.message
            with client_for(server) as client:  # the server still serves
                client.join(SID, "a", sample_count=10)
                assert client.push(1, model(1), sample_count=10) == 1

        await asyncio.to_thread(abuse)


async def test_a_pull_waits_within_its_deadline_and_answers_deadline_exceeded() -> None:
    async with serve(min_participants=2) as (server, _servicer):

        def trainer() -> None:
            with client_for(server) as client:
                client.join(SID, "a", sample_count=10)
                with pytest.raises(AggregationClientError, match="DEADLINE_EXCEEDED"):
                    client.pull(1, timeout=0.5)

        await asyncio.to_thread(trainer)


async def test_bulk_port_none_advertises_no_port_and_clients_use_grpc() -> None:
    async with serve(bulk_port=None, min_participants=1) as (server, servicer):
        assert servicer.bulk_port == 0

        def trainer() -> None:
            with client_for(server) as client:
                client.join(SID, "a", sample_count=10)
                assert not uses_bulk(client)
                client.push(1, model(1), sample_count=10)
                assert client.pull(1, timeout=20.0).round == 1

        await asyncio.to_thread(trainer)


async def test_a_taken_default_bulk_port_is_a_warning_and_an_explicit_one_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(Exception, match=f"bulk_port {port}"):
            async with serve(bulk_port=port):
                pass
        # The same port, as if it were the default (not given): served without it.
        settings = AggregatorSettings(
            host="127.0.0.1", port=0, metrics_port=None, drain_seconds=0.1, bulk_port=port
        )
        settings.model_fields_set.discard("bulk_port")
        server = ServiceServer(settings)
        servicer = app.setup(server, settings)
        with caplog.at_level(logging.WARNING, logger="sedna_aggregator.app"):
            await server.start()
        try:
            assert servicer.bulk_port == 0
            assert f"bulk port {port} unavailable" in caplog.text
        finally:
            await server.stop(0.1)
