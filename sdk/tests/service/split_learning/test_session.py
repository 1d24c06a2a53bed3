"""The split-learning session core: checks, round closing, cloud training (no network)."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from sedna.service.split_learning.errors import (
    BatchRejectedError,
    ConfigMismatchError,
    DuplicateBatchError,
    InvalidRequestError,
    RoundNotOpenError,
    SessionClosedError,
    SessionFailedError,
    TooMuchDataError,
    UnknownClientError,
    WrongRoundError,
)
from sedna.service.split_learning.session import SplitConfig, SplitSession, SplitState

Array = np.ndarray[Any, Any]


class RecordingModel:
    """A ServerModel that records what it is trained on; weights count the rounds."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[Array, Array, int]] = []
        self.fail = fail
        self.threads: set[str] = set()

    def get_weights(self) -> list[Array]:
        return [np.full((2, 2), float(len(self.calls)), np.float32)]

    def train_round(self, features: Array, labels: Array, round_number: int) -> Mapping[str, float]:
        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise RuntimeError("out of memory")
        self.calls.append((features, labels, round_number))
        return {"train_loss": 0.5, "samples": float(len(features))}


def feats(n: int, value: float = 1.0, width: int = 3) -> Array:
    return np.full((n, width), value, np.float32)


def labels(n: int) -> Array:
    return np.arange(n, dtype=np.int64) % 10


def session(model: RecordingModel | None = None, **fields: Any) -> SplitSession:
    config = SplitConfig(cut_layer=2, epsilon=10.0, **fields)
    return SplitSession("default/job", config, model or RecordingModel())


def upload(s: SplitSession, client: str, x: Array, y: Array, round_number: int = 1) -> int:
    s.precheck(client, round_number, 2, 10.0)
    s.check_layout(client, (x.dtype, x.shape), (y.dtype, y.shape))
    return s.submit(client, round_number, 2, 10.0, x, y)


async def test_round_opens_when_enough_clients_joined() -> None:
    s = session(min_clients=2)
    assert s.join("a", 4).state is SplitState.WAITING_FOR_CLIENTS
    with pytest.raises(RoundNotOpenError, match="waiting for 2 clients, 1 joined"):
        s.precheck("a", 1, 2, 10.0)
    joined = s.join("b", 4)
    assert (joined.state, joined.current_round) == (SplitState.ROUND_OPEN, 1)


async def test_initial_model_is_round_zero() -> None:
    s = session()
    result = await s.wait_for_round(0)
    assert (result.round, result.exit) == (0, False)
    np.testing.assert_array_equal(result.weights[0], 0.0)


async def test_header_checks_name_the_problem() -> None:
    s = session()
    s.join("a", 4)
    with pytest.raises(ConfigMismatchError, match="cut_layer is 3, the session's is 2"):
        s.precheck("a", 1, 3, 10.0)
    with pytest.raises(ConfigMismatchError, match=r"epsilon is 1\.0, the session's is 10\.0"):
        s.precheck("a", 1, 2, 1.0)
    with pytest.raises(UnknownClientError, match="'stranger' has not joined"):
        s.precheck("stranger", 1, 2, 10.0)
    with pytest.raises(WrongRoundError, match="round 5") as info:
        s.precheck("a", 5, 2, 10.0)
    assert info.value.current_round == 1


@pytest.mark.parametrize(
    ("features", "labels_", "match"),
    [
        (np.ones((4, 3), np.int32), labels(4), "'features' has dtype int32"),
        (feats(4), np.array(["a"] * 4), "'labels' has dtype <U1"),
        (np.ones(4, np.float32), labels(4), "'features' has shape \\(4,\\)"),
        (feats(4), labels(3), "'labels' has 3 labels for 4 feature rows"),
        (np.ones((0, 3), np.float32), labels(0), "no samples"),
    ],
)
async def test_layout_checks_name_the_tensor(features: Array, labels_: Array, match: str) -> None:
    s = session()
    s.join("a", 4)
    with pytest.raises(BatchRejectedError, match=match):
        s.check_layout("a", (features.dtype, features.shape), (labels_.dtype, labels_.shape))


async def test_batches_must_match_the_first_accepted_layout() -> None:
    s = session()
    s.join("a", 10)
    assert upload(s, "a", feats(4), labels(4)) == 4
    with pytest.raises(BatchRejectedError, match="'features' is float32 \\(n, 5\\), but the"):
        upload(s, "a", feats(2, width=5), labels(2))
    with pytest.raises(BatchRejectedError, match="'labels' is int32"):
        upload(s, "a", feats(2), labels(2).astype(np.int32))


async def test_nan_and_inf_are_refused_naming_tensor_and_index() -> None:
    s = session()
    s.join("a", 4)
    x = feats(4)
    x[2, 1] = math.nan
    with pytest.raises(BatchRejectedError, match="'features' holds nan at index \\(2, 1\\)"):
        upload(s, "a", x, labels(4))
    y = np.zeros(4, np.float32)
    y[3] = math.inf
    with pytest.raises(BatchRejectedError, match="'labels' holds inf at index \\(3,\\)"):
        upload(s, "a", feats(4), y)
    assert s.status().clients[0].received_samples == 0  # refused batches never count


