"""Shared fixtures of the round-core tests: a manual clock and a session factory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from sedna_aggregator.core import (
    ManualClock,
    RoundRecord,
    Session,
    SessionConfig,
    SessionState,
    run_inline,
)

Array = npt.NDArray[Any]
SHAPES = [(3, 2), (2,)]


class RecordingMetrics:
    """A SessionMetrics that remembers every call."""

    def __init__(self) -> None:
        self.updates: list[tuple[int, bool, str]] = []
        self.rounds: list[RoundRecord] = []
        self.states: list[SessionState] = []
        self.sent: list[int] = []
        self.checkpoint_errors: list[BaseException] = []

    def update_received(
        self, session_id: str, nbytes: int, *, accepted: bool, reason: str = ""
    ) -> None:
        self.updates.append((nbytes, accepted, reason))

    def round_finished(self, session_id: str, record: RoundRecord) -> None:
        self.rounds.append(record)

    def weights_sent(self, session_id: str, nbytes: int) -> None:
        self.sent.append(nbytes)

    def state_changed(self, session_id: str, state: SessionState) -> None:
        self.states.append(state)

    def checkpoint_failed(self, session_id: str, error: BaseException) -> None:
        self.checkpoint_errors.append(error)


def _weights(seed: int, dtype: Any = np.float32) -> list[Array]:
    """A small two-layer model, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]


def _fedavg(updates: list[tuple[list[Array], int]]) -> list[Array]:
    """The reference sample-weighted average, float64."""
    total = sum(n for _w, n in updates)
    return [
        sum(np.asarray(w[i], dtype=np.float64) * n for w, n in updates) / total
        for i in range(len(SHAPES))
    ]


@pytest.fixture
def make_weights() -> Callable[..., list[Array]]:
    """``make_weights(seed, dtype=float32)``: a small two-layer model."""
    return _weights


@pytest.fixture
def reference_fedavg() -> Callable[[list[tuple[list[Array], int]]], list[Array]]:
    """The reference FedAvg: ``sum n_k w_k / sum n_k`` per layer, float64."""
    return _fedavg


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def metrics() -> RecordingMetrics:
    return RecordingMetrics()


SessionFactory = Callable[..., Session]


@pytest.fixture
def make_session(clock: ManualClock, metrics: RecordingMetrics) -> SessionFactory:
    """``make_session(**config_fields)``: a session on the manual clock, run inline."""

    def make(*, session_kwargs: dict[str, Any] | None = None, **fields: Any) -> Session:
        kwargs: dict[str, Any] = {"clock": clock, "metrics": metrics, "runner": run_inline}
        kwargs.update(session_kwargs or {})
        return Session("default/fl-job", SessionConfig(**fields), **kwargs)

    return make
