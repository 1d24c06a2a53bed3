"""AggregationClient's hand-written chunk messages against a plain protobuf gRPC server.

The client writes its update's chunks and reads the aggregate's with
:mod:`sedna.tensor.chunk_wire` instead of protobuf. The server here is registered with the
generated code only (protobuf parses and serializes every message), so these tests show that
the two ends agree on the wire in both directions, and that the client's behaviour around
those calls (retries, errors, the channel's interceptors) is unchanged.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest

from sedna.api.aggregator.v1 import aggregation_service_pb2 as pb
from sedna.api.aggregator.v1 import aggregation_service_pb2_grpc as pb_grpc
from sedna.api.common.v1.tensor_pb2 import TensorFrame
from sedna.runtime.channel import ChannelConfig
from sedna.service.aggregation_client import (
    REASON_METADATA_KEY,
    AggregationClient,
    AggregationClientError,
    AggregatorUnavailableError,
    UpdateRejectedError,
)
from sedna.tensor import TensorAssembler, iter_frames

Array = np.ndarray[Any, Any]
SID = "default/fl-wire"
CID = "trainworker-0"
CHUNK = 1000
TOKEN = "s3cret-token"


def model(seed: int) -> list[Array]:
    """Several tensors of several dtypes and layouts, most spanning many chunks."""
    rng = np.random.default_rng(seed)
    return [
        rng.standard_normal((37, 29)).astype(np.float32),  # 4292 bytes: 5 chunks, last short
        rng.standard_normal(250).astype(np.float64),  # exactly 2 chunks
        np.zeros((0, 3), np.float32),  # no chunk at all
        rng.standard_normal((11, 7)).astype(np.float16),  # 1 short chunk
        rng.standard_normal((64, 48)).astype(np.float32).T,  # not C-contiguous
        np.array(3.5, np.float32),  # 0-d
    ]


def chunk_count(arrays: list[Array]) -> int:
    return sum(math.ceil(np.asarray(a).nbytes / CHUNK) for a in arrays)


def assert_same(got: list[Array], sent: list[Array]) -> None:
    assert len(got) == len(sent)
    for g, s in zip(got, sent, strict=True):
        assert g.dtype == s.dtype
        assert g.shape == s.shape
        np.testing.assert_array_equal(g, s)


@dataclass
class Push:
    """One PushUpdate call as the server parsed it."""

    header: pb.UpdateHeader | None = None
    kinds: list[str] = field(default_factory=list)
    frames: list[bytes] = field(default_factory=list)
    chunks: int = 0
    arrays: list[Array] = field(default_factory=list)
    error: str = ""


class PlainServicer(pb_grpc.AggregationServiceServicer):
    """The aggregation service with protobuf's messages only (no chunk_wire)."""

    def __init__(self) -> None:
        self.port = 0
        self.pushes: list[Push] = []
        self.pulls = 0
        self.served: list[Array] = []
        self.corrupt_served_chunk = False
        # Answers for the next pushes, in order: (status, details, reason label).
        self.refusals: list[tuple[grpc.StatusCode, str, str]] = []
        self.require_token = False
        self.lock = threading.Lock()

    def _check_token(self, context: grpc.ServicerContext) -> None:
        if not self.require_token:
            return
        metadata = dict(context.invocation_metadata())
        if metadata.get("authorization") != f"Bearer {TOKEN}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "no or wrong token")

    def JoinSession(  # noqa: N802 - gRPC method name
        self, request: pb.JoinSessionRequest, context: grpc.ServicerContext
    ) -> pb.JoinSessionResponse:
        self._check_token(context)
        return pb.JoinSessionResponse(
            state=pb.SESSION_STATE_TRAINING, current_round=1, selected=True
        )

    def LeaveSession(  # noqa: N802 - gRPC method name
        self, request: pb.LeaveSessionRequest, context: grpc.ServicerContext
    ) -> pb.LeaveSessionResponse:
        return pb.LeaveSessionResponse()

    def GetSessionStatus(  # noqa: N802 - gRPC method name
        self, request: pb.GetSessionStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetSessionStatusResponse:
        return pb.GetSessionStatusResponse()

    def PushUpdate(  # noqa: N802 - gRPC method name
        self, request_iterator: Iterator[pb.PushUpdateRequest], context: grpc.ServicerContext
    ) -> pb.PushUpdateResponse:
        self._check_token(context)
        push = Push()
        with self.lock:
            self.pushes.append(push)
        assembler = TensorAssembler()
        for message in request_iterator:
            kind = message.WhichOneof("part")
            if kind == "header":
                push.kinds.append("header")
                push.header = message.header
                continue
            frame_kind = message.frame.WhichOneof("frame")
            push.kinds.append(str(frame_kind))
            push.chunks += frame_kind == "chunk"
            push.frames.append(message.frame.SerializeToString())
            try:
                assembler.feed(message.frame)
            except ValueError as exc:
                push.error = str(exc)
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        push.arrays = [array for _name, array in assembler.result()]
        with self.lock:
            refusal = self.refusals.pop(0) if self.refusals else None
        if refusal is not None:
            code, details, reason = refusal
            if reason:
                context.set_trailing_metadata(((REASON_METADATA_KEY, reason),))
            context.abort(code, details)
        assert push.header is not None
        return pb.PushUpdateResponse(round=push.header.round, received_updates=len(self.pushes))

    def PullGlobalWeights(  # noqa: N802 - gRPC method name
        self, request: pb.PullGlobalWeightsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.PullGlobalWeightsResponse]:
        self._check_token(context)
        self.pulls += 1
        yield pb.PullGlobalWeightsResponse(
            header=pb.GlobalWeightsHeader(
                round=request.round or 7,
                total_samples=90,
                participants=["a", "b"],
                dropped_clients=["c"],
                exit=True,
                metrics={"loss": 0.25},
            )
        )
        named = [(f"layer.{i}", w) for i, w in enumerate(self.served)]
        for i, frame in enumerate(iter_frames(named, chunk_size=CHUNK)):
            if self.corrupt_served_chunk and i == 2:
                data = bytearray(frame.chunk.data)
                data[0] ^= 0xFF
                frame.chunk.data = bytes(data)
            message = pb.PullGlobalWeightsResponse()
            message.frame.CopyFrom(frame)
            # As a peer receives it: serialized by protobuf (the server's serializer).
            yield message


@pytest.fixture
def servicer() -> Iterator[PlainServicer]:
    plain = PlainServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_AggregationServiceServicer_to_server(plain, server)
    plain.port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield plain
    finally:
        server.stop(0.5).wait()


def joined(servicer: PlainServicer, **kwargs: Any) -> AggregationClient:
    client = AggregationClient(
        "127.0.0.1",
        servicer.port,
        timeout=10.0,
        chunk_size=CHUNK,
        **kwargs,
    )
    client.join(SID, CID, sample_count=30)
    return client


# ---------------------------------------------------------------------------------------------
# Push: hand-written chunks, parsed by protobuf


def test_a_multi_chunk_multi_tensor_push_is_what_protobuf_reads(servicer: PlainServicer) -> None:
    sent = model(1)
    with joined(servicer) as client:
        received = client.push(3, sent, sample_count=30, metrics={"loss": 0.5})

    assert received == 1
    (push,) = servicer.pushes
    assert push.error == ""
    assert push.header == pb.UpdateHeader(
        session_id=SID, client_id=CID, round=3, sample_count=30, metrics={"loss": 0.5}
    )
    expected_chunks = chunk_count(sent)
    assert expected_chunks > 10
    assert push.kinds == ["header", "manifest"] + ["chunk"] * expected_chunks
    assert_same(push.arrays, sent)


def test_a_refused_then_accepted_push_sends_the_whole_update_again(
    servicer: PlainServicer,
) -> None:
    # "Round not open" is retried: the second attempt re-reads the chunks from the arrays.
    servicer.refusals.append(
        (grpc.StatusCode.FAILED_PRECONDITION, "round 1 is not open", "round_not_open")
    )
    sent = model(2)
    with joined(servicer) as client:
        assert client.push(1, sent, sample_count=30) == 2

    assert len(servicer.pushes) == 2
    for push in servicer.pushes:
        assert push.chunks == chunk_count(sent)
        assert_same(push.arrays, sent)


def test_unavailable_once_frames_were_sent_is_not_retried(servicer: PlainServicer) -> None:
    servicer.refusals.append((grpc.StatusCode.UNAVAILABLE, "going away", ""))
    with joined(servicer) as client, pytest.raises(AggregatorUnavailableError, match="going"):
        client.push(1, model(3), sample_count=30)
    assert len(servicer.pushes) == 1


def test_a_rejected_push_is_an_update_rejected_error(servicer: PlainServicer) -> None:
    servicer.refusals.append((grpc.StatusCode.INVALID_ARGUMENT, "layer.0 has NaN", ""))
    with (
        joined(servicer) as client,
        pytest.raises(UpdateRejectedError, match=r"push of round 1 .*INVALID_ARGUMENT.*NaN"),
    ):
        client.push(1, model(4), sample_count=30)


def test_a_dtype_without_wire_form_is_refused_before_sending(servicer: PlainServicer) -> None:
    with (
        joined(servicer) as client,
        pytest.raises(ValueError, match=r"cannot send layer\.1 of the update"),
    ):
        client.push(1, [np.ones(3, np.float32), np.array(["x"])], sample_count=30)
    assert servicer.pushes == []


# ---------------------------------------------------------------------------------------------
# Pull: protobuf's messages, read by chunk_wire


def test_a_multi_chunk_multi_tensor_pull_equals_the_served_arrays(
    servicer: PlainServicer,
) -> None:
    servicer.served = model(5)
    with joined(servicer) as client:
        got = client.pull(7, timeout=10)

    assert got.round == 7
    assert got.exit is True
    assert got.total_samples == 90
    assert got.participants == ("a", "b")
    assert got.dropped_clients == ("c",)
    assert got.metrics == {"loss": 0.25}
    assert_same(got.weights, servicer.served)
    for array in got.weights:
        assert array.flags.writeable  # the assembler's own buffers, not message views


def test_a_pull_into_the_callers_arrays_writes_them_in_place(servicer: PlainServicer) -> None:
    servicer.served = model(5)
    buffers = [np.zeros(a.shape, a.dtype) for a in servicer.served]
    buffers[4] = np.zeros(servicer.served[4].shape[::-1], np.float32).T  # not C-contiguous
    buffers[5] = np.zeros((), np.float64)  # another dtype
    with joined(servicer) as client:
        got = client.pull(7, timeout=10, into=buffers)
    assert_same(got.weights, servicer.served)
    for index, (array, buffer) in enumerate(zip(got.weights, buffers, strict=True)):
        # Matching buffers are the returned arrays; the others were left alone.
        if index in (4, 5):
            assert array is not buffer
            assert not buffer.any()
        else:
            assert array is buffer


def test_a_pull_with_no_tensors(servicer: PlainServicer) -> None:
    with joined(servicer) as client:
        got = client.pull(1, timeout=10)
    assert got.weights == []


def test_a_corrupted_pulled_chunk_fails_the_crc(servicer: PlainServicer) -> None:
    servicer.served = model(6)
    servicer.corrupt_served_chunk = True
    with (
        joined(servicer) as client,
        pytest.raises(
            AggregationClientError, match=r"undecodable weights: .*CRC-32 mismatch"
        ) as info,
    ):
        client.pull(1, timeout=10)
    assert servicer.pulls == 1  # a broken stream is not retried
    assert type(info.value) is AggregationClientError


# ---------------------------------------------------------------------------------------------
# The channel's interceptors apply to the hand-written calls too


def test_the_token_goes_with_push_and_pull(servicer: PlainServicer) -> None:
    servicer.require_token = True
    servicer.served = model(7)
    sent = model(8)
    config = ChannelConfig(target="ignored:1", token=TOKEN)
    with joined(servicer, channel_config=config) as client:
        client.push(1, sent, sample_count=30)
        got = client.pull(1, timeout=10)
    assert_same(servicer.pushes[0].arrays, sent)
    assert_same(got.weights, servicer.served)


def test_without_the_token_the_server_refuses_push_and_pull(servicer: PlainServicer) -> None:
    with joined(servicer) as client:
        servicer.require_token = True
        with pytest.raises(AggregationClientError, match="UNAUTHENTICATED"):
            client.push(1, model(9), sample_count=30)
        with pytest.raises(AggregationClientError, match="UNAUTHENTICATED"):
            client.pull(1, timeout=10)


def test_the_frames_the_server_parses_are_the_ones_protobuf_would_send(
    servicer: PlainServicer,
) -> None:
    sent = model(10)
    with joined(servicer) as client:
        client.push(1, sent, sample_count=30)
    reference = iter_frames([(f"layer.{i}", w) for i, w in enumerate(sent)], chunk_size=CHUNK)
    (push,) = servicer.pushes

    def unpadded(raw: bytes) -> bytes:
        # The client pads each chunk's header (data 16-byte aligned); protobuf's would not.
        frame = TensorFrame.FromString(raw)
        if frame.WhichOneof("frame") == "chunk":
            assert set(frame.chunk.padding) <= {0}
            frame.chunk.ClearField("padding")
        return frame.SerializeToString()

    assert [unpadded(raw) for raw in push.frames] == [
        frame.SerializeToString() for frame in reference
    ]
