"""AggregationClient's S3 mode against a scripted gRPC server (answers chosen per call) and a
real moto S3: header-only pushes, the retry rule, and by-reference pulls."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest
from support.s3_server import S3Endpoint, moto_s3

from sedna.algorithms.transmitter import S3Transmitter
from sedna.api.aggregator.v1 import aggregation_service_pb2 as pb
from sedna.api.aggregator.v1 import aggregation_service_pb2_grpc as pb_grpc
from sedna.service.aggregation_client import (
    AggregationClient,
    AggregationClientError,
    UpdateRejectedError,
)

pytest.importorskip("minio")

BASE = "s3://fl-data/jobs"
SID = "default/job"


@dataclass
class Script(pb_grpc.AggregationServiceServicer):
    """Answers each PushUpdate with the next status of ``push_answers`` (OK when exhausted)
    and each pull with a header naming ``pull_uri``; records what it got."""

    push_answers: list[grpc.StatusCode] = field(default_factory=list)
    pull_uri: str = ""
    pushes: list[list[pb.PushUpdateRequest]] = field(default_factory=list)
    pulls: list[pb.PullGlobalWeightsRequest] = field(default_factory=list)

    def JoinSession(self, request: Any, context: Any) -> pb.JoinSessionResponse:  # noqa: N802
        return pb.JoinSessionResponse(current_round=1, selected=True)

    def PushUpdate(self, request_iterator: Any, context: Any) -> pb.PushUpdateResponse:  # noqa: N802
        self.pushes.append(list(request_iterator))
        if self.push_answers:
            code = self.push_answers.pop(0)
            context.abort(code, f"scripted {code.name}")
        return pb.PushUpdateResponse(round=1, received_updates=2)

    def PullGlobalWeights(self, request: Any, context: Any) -> Iterator[Any]:  # noqa: N802
        self.pulls.append(request)
        yield pb.PullGlobalWeightsResponse(
            header=pb.GlobalWeightsHeader(round=1, exit=True, weights_uri=self.pull_uri)
        )


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    with moto_s3({"fl-data/ready": b""}, authenticated=True) as endpoint:
        yield endpoint


@pytest.fixture
def served() -> Iterator[tuple[Script, int]]:
    script = Script()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_AggregationServiceServicer_to_server(script, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield script, port
    server.stop(0)


def _client(s3: S3Endpoint, port: int, with_s3: bool = True) -> AggregationClient:
    transmitter = S3Transmitter(s3.url, s3.access_key, s3.secret_key, BASE) if with_s3 else None
    client = AggregationClient("127.0.0.1", port, timeout=10, transmitter=transmitter)
    client.join(SID, "c1", 5)
    return client


def test_a_push_sends_only_the_header_naming_the_written_object(
    s3: S3Endpoint, served: tuple[Script, int]
) -> None:
    script, port = served
    weights = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32)]
    with _client(s3, port) as client:
        assert client.push(1, weights, sample_count=5, metrics={"loss": 0.5}) == 2
        [messages] = script.pushes
        assert [m.WhichOneof("part") for m in messages] == ["header"]
        header = messages[0].header
        uri = f"{BASE}/{SID}/round-000001/c1.safetensors"
        assert header.weights_uri == uri
        assert (header.round, header.sample_count, dict(header.metrics)) == (1, 5, {"loss": 0.5})
        assert client.transmitter is not None
        stored = S3Transmitter(s3.url, s3.access_key, s3.secret_key, BASE).recv(uri)
        for (_, got), want in zip(stored, weights, strict=True):
            np.testing.assert_array_equal(got, want)


def test_a_duplicate_after_a_lost_answer_is_success_but_not_otherwise(
    s3: S3Endpoint, served: tuple[Script, int]
) -> None:
    script, port = served
    with _client(s3, port) as client:
        script.push_answers = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ALREADY_EXISTS]
        assert client.push(1, [np.zeros(2, np.float32)], sample_count=5) == 0
        assert len(script.pushes) == 2  # retried once, header only both times
        script.push_answers = [grpc.StatusCode.ALREADY_EXISTS]
        with pytest.raises(UpdateRejectedError, match="scripted ALREADY_EXISTS"):
            client.push(1, [np.zeros(2, np.float32)], sample_count=5)
        script.push_answers = [grpc.StatusCode.INVALID_ARGUMENT]
        with pytest.raises(UpdateRejectedError, match="INVALID_ARGUMENT"):
            client.push(1, [np.zeros(2, np.float32)], sample_count=5)
        assert len(script.pushes) == 4  # refusals are not retried


def test_a_pull_by_reference_reads_the_named_object(
    s3: S3Endpoint, served: tuple[Script, int]
) -> None:
    script, port = served
    writer = S3Transmitter(s3.url, s3.access_key, s3.secret_key, BASE)
    aggregate = [np.full((3, 2), 0.5, np.float32), np.arange(4, dtype=np.float64)]
    script.pull_uri = writer.send(aggregate, f"{BASE}/{SID}/global/round-000001.safetensors")
    with _client(s3, port) as client:
        result = client.pull(1, timeout=10)
        assert script.pulls[-1].by_reference
        assert (result.round, result.exit) == (1, True)
        for got, want in zip(result.weights, aggregate, strict=True):
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
        writer.send([np.zeros(2)], f"{BASE}/small.safetensors")
        script.pull_uri = f"{BASE}/small.safetensors"
        client.max_weights_bytes = 10
        with pytest.raises(AggregationClientError, match="over the limit of 10"):
            client.pull(1, timeout=10)
        client.max_weights_bytes = 1 << 30
        script.pull_uri = f"{BASE}/missing.safetensors"
        with pytest.raises(AggregationClientError, match=r"missing\.safetensors: no such object"):
            client.pull(1, timeout=10)
    with _client(s3, port, with_s3=False) as plain:
        with pytest.raises(AggregationClientError, match="has no S3 transmitter"):
            plain.pull(1, timeout=10)
        assert not script.pulls[-1].by_reference
