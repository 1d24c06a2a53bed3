"""Updates added layer by layer over loopback gRPC: back-out of failed uploads, deadlines
mid-upload, cancelled streams, and the S3 transmitter branch (with an in-memory object store).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest

from sedna.api.aggregator.v1 import aggregation_service_pb2 as pb
from sedna.api.aggregator.v1 import aggregation_service_pb2_grpc as pb_grpc
from sedna.api.common.v1.tensor_pb2 import TensorFrame
from sedna.runtime import ServiceServer
from sedna.tensor import TensorAssembler, iter_frames
from sedna_aggregator.core import MalformedUpdateError, SessionConfig
from sedna_aggregator.servicer import SERVICE_NAME, AggregationServicer, add_aggregation_service
from sedna_aggregator.settings import AggregatorSettings

Array = npt.NDArray[Any]
SID = "default/fl-stream"
SHAPES = [(40, 30), (30,), (30, 20)]
CHUNK = 512
TIMEOUT = 20.0


class FakeObjects:
    """The WeightsObjects port in memory (test only): objects are lists of named tensors."""

    def __init__(self) -> None:
        self.objects: dict[str, list[tuple[str, Array]]] = {}
        self.writes: list[str] = []
        self.write_gate: asyncio.Event | None = None

    def object_uri(self, session_id: str, round_number: int) -> str:
        return f"s3://bucket/agg/{session_id}/round-{round_number}"

    async def read(self, uri: str, *, max_bytes: int) -> AsyncIterator[tuple[str, Array]]:
        tensors = self.objects.get(uri)
        if tensors is None:
            raise MalformedUpdateError(f"object {uri} does not exist")
        if sum(a.nbytes for _n, a in tensors) > max_bytes:
            raise MalformedUpdateError(f"object {uri} is larger than {max_bytes} bytes")
        for name, array in tensors:
            await asyncio.sleep(0)
            yield name, array.copy()

    async def write(self, uri: str, tensors: Sequence[tuple[str, Array]]) -> None:
        self.writes.append(uri)
        if self.write_gate is not None:
            await self.write_gate.wait()
        self.objects[uri] = [(name, np.array(array)) for name, array in tensors]


class Harness:
    def __init__(self, servicer: AggregationServicer, stub: Any, address: str) -> None:
        self.servicer = servicer
        self.stub: pb_grpc.AggregationServiceAsyncStub = stub
        self.address = address


@asynccontextmanager
async def serve(objects: FakeObjects | None = None, **fields: Any) -> AsyncIterator[Harness]:
    settings = AggregatorSettings(host="127.0.0.1", port=0, metrics_port=None, drain_seconds=0.1)
    server = ServiceServer(settings)
    servicer = AggregationServicer(
        SessionConfig(**fields), objects=objects, max_update_bytes=1 << 20
    )
    server.add_servicer(add_aggregation_service, servicer, SERVICE_NAME)
    server.on_shutdown(servicer.aclose)
    await server.start()
    channel = grpc.aio.insecure_channel(server.address)
    try:
        yield Harness(servicer, pb_grpc.AggregationServiceStub(channel), server.address)
    finally:
        await channel.close()
        await server.stop(0.1)


def weights(seed: int) -> list[Array]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for shape in SHAPES]


def fedavg(updates: list[tuple[list[Array], int]]) -> list[Array]:
    total = sum(n for _w, n in updates)
    out: list[Array] = []
    for i in range(len(SHAPES)):
        acc = np.zeros(SHAPES[i], np.float64)
        for w, n in updates:
            acc += np.asarray(w[i], np.float64) * n
        out.append(acc / total)
    return out


def frames(layers: list[Array]) -> list[TensorFrame]:
    named = [(f"layer.{i}", w) for i, w in enumerate(layers)]
    return list(iter_frames(named, chunk_size=CHUNK))


def header(cid: str, round_number: int, samples: int, uri: str = "") -> pb.PushUpdateRequest:
    return pb.PushUpdateRequest(
        header=pb.UpdateHeader(
            session_id=SID,
            client_id=cid,
            round=round_number,
            sample_count=samples,
            weights_uri=uri,
        )
    )


def requests(
    cid: str, round_number: int, samples: int, body: list[TensorFrame]
) -> Iterator[pb.PushUpdateRequest]:
    yield header(cid, round_number, samples)
    for frame in body:
        yield pb.PushUpdateRequest(frame=frame)


def frame_requests(body: list[TensorFrame]) -> list[pb.PushUpdateRequest]:
    return [pb.PushUpdateRequest(frame=frame) for frame in body]


async def push(h: Harness, cid: str, r: int, layers: list[Array], n: int) -> Any:
    return await h.stub.PushUpdate(requests(cid, r, n, frames(layers)), timeout=TIMEOUT)


async def pull(h: Harness, r: int) -> tuple[pb.GlobalWeightsHeader, list[Array]]:
    call = h.stub.PullGlobalWeights(
        pb.PullGlobalWeightsRequest(session_id=SID, client_id="x", round=r), timeout=TIMEOUT
    )
    head: pb.GlobalWeightsHeader | None = None
    assembler = TensorAssembler()
    async for message in call:
        if message.WhichOneof("part") == "header":
            head = message.header
        else:
            assembler.feed(message.frame)
    assert head is not None
    return head, [a for _n, a in assembler.result()] if assembler.manifest else []


async def join(h: Harness, cid: str, n: int) -> None:
    await h.stub.JoinSession(
        pb.JoinSessionRequest(session_id=SID, client_id=cid, sample_count=n), timeout=TIMEOUT
    )


async def rejected(call: Awaitable[Any], code: grpc.StatusCode, *words: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    for word in words:
        assert word in (info.value.details() or ""), info.value.details()


def assert_close(got: list[Array], want: list[Array]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


async def eventually(check: Callable[[], bool], what: str, deadline: float = TIMEOUT) -> None:
    """Wait (with a deadline, polling the event loop) until ``check()`` holds."""
    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def layer_frames(body: list[TensorFrame], upto: int) -> list[TensorFrame]:
    """The manifest and the chunks of tensors ``< upto``."""
    return [f for f in body if f.WhichOneof("frame") == "manifest" or f.chunk.tensor_index < upto]


async def first_round(h: Harness) -> None:
    await join(h, "a", 10)
    await join(h, "b", 30)
    await push(h, "a", 1, weights(1), 10)
    await push(h, "b", 1, weights(2), 30)
    await pull(h, 1)


async def test_an_update_failing_after_some_layers_is_backed_out_and_may_be_retried() -> None:
    async with serve(exit_round=2, min_participants=2) as h:
        await first_round(h)
        good = weights(5)
        # Layer 0 arrives whole and is added; then layer 1 holds a NaN.
        nan = [good[0] * 100, good[1].copy(), good[2]]
        nan[1][7] = np.nan
        await rejected(
            h.stub.PushUpdate(requests("a", 2, 10, frames(nan))),
            grpc.StatusCode.INVALID_ARGUMENT,
            "layer 1",
            "'layer.1'",
            "NaN",
        )
        # Layers 0 and 1 added; layer 2's bytes do not match its CRC-32.
        body = frames([good[0] * 100, good[1] * 100, good[2]])
        last = body[-1]
        corrupt = TensorFrame()
        corrupt.CopyFrom(last)
        corrupt.chunk.data = bytes(len(last.chunk.data))
        await rejected(
            h.stub.PushUpdate(requests("a", 2, 10, [*body[:-1], corrupt])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "CRC-32",
            "layer.2",
        )
        # Two layers added, then the stream ends.
        await rejected(
            h.stub.PushUpdate(requests("a", 2, 10, layer_frames(body, 2))),
            grpc.StatusCode.INVALID_ARGUMENT,
            "truncated",
        )
        session = h.servicer.sessions[SID]
        await eventually(lambda: not session.aggregator.updates_in_progress, "the back-out")
        assert session.reported == ()
        # The retry counts, and the round is the reference: nothing of the failed uploads.
        updates = [(good, 10), (weights(6), 30)]
        await push(h, "a", 2, *updates[0])
        await push(h, "b", 2, *updates[1])
        head, got = await pull(h, 2)
        assert sorted(head.participants) == ["a", "b"]
        assert_close(got, fedavg(updates))


async def test_a_cancelled_upload_is_backed_out() -> None:
    async with serve(exit_round=2, min_participants=2) as h:
        await first_round(h)
        session = h.servicer.sessions[SID]
        body = frames([w * 1000 for w in weights(7)])
        release = asyncio.Event()

        async def stalled() -> AsyncIterator[pb.PushUpdateRequest]:
            yield header("a", 2, 10)
            for frame in layer_frames(body, 2):
                yield pb.PushUpdateRequest(frame=frame)
            await release.wait()  # the client hangs after two layers

        def two_layers_added() -> bool:
            update = session.aggregator._updates.get("a")
            return update is not None and update.added[:2] == [True, True]

        call = h.stub.PushUpdate(stalled(), timeout=TIMEOUT)
        await eventually(two_layers_added, "two layers of a's update to be added")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await eventually(lambda: not session.aggregator.updates_in_progress, "the back-out")
        await eventually(lambda: "a" not in session._pending, "the upload to end")
        release.set()
        updates = [(weights(8), 10), (weights(9), 30)]
        await push(h, "a", 2, *updates[0])
        await push(h, "b", 2, *updates[1])
        _head, got = await pull(h, 2)
        assert_close(got, fedavg(updates))


class _AbortingContext:
    """The one part of a servicer context PushUpdate uses on a refusal."""

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise grpc.RpcError(f"{code}: {details}")


async def test_a_stream_ending_short_waits_for_a_dead_client_s_cancellation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # gRPC ends a dead client's request stream first and cancels the call a moment later.
    async with serve(exit_round=2, min_participants=2) as h:
        await first_round(h)
        session = h.servicer.sessions[SID]
        body = frames(weights(7))
        ended = asyncio.Event()

        async def cut_short() -> AsyncIterator[pb.PushUpdateRequest]:
            yield header("a", 2, 10)
            for frame in layer_frames(body, 2):
                yield pb.PushUpdateRequest(frame=frame)
            ended.set()

        context: Any = _AbortingContext()
        with caplog.at_level("INFO", logger="sedna_aggregator.core.session"):
            call = asyncio.ensure_future(h.servicer.PushUpdate(cut_short(), context))
            await asyncio.wait_for(ended.wait(), TIMEOUT)
            await asyncio.sleep(0.02)  # the cancellation arrives 20 ms after the stream's end
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            await eventually(lambda: not session.aggregator.updates_in_progress, "back-out")
        aborted = [r.getMessage() for r in caplog.records if "was aborted" in r.getMessage()]
        assert aborted == [
            f"session {SID}: the update of a for round 2 was aborted (stream cancelled or "
            "broken); backing it out"
        ]


_STALLED_CLIENT = """
import sys, time
import grpc
import numpy as np
from sedna.api.aggregator.v1 import aggregation_service_pb2 as pb
from sedna.api.aggregator.v1 import aggregation_service_pb2_grpc as pb_grpc
from sedna.tensor import iter_frames