async def test_size_limits() -> None:
    s = session(max_round_bytes=100)
    s.join("a", 6)
    with pytest.raises(TooMuchDataError, match="over the 6 the client declared"):
        upload(s, "a", feats(7), labels(7))
    with pytest.raises(TooMuchDataError, match="max_round_bytes"):
        upload(s, "a", feats(6), labels(6))  # 6*3*4 + 6*8 = 120 bytes
    with pytest.raises(InvalidRequestError, match="sample_count must be >= 1"):
        s.join("b", 0)
    with pytest.raises(InvalidRequestError, match="max_samples_per_client"):
        session(max_samples_per_client=5).join("c", 6)


async def test_round_trains_on_every_clients_features_then_publishes() -> None:
    model = RecordingModel()
    s = session(model, min_clients=2, exit_round=2)
    s.join("b", 3)
    s.join("a", 2)
    waiting = asyncio.ensure_future(s.wait_for_round(1))
    upload(s, "b", feats(2, 2.0), labels(2))
    upload(s, "a", feats(2, 1.0), labels(2))
    with pytest.raises(DuplicateBatchError, match="already uploaded all 2 samples"):
        s.precheck("a", 1, 2, 10.0)
    upload(s, "b", feats(1, 3.0), labels(1))
    with pytest.raises(WrongRoundError, match="round 1 closed") as closed:
        s.precheck("a", 1, 2, 10.0)  # the cloud is training round 1
    assert closed.value.current_round == 2
    result = await asyncio.wait_for(waiting, 30)
    assert result.round == 1
    assert not result.exit
    assert result.participants == ("a", "b")
    assert result.total_samples == 5
    features, _labels, round_number = model.calls[0]
    assert round_number == 1
    np.testing.assert_array_equal(features[:, 0], [1.0, 1.0, 2.0, 2.0, 3.0])  # by client id
    np.testing.assert_array_equal(result.weights[0], 1.0)
    assert result.metrics["train_loss"] == 0.5
    assert "MainThread" not in model.threads  # trained off the event loop
    assert s.state is SplitState.ROUND_OPEN
    assert s.current_round == 2
    with pytest.raises(WrongRoundError) as stale:
        s.precheck("a", 1, 2, 10.0)
    assert stale.value.current_round == 2
    upload(s, "a", feats(2), labels(2), round_number=2)
    upload(s, "b", feats(3), labels(3), round_number=2)
    last = await asyncio.wait_for(s.wait_for_round(2), 30)
    assert last.exit
    assert s.state is SplitState.COMPLETED
    with pytest.raises(SessionClosedError, match="completed after round 2"):
        s.precheck("a", 3, 2, 10.0)
    assert (await s.wait_for_round(7)).round == 2  # a completed session answers its last model


async def test_a_client_that_finished_and_left_still_counts() -> None:
    model = RecordingModel()
    s = session(model, min_clients=2)
    s.join("a", 2)
    s.join("b", 2)
    upload(s, "a", feats(2), labels(2))
    s.leave("a")
    s.leave("a")  # idempotent
    upload(s, "b", feats(2), labels(2))
    result = await asyncio.wait_for(s.wait_for_round(1), 30)
    assert result.participants == ("a", "b")


async def test_round_timeout_closes_with_the_complete_clients() -> None:
    s = session(min_clients=2, round_timeout=0.2)
    s.join("a", 2)
    s.join("slow", 4)
    upload(s, "a", feats(2), labels(2))
    upload(s, "slow", feats(1), labels(1))
    result = await asyncio.wait_for(s.wait_for_round(1), 30)
    assert result.participants == ("a",)
    assert result.dropped == ("slow",)
    assert result.total_samples == 2


async def test_round_timeout_with_no_complete_client_fails_the_session() -> None:
    s = session(round_timeout=0.2)
    s.join("a", 2)
    with pytest.raises(SessionFailedError, match="no client uploaded all its declared samples"):
        await asyncio.wait_for(s.wait_for_round(1), 30)
    assert s.state is SplitState.FAILED
    with pytest.raises(SessionFailedError):
        s.precheck("a", 1, 2, 10.0)


async def test_training_failure_fails_the_session_with_the_reason() -> None:
    s = session(RecordingModel(fail=True))
    s.join("a", 1)
    waiting = asyncio.ensure_future(s.wait_for_round(1))
    upload(s, "a", feats(1), labels(1))
    with pytest.raises(SessionFailedError, match="RuntimeError: out of memory"):
        await asyncio.wait_for(waiting, 30)


async def test_rejoin_cannot_change_sample_count_mid_round() -> None:
    s = session(min_clients=2)
    s.join("a", 4)
    s.join("a", 5)  # nothing uploaded yet: fine
    s.join("b", 1)
    upload(s, "a", feats(2), labels(2))
    with pytest.raises(ConfigMismatchError, match="after uploading 2 of the 5"):
        s.join("a", 3)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="epsilon"):
        SplitConfig(cut_layer=1, epsilon=0.0)
    with pytest.raises(ValueError, match="cut_layer"):
        SplitConfig(cut_layer=-1, epsilon=1.0)
    with pytest.raises(ValueError, match="exit_round"):
        SplitConfig(cut_layer=1, epsilon=1.0, exit_round=0)
