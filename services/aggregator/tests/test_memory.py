"""Aggregator memory: K updates of a multi-MB float32 model through the real gRPC servicer.

The issue's target: the aggregator's peak memory stays under 3x one model's size whatever the
number of clients K is. tracemalloc traces numpy's allocations (and every Python object) of
this process, which runs the aggregator only: the K clients push and pull from another process
(this file run as a script).
"""

from __future__ import annotations

import asyncio
import sys
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from sedna.api.aggregator.v1 import aggregation_service_pb2 as pb
from sedna.api.aggregator.v1 import aggregation_service_pb2_grpc as pb_grpc
from sedna.runtime import ServiceServer
from sedna.tensor import TensorAssembler, iter_frames
from sedna_aggregator import app
from sedna_aggregator.settings import AggregatorSettings

Array = npt.NDArray[Any]
SID = "default/fl-memory"
K = 8
# 8M float32 parameters = 32 MB, in layers of different sizes (the largest is 1/4 of it).
SHAPES = [
    (2048, 1024),
    (1024,),
    (1024, 2048),
    (2048,),
    (1024, 1024),
    (1024,),
    (2048, 1024),
    (1024,),
    (1000, 1024),
    (1000,),
]
CHUNK = 1 << 20
TIMEOUT = 120.0


def model_bytes() -> int:
    return sum(int(np.prod(shape)) * 4 for shape in SHAPES)


def update(seed: int) -> list[Array]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape, dtype=np.float32) for shape in SHAPES]


@asynccontextmanager
async def serve(**fields: Any) -> AsyncIterator[tuple[Any, str]]:
    settings = AggregatorSettings(
        host="127.0.0.1", port=0, metrics_port=None, drain_seconds=0.1, **fields
    )
    server = ServiceServer(settings)
    app.setup(server, settings)
    await server.start()
    channel = grpc.aio.insecure_channel(
        server.address, options=[("grpc.max_receive_message_length", 8 << 20)]
    )
    try:
        yield pb_grpc.AggregationServiceStub(channel), server.address
    finally:
        await channel.close()
        await server.stop(0.1)


def requests(cid: str, round_number: int, layers: list[Array]) -> Iterator[pb.PushUpdateRequest]:
    yield pb.PushUpdateRequest(
        header=pb.UpdateHeader(
            session_id=SID, client_id=cid, round=round_number, sample_count=10 + len(cid)
        )
    )
    named = [(f"layer.{i}", w) for i, w in enumerate(layers)]
    for frame in iter_frames(named, chunk_size=CHUNK):
        yield pb.PushUpdateRequest(frame=frame)


async def pull_checksums(stub: Any, round_number: int) -> tuple[int, list[int]]:
    """Pull the aggregate without keeping it: the round and each tensor's CRC-32."""
    call = stub.PullGlobalWeights(
        pb.PullGlobalWeightsRequest(session_id=SID, client_id="x", round=round_number),
        timeout=TIMEOUT,
    )
    crcs: dict[int, int] = {}
    header_round = -1
    async for message in call:
        if message.WhichOneof("part") == "header":
            header_round = message.header.round
        elif message.frame.WhichOneof("frame") == "chunk":
            chunk = message.frame.chunk
            crcs[chunk.tensor_index] = zlib.crc32(chunk.data, crcs.get(chunk.tensor_index, 0))
    return header_round, [crcs[i] for i in sorted(crcs)]


async def run_round(stub: Any, round_number: int, updates: dict[str, list[Array]]) -> None:
    pushes = [
        stub.PushUpdate(requests(cid, round_number, layers), timeout=TIMEOUT)
        for cid, layers in updates.items()
    ]
    acks = await asyncio.gather(*pushes)
    assert sorted(a.received_updates for a in acks) == list(range(1, K + 1))
    pulled = await asyncio.gather(*(pull_checksums(stub, round_number) for _ in range(K)))
    assert {p[0] for p in pulled} == {round_number}
    assert len({tuple(p[1]) for p in pulled}) == 1


def fedavg(updates: dict[str, list[Array]]) -> list[Array]:
    total = sum(10 + len(cid) for cid in updates)
    out: list[Array] = []
    for i in range(len(SHAPES)):
        acc = np.zeros(SHAPES[i], np.float64)
        for cid, w in updates.items():
            acc += np.asarray(w[i], np.float64) * (10 + len(cid))
        out.append(acc / total)
    return out


async def clients_main(address: str) -> None:
    """The K clients (run in their own process, so their memory is not the aggregator's)."""
    channel = grpc.aio.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 8 << 20)]
    )
    stub = pb_grpc.AggregationServiceStub(channel)
    clients = [f"node-{k}" for k in range(K)]
    for cid in clients:
        await stub.JoinSession(
            pb.JoinSessionRequest(session_id=SID, client_id=cid, sample_count=1), timeout=TIMEOUT
        )
    for r in (1, 2):
        await run_round(stub, r, {cid: update(100 * r + k) for k, cid in enumerate(clients)})
    await channel.close()


async def test_peak_memory_of_k_updates_stays_under_three_models() -> None:
    size = model_bytes()
    async with serve(
        exit_round=3, min_participants=K, send_chunk_bytes=CHUNK, max_concurrent_updates=2
    ) as (stub, address):
        tracemalloc.start()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, __file__, address, stderr=asyncio.subprocess.PIPE
            )
            _out, err = await asyncio.wait_for(process.communicate(), timeout=TIMEOUT)
            assert process.returncode == 0, err.decode()
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        ratio = peak / size
        print(f"aggregator peak traced memory: {peak / 1e6:.1f} MB = {ratio:.2f}x the model")
        # Bound: the global weights + the running sum (2x) + one layer per update in flight
        # (max_concurrent_updates x the largest layer, 1/3 of this model) + chunks.
        assert ratio < 3.0, f"peak {peak} bytes is {ratio:.2f}x the {size}-byte model"
        # The aggregate is right: float32 sums against the float64 reference.
        call = stub.PullGlobalWeights(
            pb.PullGlobalWeightsRequest(session_id=SID, client_id="x", round=2), timeout=TIMEOUT
        )
        assembler = TensorAssembler()
        async for message in call:
            if message.WhichOneof("part") == "frame":
                assembler.feed(message.frame)
        got = [a for _n, a in assembler.result()]
        clients = [f"node-{k}" for k in range(K)]
        want = fedavg({cid: update(200 + k) for k, cid in enumerate(clients)})
        for g, w in zip(got, want, strict=True):
            assert g.dtype == np.float32
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
    asyncio.run(clients_main(sys.argv[1]))
