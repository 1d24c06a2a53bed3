"""The split-learning servicers on loopback: bad uploads refused naming the problem."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from sedna.api.aggregator.v1 import aggregation_service_pb2 as pb
from sedna.api.aggregator.v1 import aggregation_service_pb2_grpc as pb_grpc
from sedna.api.aggregator.v1 import split_learning_service_pb2 as split_pb
from sedna.api.aggregator.v1 import split_learning_service_pb2_grpc as split_grpc
from sedna.runtime import ServiceServer
from sedna.runtime.config import ServiceSettings
from sedna.service.aggregation_client import (
    NotJoinedError,
    SessionConfigConflictError,
    SessionNotFoundError,
    UpdateRejectedError,
)
from sedna.service.split_learning import (
    SplitConfig,
    SplitLearningClient,
    SplitSession,
    add_split_learning_services,
)
from sedna.tensor import iter_frames

SESSION = "default/mistnet"
CALL_TIMEOUT = 30.0


class FixedModel:
    """A ServerModel whose training returns the features' mean (no torch needed)."""

    def get_weights(self) -> list[np.ndarray[Any, Any]]:
        return [np.arange(6, dtype=np.float32).reshape(2, 3)]

    def train_round(
        self, features: np.ndarray[Any, Any], labels: np.ndarray[Any, Any], round_number: int
    ) -> dict[str, float]:
        return {"mean": float(features.mean())}


class Server:
    """A ServiceServer with the split-learning services of one session, in a loop thread."""

    def __init__(self, config: SplitConfig, max_upload_bytes: int = 1 << 20) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> ServiceServer:
            server = ServiceServer(ServiceSettings(host="127.0.0.1", port=0, metrics_port=None))
            self.session = SplitSession(SESSION, config, FixedModel())
            add_split_learning_services(server, self.session, max_upload_bytes=max_upload_bytes)
            await server.start()
            return server

        self.server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)
        self.port = self.server.port

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(0.1), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def server() -> Iterator[Server]:
    started = Server(SplitConfig(cut_layer=2, epsilon=10.0, min_clients=1), max_upload_bytes=4096)
    yield started
    started.close()


@pytest.fixture
def client(server: Server) -> Iterator[SplitLearningClient]:
    with SplitLearningClient("127.0.0.1", server.port, timeout=CALL_TIMEOUT) as joined:
        joined.join(SESSION, "edge-1", sample_count=8)
        yield joined


def raw_upload(port: int, client_id: str, tensors: list[tuple[str, Any]]) -> grpc.RpcError:
    header = split_pb.FeatureBatchHeader(
        session_id=SESSION, client_id=client_id, round=1, cut_layer=2, epsilon=10.0
    )

    def messages() -> Iterator[split_pb.UploadFeaturesRequest]:
        yield split_pb.UploadFeaturesRequest(header=header)
        for frame in iter_frames(tensors):
            yield split_pb.UploadFeaturesRequest(frame=frame)

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = split_grpc.SplitLearningServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.UploadFeatures(messages(), timeout=CALL_TIMEOUT)
    return info.value


def x(n: int) -> np.ndarray[Any, Any]:
    return np.ones((n, 4), np.float32)


def y(n: int) -> np.ndarray[Any, Any]:
    return np.zeros(n, np.int64)


def test_a_good_upload_is_counted_and_the_model_pulled(client: SplitLearningClient) -> None:
    assert client.upload(1, x(5), y(5), cut_layer=2, epsilon=10.0) == 5
    assert client.upload(1, x(3) * 3, y(3), cut_layer=2, epsilon=10.0) == 8
    result = client.pull(1, timeout=CALL_TIMEOUT)
    assert result.round == 1
    assert result.exit
    assert result.metrics["mean"] == pytest.approx((5 + 9) / 8)
    np.testing.assert_array_equal(result.weights[0], np.arange(6).reshape(2, 3))
    assert client.status().state == "COMPLETED"


