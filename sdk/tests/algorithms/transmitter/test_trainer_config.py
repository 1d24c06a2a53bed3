"""FederatedLearning picks its transmitter from TRANSMITTER / AGG_DATA_PATH (no server needed:
the client connects lazily)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sedna.algorithms.transmitter import AbstractTransmitter, S3Transmitter, TransmitterError
from sedna.core.federated_learning import FederatedLearning
from sedna.service.aggregation_client import AggregationClient

pytestmark = pytest.mark.filterwarnings("ignore:SKLEARN Not Support yet:UserWarning")


class Estimator:
    def get_weights(self) -> list[Any]:
        return [np.zeros(2)]

    def set_weights(self, weights: list[Any]) -> None:
        return

    def train(self, *args: Any, **kwargs: Any) -> None:
        return


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TRANSMITTER", "AGG_DATA_PATH", "S3_ENDPOINT_URL", "ACCESS_KEY_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SECRET_ACCESS_KEY", "trainer-secret")
    monkeypatch.setenv("AGG_PORT", "1")
    monkeypatch.setenv("WORKER_NAME", "trainer-0")
    monkeypatch.setenv("BACKEND_TYPE", "SKLEARN")  # a plain object: no framework import


def test_s3_needs_agg_data_path_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSMITTER", "s3")
    with pytest.raises(TransmitterError, match=r"AGG_DATA_PATH=s3://bucket/prefix.*not set"):
        FederatedLearning(estimator=Estimator())
    monkeypatch.setenv("AGG_DATA_PATH", "/data/fl")
    with pytest.raises(TransmitterError, match="'/data/fl', not an s3:// URI"):
        FederatedLearning(estimator=Estimator())


def test_s3_and_ws_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSMITTER", "s3")
    monkeypatch.setenv("AGG_DATA_PATH", "s3://fl-data/job")
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    job = FederatedLearning(estimator=Estimator())
    try:
        transmitter = job.client.transmitter
        assert isinstance(transmitter, S3Transmitter)
        assert transmitter.transmitter_url == "s3://fl-data/job"
        assert transmitter.s3_endpoint_url == "http://127.0.0.1:9000"
        assert "trainer-secret" not in repr(transmitter)
        assert job.transmitter == "s3"
    finally:
        job.close()
    monkeypatch.setenv("TRANSMITTER", "ws")
    job = FederatedLearning(estimator=Estimator())
    try:
        assert job.client.transmitter is None
        assert job.transmitter == "grpc"
    finally:
        job.close()


def test_a_by_reference_transmitter_must_be_s3() -> None:
    class Elsewhere(AbstractTransmitter):
        by_reference = True

        @property
        def parameters(self) -> dict[str, Any]:
            return {}

        def send(self, data: Any, uri: str | None = None) -> str:
            return ""

        def recv(self, uri: str | None = None) -> list[Any]:
            return []

    with pytest.raises(TypeError, match="must be an S3Transmitter, not Elsewhere"):
        AggregationClient(transmitter=Elsewhere())