address, session = sys.argv[1], sys.argv[2]
stub = pb_grpc.AggregationServiceStub(grpc.insecure_channel(address))
layers = [("layer.0", np.ones((40, 30), np.float32)), ("layer.1", np.ones(30, np.float32)),
          ("layer.2", np.ones((30, 20), np.float32))]

def requests():
    yield pb.PushUpdateRequest(header=pb.UpdateHeader(
        session_id=session, client_id="a", round=2, sample_count=10))
    for k, frame in enumerate(iter_frames(layers, chunk_size=512)):
        yield pb.PushUpdateRequest(frame=frame)
        if k == 3:
            print("SENT", flush=True)
            time.sleep(120)  # killed here, mid-update

stub.PushUpdate(requests(), timeout=180)
"""


async def test_a_killed_client_s_update_is_backed_out_as_cancelled_not_malformed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A client that dies ends its request stream like one that stopped sending; the
    # cancellation of the call comes a moment later and must win over "truncated stream".
    async with serve(exit_round=2, min_participants=2) as h:
        await first_round(h)
        session = h.servicer.sessions[SID]
        client = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _STALLED_CLIENT, h.address, SID, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert client.stdout is not None
            line = await asyncio.wait_for(client.stdout.readline(), TIMEOUT)
            assert line.strip() == b"SENT"
            await eventually(
                lambda: "a" in session.aggregator.updates_in_progress, "a's update to begin"
            )
            with caplog.at_level("INFO", logger="sedna_aggregator.core.session"):
                client.kill()
                await client.wait()
                await eventually(lambda: "a" not in session._pending, "the upload to end")
                await eventually(lambda: not session.aggregator.updates_in_progress, "back-out")
        finally:
            if client.returncode is None:
                client.kill()
                await client.wait()
        aborted = [r.getMessage() for r in caplog.records if "was aborted" in r.getMessage()]
        assert len(aborted) == 1, caplog.text
        assert "stream cancelled or broken" in aborted[0]
        assert "truncated" not in aborted[0]


async def test_a_deadline_mid_upload_closes_the_round_without_that_update() -> None:
    async with serve(exit_round=2, min_participants=1, expected_clients=2, round_timeout=1.0) as h:
        await join(h, "a", 10)
        await join(h, "b", 30)
        session = h.servicer.sessions[SID]
        release = asyncio.Event()
        body = frames(weights(3))

        async def slow() -> AsyncIterator[pb.PushUpdateRequest]:
            yield header("b", 1, 30)
            for frame in layer_frames(body, 1):
                yield pb.PushUpdateRequest(frame=frame)
            await release.wait()  # stalls past the deadline
            for frame in body[len(layer_frames(body, 1)) :]:
                yield pb.PushUpdateRequest(frame=frame)

        call = h.stub.PushUpdate(slow(), timeout=TIMEOUT)
        await eventually(lambda: "b" in session.aggregator.updates_in_progress, "b's upload")
        mine = weights(4)
        await push(h, "a", 1, mine, 10)
        # The deadline closes the round with a only; b's added layer is backed out.
        head, got = await pull(h, 1)
        assert list(head.participants) == ["a"]
        assert list(head.dropped_clients) == ["b"]
        assert_close(got, [np.asarray(w, np.float64) for w in mine])
        release.set()
        await rejected(call, grpc.StatusCode.FAILED_PRECONDITION, "round 1")


async def test_s3_requests_without_a_transmitter_are_failed_precondition() -> None:
    async with serve(exit_round=1, min_participants=1) as h:
        await join(h, "a", 10)
        await rejected(
            h.stub.PushUpdate(iter([header("a", 1, 10, "s3://bucket/agg/u")]), timeout=TIMEOUT),
            grpc.StatusCode.FAILED_PRECONDITION,
            "no S3 transmitter configured",
        )
        await push(h, "a", 1, weights(1), 10)
        call = h.stub.PullGlobalWeights(
            pb.PullGlobalWeightsRequest(session_id=SID, client_id="a", round=1, by_reference=True),
            timeout=TIMEOUT,
        )
        await rejected(call.read(), grpc.StatusCode.FAILED_PRECONDITION, "no S3 transmitter")


async def pull_reference(h: Harness, r: int) -> tuple[pb.GlobalWeightsHeader, int]:
    call = h.stub.PullGlobalWeights(
        pb.PullGlobalWeightsRequest(session_id=SID, client_id="x", round=r, by_reference=True),
        timeout=TIMEOUT,
    )
    messages = [message async for message in call]
    assert messages[0].WhichOneof("part") == "header"
    return messages[0].header, len(messages) - 1


def stored(objects: FakeObjects, uri: str) -> list[Array]:
    named = dict(objects.objects[uri])
    return [named[f"layer.{i}"] for i in range(len(named))]


async def test_s3_updates_and_pulls_by_reference() -> None:
    objects = FakeObjects()
    async with serve(objects, exit_round=2, min_participants=2) as h:
        await join(h, "a", 10)
        await join(h, "b", 30)
        for r in (1, 2):
            updates = [(weights(10 * r), 10), (weights(10 * r + 1), 30)]
            for (w, n), cid in zip(updates, "ab", strict=True):
                uri = f"s3://bucket/agg/{cid}/r{r}"
                # Stored order need not be layer order (safetensors sorts by name).
                objects.objects[uri] = [(f"layer.{i}", w[i]) for i in reversed(range(len(w)))]
                ack = await h.stub.PushUpdate(iter([header(cid, r, n, uri)]), timeout=TIMEOUT)
                assert ack.round == r
            objects.write_gate = asyncio.Event()
            pulls = [asyncio.ensure_future(pull_reference(h, r)) for _ in range(4)]
            wanted = r

            def written(wanted: int = wanted) -> bool:
                return len(objects.writes) == wanted

            await eventually(written, "the aggregate's write")
            objects.write_gate.set()
            results = await asyncio.gather(*pulls)
            want_uri = objects.object_uri(SID, r)
            assert {(head.round, head.weights_uri, extra) for head, extra in results} == {
                (r, want_uri, 0)
            }
            assert objects.writes.count(want_uri) == 1  # concurrent pulls wrote it once
            assert_close(stored(objects, want_uri), fedavg(updates))
        # Streamed pulls still work next to pulls by reference.
        _head, got = await pull(h, 2)
        assert_close(got, stored(objects, objects.object_uri(SID, 2)))


async def test_bad_s3_updates_are_refused_naming_the_problem() -> None:
    objects = FakeObjects()
    async with serve(objects, exit_round=2, min_participants=2) as h:
        await first_round(h)
        good = weights(5)

        async def refused(tensors: list[tuple[str, Array]] | None, *words: str) -> None:
            uri = f"s3://bucket/agg/bad-{len(objects.objects)}"
            if tensors is not None:
                objects.objects[uri] = tensors
            await rejected(
                h.stub.PushUpdate(iter([header("a", 2, 10, uri)]), timeout=TIMEOUT),
                grpc.StatusCode.INVALID_ARGUMENT,
                *words,
            )

        named = [(f"layer.{i}", w) for i, w in enumerate(good)]
        nan = good[2].copy()
        nan[3, 4] = np.inf
        await refused([*named[:2], ("layer.2", nan)], "layer 2", "NaN")
        await refused([*named[:2], ("fc.weight", good[2])], "'fc.weight'", "layer.0 to layer.2")
        await refused([named[0], ("layer.1", good[1].astype(np.float64)), named[2]], "FLOAT64")
        await refused([named[0], ("layer.1", good[1][:5]), named[2]], "layer 1", "shape")
        await refused([named[0], named[0], named[2]], "twice")
        await refused(named[:2], "incomplete", "2")
        await refused(None, "does not exist")
        # Frames after a weights_uri header.
        objects.objects["s3://bucket/agg/ok"] = named
        await rejected(
            h.stub.PushUpdate(
                iter(
                    [
                        header("a", 2, 10, "s3://bucket/agg/ok"),
                        *list(requests("a", 2, 10, frames(good)))[1:],
                    ]
                ),
                timeout=TIMEOUT,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "weights_uri",
            "no TensorFrames",
        )
        session = h.servicer.sessions[SID]
        await eventually(lambda: not session.aggregator.updates_in_progress, "the back-outs")
        updates = [(good, 10), (weights(6), 30)]
        ack = await h.stub.PushUpdate(
            iter([header("a", 2, 10, "s3://bucket/agg/ok")]), timeout=TIMEOUT
        )
        assert ack.received_updates == 1
        await push(h, "b", 2, *updates[1])
        _head, got = await pull(h, 2)
        assert_close(got, fedavg(updates))


async def test_a_failed_write_of_the_aggregate_is_unavailable_and_retried() -> None:
    objects = FakeObjects()
    failures = [OSError("connection reset by the object store")]
    real_write = objects.write

    async def flaky_write(uri: str, tensors: Sequence[tuple[str, Array]]) -> None:
        if failures:
            raise failures.pop()
        await real_write(uri, tensors)

    objects.write = flaky_write  # type: ignore[method-assign]
    async with serve(objects, exit_round=1, min_participants=1) as h:
        await join(h, "a", 10)
        mine = weights(3)
        await push(h, "a", 1, mine, 10)
        call = h.stub.PullGlobalWeights(
            pb.PullGlobalWeightsRequest(session_id=SID, client_id="a", round=1, by_reference=True),
            timeout=TIMEOUT,
        )
        await rejected(call.read(), grpc.StatusCode.UNAVAILABLE, "connection reset", "round 1")
        head, extra = await pull_reference(h, 1)
        assert (head.weights_uri, extra) == (objects.object_uri(SID, 1), 0)
        assert_close(stored(objects, head.weights_uri), [np.asarray(w, np.float64) for w in mine])


@pytest.mark.parametrize("chunk_size", [512, 4, 6, 1001], ids=lambda c: f"chunk-{c}")
async def test_chunks_are_summed_as_they_arrive_whatever_their_size(chunk_size: int) -> None:
    # 512 and 4: whole float32 elements per chunk, each added as a view of its message;
    # 6 and 1001 bytes split elements: the tensor is assembled first. Same aggregate.
    def body(layers: list[Array]) -> list[TensorFrame]:
        named = [(f"layer.{i}", w) for i, w in enumerate(layers)]
        return list(iter_frames(named, chunk_size=chunk_size))

    async with serve(exit_round=1, min_participants=2) as h:
        await join(h, "a", 10)
        await join(h, "b", 30)
        updates = [(weights(11), 10), (weights(12), 30)]
        # A corrupt last chunk of a multi-chunk tensor: its earlier chunks were already
        # added, and are backed out with the update.
        frames_a = body(updates[0][0])
        last = frames_a[-1]
        corrupt = TensorFrame()
        corrupt.CopyFrom(last)
        corrupt.chunk.data = bytes(len(last.chunk.data))
        await rejected(
            h.stub.PushUpdate(requests("a", 1, 10, [*frames_a[:-1], corrupt])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "CRC-32",
        )
        for cid, (layers, n) in zip("ab", updates, strict=True):
            await h.stub.PushUpdate(requests(cid, 1, n, body(layers)), timeout=TIMEOUT)
        _head, got = await pull(h, 1)
        assert_close(got, fedavg(updates))