def test_initial_model_is_pulled_as_round_zero(client: SplitLearningClient) -> None:
    result = client.pull(0, timeout=CALL_TIMEOUT)
    assert result.round == 0
    assert not result.exit
    assert result.weights[0].shape == (2, 3)


def test_wrong_cut_layer_or_epsilon_is_refused_by_name(client: SplitLearningClient) -> None:
    with pytest.raises(SessionConfigConflictError, match="cut_layer is 3, the session's is 2"):
        client.upload(1, x(2), y(2), cut_layer=3, epsilon=10.0)
    with pytest.raises(SessionConfigConflictError, match=r"epsilon is 5\.0"):
        client.upload(1, x(2), y(2), cut_layer=2, epsilon=5.0)


def test_nan_features_are_refused_naming_the_tensor(client: SplitLearningClient) -> None:
    bad = x(2)
    bad[1, 3] = math.nan
    with pytest.raises(UpdateRejectedError, match="'features' holds nan at index \\(1, 3\\)"):
        client.upload(1, bad, y(2), cut_layer=2, epsilon=10.0)
    # Nothing of the refused batch was kept.
    assert client.upload(1, x(2), y(2), cut_layer=2, epsilon=10.0) == 2


def test_counts_names_and_sizes_are_checked_on_the_manifest(
    server: Server, client: SplitLearningClient
) -> None:
    err = raw_upload(server.port, "edge-1", [("features", x(4)), ("labels", y(3))])
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "'labels' has 3 labels for 4 feature rows" in (err.details() or "")
    err = raw_upload(server.port, "edge-1", [("features", x(2)), ("weights", y(2))])
    assert "unexpected tensor 'weights'" in (err.details() or "")
    err = raw_upload(server.port, "edge-1", [("features", x(2))])
    assert "no 'labels' tensor" in (err.details() or "")
    err = raw_upload(server.port, "edge-1", [("features", np.ones((200, 4))), ("labels", y(200))])
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over the 8 the client declared" in (err.details() or "")


def test_upload_over_the_byte_limit_is_refused() -> None:
    server = Server(SplitConfig(cut_layer=2, epsilon=10.0), max_upload_bytes=256)
    try:
        with SplitLearningClient("127.0.0.1", server.port, timeout=CALL_TIMEOUT) as client:
            client.join(SESSION, "edge-1", sample_count=100)
            with pytest.raises(UpdateRejectedError, match="max_total_bytes=256"):
                client.upload(1, x(100), y(100), cut_layer=2, epsilon=10.0)
    finally:
        server.close()


def test_unknown_client_and_session_are_refused(server: Server) -> None:
    with SplitLearningClient("127.0.0.1", server.port, timeout=CALL_TIMEOUT) as stranger:
        stranger.session_id, stranger.client_id = SESSION, "stranger"
        with pytest.raises(NotJoinedError, match="'stranger' has not joined"):
            stranger.upload(1, x(1), y(1), cut_layer=2, epsilon=10.0)
        with pytest.raises(SessionNotFoundError, match="serves session 'default/mistnet'"):
            stranger.join("default/other-job", "edge-9", sample_count=1)


def test_join_expecting_another_split_is_refused(server: Server) -> None:
    with SplitLearningClient("127.0.0.1", server.port, timeout=CALL_TIMEOUT) as other:
        config = {"aggregation": "MistNet", "aggregation_parameters": {"epsilon": 1.0}}
        with pytest.raises(SessionConfigConflictError, match=r"epsilon=10\.0"):
            other.join(SESSION, "edge-2", sample_count=1, config=config)
        with pytest.raises(SessionConfigConflictError, match="aggregation='MistNet'"):
            other.join(SESSION, "edge-2", sample_count=1, config={"aggregation": "FedAvg"})


def test_weight_updates_are_refused(server: Server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.AggregationServiceStub(channel)
        request = pb.PushUpdateRequest(header=pb.UpdateHeader(session_id=SESSION, client_id="a"))
        with pytest.raises(grpc.RpcError) as info:
            stub.PushUpdate(iter([request]), timeout=CALL_TIMEOUT)
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "MistNet" in (info.value.details() or "")
