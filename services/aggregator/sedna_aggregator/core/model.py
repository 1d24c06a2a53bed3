"""Value types of the round core: states, round records and results, checkpoints."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from sedna_aggregator.core.weights_file import WeightsFile

__all__ = [
    "Array",
    "Checkpoint",
    "ClientStatus",
    "JoinResult",
    "RoundRecord",
    "RoundResult",
    "SessionState",
    "SessionStatus",
    "UpdateAck",
]

Array = npt.NDArray[Any]
"""One layer of weights."""


class SessionState(enum.StrEnum):
    """Lifecycle of a session (the proto's ``SessionState``; ``ROUND_OPEN`` is ``TRAINING``).

    ``WAITING_FOR_CLIENTS → ROUND_OPEN → AGGREGATING → ROUND_OPEN → ... → COMPLETED``;
    ``AGGREGATING → WAITING_FOR_CLIENTS`` when too few clients remain for the next round;
    ``AGGREGATING → ROUND_OPEN`` (same round) when a short round's deadline is extended;
    ``AGGREGATING → FAILED`` when a round ends short. COMPLETED and FAILED are final.
    """

    WAITING_FOR_CLIENTS = "waiting_for_clients"
    ROUND_OPEN = "round_open"
    AGGREGATING = "aggregating"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        """Whether the session is over."""
        return self in (SessionState.COMPLETED, SessionState.FAILED)


TRANSITIONS: Mapping[SessionState, frozenset[SessionState]] = {
    SessionState.WAITING_FOR_CLIENTS: frozenset({SessionState.ROUND_OPEN, SessionState.FAILED}),
    SessionState.ROUND_OPEN: frozenset({SessionState.AGGREGATING, SessionState.FAILED}),
    SessionState.AGGREGATING: frozenset(
        {
            SessionState.ROUND_OPEN,
            SessionState.WAITING_FOR_CLIENTS,
            SessionState.COMPLETED,
            SessionState.FAILED,
        }
    ),
    SessionState.COMPLETED: frozenset(),
    SessionState.FAILED: frozenset(),
}
"""The allowed state transitions; anything else is a bug (``AssertionError``)."""


@dataclass(frozen=True)
class RoundRecord:
    """What happened in one aggregated round (the participants history of a checkpoint)."""

    round: int
    participants: tuple[str, ...]
    dropped: tuple[str, ...]
    total_samples: int
    metrics: Mapping[str, float]
    started_at: float
    duration: float
    extended: bool = False
    bytes_in: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "participants": list(self.participants),
            "dropped": list(self.dropped),
            "total_samples": self.total_samples,
            "metrics": dict(self.metrics),
            "started_at": self.started_at,
            "duration": self.duration,
            "extended": self.extended,
            "bytes_in": self.bytes_in,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoundRecord:
        return cls(
            round=int(data["round"]),
            participants=tuple(str(c) for c in data["participants"]),
            dropped=tuple(str(c) for c in data["dropped"]),
            total_samples=int(data["total_samples"]),
            metrics={str(k): float(v) for k, v in dict(data["metrics"]).items()},
            started_at=float(data["started_at"]),
            duration=float(data["duration"]),
            extended=bool(data.get("extended", False)),
            bytes_in=int(data.get("bytes_in", 0)),
        )


@dataclass(frozen=True)
class RoundResult:
    """The global weights after round ``round`` (round 0: the initial weights), for waiters.

    ``weights`` is shared by every waiter: never modify the arrays. ``exit`` is True when the
    session completed with this round (upstream's ``exit_flag``).
    """

    round: int
    weights: list[Array] | None
    total_samples: int = 0
    participants: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)
    exit: bool = False
    stored: WeightsFile | None = None
    """The file ``weights`` view, when the session moved them out of the heap."""

    @property
    def nbytes(self) -> int:
        """Bytes of the weights."""
        return sum(int(layer.nbytes) for layer in self.weights or ())


@dataclass(frozen=True)
class JoinResult:
    """What a joining client learns: the round to train next and whether it is selected."""

    state: SessionState
    current_round: int
    selected: bool
    rejoined: bool


@dataclass(frozen=True)
class UpdateAck:
    """An accepted update: its round and the updates the round holds, this one included."""

    round: int
    received_updates: int


@dataclass(frozen=True)
class ClientStatus:
    client_id: str
    sample_count: int
    last_round: int
    selected: bool


@dataclass(frozen=True)
class SessionStatus:
    """A snapshot for ``GetSessionStatus``."""

    session_id: str
    state: SessionState
    current_round: int
    completed_round: int
    clients: tuple[ClientStatus, ...]
    metrics: Mapping[str, float]
    reason: str


@dataclass(frozen=True)
class Checkpoint:
    """What a :class:`~sedna_aggregator.core.ports.RoundStore` keeps after every round.

    ``aggregator_state`` is the algorithm's ``state_dict()``: flat, JSON scalars and ndarrays.
    Arrays may be shared with ``global_weights`` (stores may deduplicate by identity).
    """

    session_id: str
    round: int
    global_weights: list[Array] | None
    aggregator_state: Mapping[str, Any]
    history: tuple[RoundRecord, ...]
    aggregation: str
    completed: bool = False
    reason: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for layer in self.global_weights or ():
            if not isinstance(layer, np.ndarray):
                raise TypeError("checkpoint weights must be ndarrays")
