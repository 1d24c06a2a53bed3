"""The aggregation server over loopback gRPC, driven through the generated stubs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
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
from sedna_aggregator import app
from sedna_aggregator.core import SessionConfig
from sedna_aggregator.servicer import (
    CURRENT_ROUND_METADATA_KEY,
    AggregationServicer,
    SessionConflictError,
)
from sedna_aggregator.settings import AggregatorSettings

Array = npt.NDArray[Any]
SID = "default/fl-job"
SHAPES = [(40, 30), (30,)]
CHUNK = 512  # 4800-byte layer -> 10 chunks
TIMEOUT = 10.0


class Harness:
    """A started server, its servicer and a stub on loopback."""

    def __init__(self, server: ServiceServer, servicer: AggregationServicer, stub: Any) -> None:
        self.server = server
        self.servicer = servicer
        self.stub: pb_grpc.AggregationServiceAsyncStub = stub

    def metric(self, name: str, **labels: str) -> float:
        value = self.server.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@asynccontextmanager
async def serve(**fields: Any) -> AsyncIterator[Harness]:
    settings = AggregatorSettings(
        host="127.0.0.1", port=0, metrics_port=None, drain_seconds=0.1, **fields
    )
    server = ServiceServer(settings)
    servicer = app.setup(server, settings)
    await server.start()
    channel = grpc.aio.insecure_channel(server.address)
    try:
        yield Harness(server, servicer, pb_grpc.AggregationServiceStub(channel))
    finally:
        await channel.close()
        await server.stop(0.1)


def weights(seed: int, dtype: Any = np.float32) -> list[Array]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]


def fedavg(updates: list[tuple[list[Array], int]]) -> list[Array]:
    total = sum(n for _w, n in updates)
    out: list[Array] = []
    for i in range(len(SHAPES)):
        acc = np.zeros(SHAPES[i], np.float64)
        for w, n in updates:
            acc += np.asarray(w[i], np.float64) * n
        out.append(acc / total)
    return out


def frames(layers: list[Array], chunk: int = CHUNK) -> list[TensorFrame]:
    return list(iter_frames([(f"layer.{i}", w) for i, w in enumerate(layers)], chunk_size=chunk))


def requests(
    cid: str, round_number: int, samples: int, body: list[TensorFrame], **metrics: float
) -> Iterator[pb.PushUpdateRequest]:
    yield pb.PushUpdateRequest(
        header=pb.UpdateHeader(
            session_id=SID, client_id=cid, round=round_number, sample_count=samples, metrics=metrics
        )
    )
    for frame in body:
        yield pb.PushUpdateRequest(frame=frame)


async def push(
    h: Harness, cid: str, round_number: int, layers: list[Array], samples: int, **metrics: float
) -> pb.PushUpdateResponse:
    call = h.stub.PushUpdate(
        requests(cid, round_number, samples, frames(layers), **metrics), timeout=TIMEOUT
    )
    return await call


async def pull(
    h: Harness, round_number: int, deadline: float = TIMEOUT
) -> tuple[pb.GlobalWeightsHeader, list[Array]]:
    call = h.stub.PullGlobalWeights(
        pb.PullGlobalWeightsRequest(session_id=SID, client_id="x", round=round_number),
        timeout=deadline,
    )
    header: pb.GlobalWeightsHeader | None = None
    assembler = TensorAssembler()
    async for message in call:
        if message.WhichOneof("part") == "header":
            header = message.header
        else:
            assembler.feed(message.frame)
    assert header is not None
    return header, [array for _name, array in assembler.result()]


async def join(h: Harness, cid: str, samples: int) -> pb.JoinSessionResponse:
    return await h.stub.JoinSession(
        pb.JoinSessionRequest(session_id=SID, client_id=cid, sample_count=samples),
        timeout=TIMEOUT,
    )


async def rejected(
    call: Awaitable[Any], code: grpc.StatusCode, *words: str
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    for word in words:
        assert word in (info.value.details() or ""), info.value.details()
    return info.value


def assert_close(got: list[Array], want: list[Array]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


CLIENTS = {"a": 10, "b": 30, "c": 60}


async def test_three_clients_two_rounds_of_fedavg_match_the_reference() -> None:
    async with serve(exit_round=2, min_participants=3, max_concurrent_updates=1) as h:
        for cid, n in CLIENTS.items():
            joined = await join(h, cid, n)
            assert joined.config.aggregation == "FedAvg"
            assert joined.current_round == 1
        assert joined.selected
        assert joined.state == pb.SESSION_STATE_TRAINING
        for round_number in (1, 2):
            updates = [(weights(10 * round_number + k), n) for k, n in enumerate(CLIENTS.values())]
            # Concurrent pushes through one assembly slot.
            acks = await asyncio.gather(
                *(
                    push(h, cid, round_number, w, n, accuracy=0.5 + 0.1 * k)
                    for k, (cid, (w, n)) in enumerate(zip(CLIENTS, updates, strict=True))
                )
            )
            assert sorted(a.received_updates for a in acks) == [1, 2, 3]
            header, got = await pull(h, round_number)
            assert header.round == round_number
            assert header.total_samples == 100
            assert sorted(header.participants) == ["a", "b", "c"]
            assert list(header.dropped_clients) == []
            assert header.exit == (round_number == 2)
            assert header.metrics["accuracy"] == pytest.approx(
                (0.5 * 10 + 0.6 * 30 + 0.7 * 60) / 100
            )
            assert_close(got, fedavg(updates))
        status = await h.stub.GetSessionStatus(pb.GetSessionStatusRequest(session_id=SID))
        assert status.state == pb.SESSION_STATE_COMPLETED
        assert [c.client_id for c in status.clients] == ["a", "b", "c"]
        assert all(c.last_round == 2 for c in status.clients)
        labels = {"session": SID}
        assert h.metric("sedna_aggregator_rounds_total", **labels) == 2
        assert h.metric("sedna_aggregator_updates_total", outcome="accepted", **labels) == 6
        assert h.metric("sedna_aggregator_bytes_received_total", **labels) == 6 * 4920
        assert h.metric("sedna_aggregator_bytes_sent_total", **labels) == 2 * 4920
        assert h.metric("sedna_aggregator_round_duration_seconds_count", **labels) == 2
        assert h.metric("sedna_aggregator_round_participants", **labels) == 3
        assert h.metric("sedna_aggregator_updates_in_flight") == 0
        # A finished session answers any later round with its last result.
        header, _ = await pull(h, 7)
        assert header.round == 2
        assert header.exit


async def test_a_caller_that_never_joined_may_pull_and_is_named_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Evaluators, dashboards and the CLI read the aggregate without joining the session.
    async with serve(exit_round=1, min_participants=1) as h:
        await join(h, "a", 10)
        mine = weights(1)
        await push(h, "a", 1, mine, 10)
        with caplog.at_level("DEBUG", logger="sedna_aggregator.servicer"):
            header, got = await pull(h, 1)
        assert list(header.participants) == ["a"]
        assert_close(got, mine)
        assert f"{SID}: 'x' pulled round 1 (4920 bytes)" in caplog.text


async def test_a_straggler_is_dropped_at_the_deadline() -> None:
    async with serve(
        exit_round=1, min_participants=2, expected_clients=3, round_timeout_seconds=0.4
    ) as h:
        for cid, n in CLIENTS.items():
            await join(h, cid, n)
        updates = [(weights(1), 10), (weights(2), 30)]
        waiter = asyncio.ensure_future(pull(h, 1))
        await push(h, "a", 1, *updates[0])
        await push(h, "b", 1, *updates[1])
        header, got = await waiter
        assert list(header.dropped_clients) == ["c"]
        assert sorted(header.participants) == ["a", "b"]
        assert_close(got, fedavg(updates))
        assert h.metric("sedna_aggregator_dropped_clients_total", session=SID) == 1
        # Too late: the session completed.
        await rejected(
            push(h, "c", 1, weights(3), 60), grpc.StatusCode.FAILED_PRECONDITION, "completed"
        )


async def test_pull_waits_within_the_callers_deadline() -> None:
    async with serve(exit_round=1, min_participants=2) as h:
        await join(h, "a", 1)
        await rejected(pull(h, 1, deadline=0.3), grpc.StatusCode.DEADLINE_EXCEEDED, "round 1")
        await rejected(
            h.stub.GetSessionStatus(pb.GetSessionStatusRequest(session_id="nope")),
            grpc.StatusCode.NOT_FOUND,
            "nope",
        )


def _swap_two_chunks(body: list[TensorFrame]) -> list[TensorFrame]:
    return [body[0], body[2], body[1], *body[3:]]


async def test_malformed_updates_are_rejected_and_the_round_is_unaffected() -> None:
    async with serve(exit_round=2, min_participants=2, max_update_bytes=8_000) as h:
        await join(h, "a", 10)
        await join(h, "b", 30)
        await push(h, "a", 1, weights(1), 10)
        await push(h, "b", 1, weights(2), 30)
        await pull(h, 1)
        good = weights(5)
        bad_shape = [good[0][:, :20].copy(), good[1]]
        nan = [good[0].copy(), good[1]]
        nan[0][3, 4] = np.nan
        cases: list[tuple[list[TensorFrame], grpc.StatusCode, str]] = [
            (frames(bad_shape), grpc.StatusCode.INVALID_ARGUMENT, "layer 0"),
            (
                frames([good[0].astype(np.int32), good[1]]),
                grpc.StatusCode.INVALID_ARGUMENT,
                "DATA_TYPE_INT32",
            ),
            (frames([good[0]]), grpc.StatusCode.INVALID_ARGUMENT, "1 layers"),
            (frames(nan), grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
            (_swap_two_chunks(frames(good)), grpc.StatusCode.INVALID_ARGUMENT, "layer.0"),
            (frames(good)[:-1], grpc.StatusCode.INVALID_ARGUMENT, "truncated"),
            (
                frames([good[0].astype(np.float64), good[1]]),
                grpc.StatusCode.INVALID_ARGUMENT,
                "max_total_bytes",
            ),
        ]
        for body, code, word in cases:
            await rejected(h.stub.PushUpdate(requests("a", 2, 10, body)), code, word)
        await rejected(
            h.stub.PushUpdate(requests("zed", 2, 10, frames(good))),
            grpc.StatusCode.FAILED_PRECONDITION,
            "has not joined",
        )
        error = await rejected(
            h.stub.PushUpdate(requests("a", 3, 10, frames(good))),
            grpc.StatusCode.FAILED_PRECONDITION,
            "round 3",
        )
        trailing = dict(error.trailing_metadata() or ())
        assert trailing[CURRENT_ROUND_METADATA_KEY] == "2"
        await rejected(
            h.stub.PushUpdate(iter([pb.PushUpdateRequest(frame=frames(good)[0])])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "UpdateHeader",
        )
        # The round is untouched: the good updates still give the exact reference.
        updates = [(good, 10), (weights(6), 30)]
        await push(h, "a", 2, *updates[0])
        await rejected(push(h, "a", 2, *updates[0]), grpc.StatusCode.ALREADY_EXISTS, "already")
        await push(h, "b", 2, *updates[1])
        header, got = await pull(h, 2)
        assert sorted(header.participants) == ["a", "b"]
        assert_close(got, fedavg(updates))
        assert h.metric("sedna_aggregator_updates_total", session=SID, outcome="malformed") == 7
        assert h.metric("sedna_aggregator_updates_total", session=SID, outcome="accepted") == 4


async def test_a_restarted_server_resumes_the_job_from_its_checkpoint(tmp_path: Path) -> None:
    fields: dict[str, Any] = {"exit_round": 3, "min_participants": 2, "checkpoint_dir": tmp_path}
    first = [(weights(1), 10), (weights(2), 30)]
    async with serve(**fields) as h:
        await join(h, "a", 10)
        await join(h, "b", 30)
        await push(h, "a", 1, *first[0])
        await push(h, "b", 1, *first[1])
        await pull(h, 1)
    async with serve(**fields) as h:
        await rejected(
            h.stub.GetSessionStatus(pb.GetSessionStatusRequest(session_id=SID)),
            grpc.StatusCode.NOT_FOUND,
        )
        joined = await join(h, "a", 10)
        assert joined.current_round == 2
        header, got = await pull(h, 0)
        assert header.round == 1
        assert_close(got, fedavg(first))
        await join(h, "b", 30)
        second = [(weights(3), 10), (weights(4), 30)]
        await push(h, "a", 2, *second[0])
        await push(h, "b", 2, *second[1])
        header, got = await pull(h, 2)
        assert header.round == 2
        assert not header.exit
        assert_close(got, fedavg(second))


async def test_a_conflicting_config_names_the_field() -> None:
    servicer = AggregationServicer(SessionConfig(exit_round=2))
    session = await servicer.open_session(SID)
    assert await servicer.open_session(SID, SessionConfig(exit_round=2)) is session
    with pytest.raises(SessionConflictError, match="min_participants") as info:
        await servicer.open_session(SID, SessionConfig(exit_round=2, min_participants=3))
    assert info.value.code == "FAILED_PRECONDITION"
    await servicer.aclose()


def test_settings_parse_the_session_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEDNA_AGGREGATOR_AGGREGATION", "FedAvgM")
    monkeypatch.setenv("SEDNA_AGGREGATOR_AGGREGATION_PARAMETERS", '{"server_momentum": 0.5}')
    monkeypatch.setenv("SEDNA_AGGREGATOR_ROUND_TIMEOUT_SECONDS", "none")
    config = AggregatorSettings().session_config()
    assert config.aggregation == "FedAvgM"
    assert config.aggregation_parameters == {"server_momentum": 0.5}
    assert config.round_timeout is None
    with pytest.raises(ValueError, match="server_momentum"):
        AggregatorSettings(aggregation_parameters={"server_momentum": 3})


async def test_join_with_a_config_creates_the_session_and_a_conflict_names_the_field() -> None:
    async with serve() as h:
        first = await h.stub.JoinSession(
            pb.JoinSessionRequest(
                session_id="ns/configured",
                client_id="a",
                sample_count=10,
                config=pb.SessionConfig(aggregation="FedAdam", exit_round=7),
            ),
            timeout=TIMEOUT,
        )
        assert (first.config.aggregation, first.config.exit_round) == ("FedAdam", 7)
        same = await h.stub.JoinSession(
            pb.JoinSessionRequest(
                session_id="ns/configured",
                client_id="b",
                sample_count=10,
                config=pb.SessionConfig(aggregation="FedAdam", exit_round=7),
            ),
            timeout=TIMEOUT,
        )
        assert same.config.exit_round == 7
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await h.stub.JoinSession(
                pb.JoinSessionRequest(
                    session_id="ns/configured",
                    client_id="c",
                    sample_count=10,
                    config=pb.SessionConfig(aggregation="FedAdam", exit_round=9),
                ),
                timeout=TIMEOUT,
            )
        assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "exit_round" in (caught.value.details() or "")


async def test_concurrent_pulls_of_a_round_share_one_checksummed_plan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sedna_aggregator import servicer as servicer_module

    built: list[int] = []
    real = servicer_module.plan_frames

    def counting(tensors: Any, *, chunk_size: int, crc32s: Any = None) -> Any:
        plan = real(tensors, chunk_size=chunk_size, crc32s=crc32s)
        built.append(int(plan.manifest.total_bytes))
        return plan

    monkeypatch.setattr(servicer_module, "plan_frames", counting)
    async with serve(exit_round=2, min_participants=2, send_chunk_bytes=CHUNK) as h:
        for cid in ("a", "b"):
            await join(h, cid, 10)
        for round_number in (1, 2):
            updates = [(weights(round_number * 10 + k), 10) for k in range(2)]
            pulls = [asyncio.ensure_future(pull(h, round_number)) for _ in range(4)]
            await asyncio.gather(
                *(
                    push(h, cid, round_number, w, n)
                    for cid, (w, n) in zip("ab", updates, strict=True)
                )
            )
            for header, got in await asyncio.gather(*pulls):
                assert header.round == round_number
                assert_close(got, fedavg(updates))
            assert len(built) == round_number  # once per round, whatever the pulls
        assert built == [4920, 4920]
        # Each chunk message was encoded once per round and sent to all four pulls.
        shared = h.servicer._shared_chunks
        assert shared.misses == 2 * 11  # 11 chunks of the 4920-byte aggregate, per round
        assert shared.hits == 3 * shared.misses


@pytest.mark.parametrize(("probe", "expected"), [(None, 0), (True, 1)])
def test_bdp_probing_is_off_unless_turned_on(probe: bool | None, expected: int) -> None:
    fields: dict[str, Any] = {} if probe is None else {"http2_bdp_probe": probe}
    settings = AggregatorSettings(host="127.0.0.1", port=0, metrics_port=None, **fields)
    server = ServiceServer(settings)
    app.setup(server, settings)
    options = dict(server._server_options())
    assert options["grpc.http2.bdp_probe"] == expected


def test_setup_caps_the_malloc_arenas(monkeypatch: pytest.MonkeyPatch) -> None:
    capped: list[int] = []
    monkeypatch.setattr(app, "limit_malloc_arenas", capped.append)
    settings = AggregatorSettings(host="127.0.0.1", port=0, metrics_port=None)
    app.setup(ServiceServer(settings), settings)
    assert capped == [app.MALLOC_ARENAS]


@pytest.mark.parametrize("where", ["weights_dir", "weights_in_memory"], ids=["file", "memory"])
async def test_the_settings_choose_where_the_aggregate_is_kept(where: str, tmp_path: Path) -> None:
    fields: dict[str, Any] = (
        {"weights_dir": tmp_path} if where == "weights_dir" else {"weights_in_memory": True}
    )
    async with serve(exit_round=1, min_participants=2, **fields) as h:
        for cid in ("a", "b"):
            await join(h, cid, 10)
        updates = [(weights(40 + k), 10) for k in range(2)]
        for cid, (w, n) in zip("ab", updates, strict=True):
            await push(h, cid, 1, w, n)
        _header, got = await pull(h, 1)
        assert_close(got, fedavg(updates))
        latest = h.servicer.sessions[SID].latest
        assert latest is not None
        if where == "weights_dir":
            assert latest.stored is not None  # an unlinked file in tmp_path
        else:
            assert latest.stored is None
