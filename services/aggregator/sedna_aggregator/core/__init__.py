"""The aggregation server's round core: transport-agnostic sessions, rounds and checkpoints.

Servicers (gRPC) sit on top of :class:`Session`; the ports (:class:`RoundStore`,
:class:`SessionMetrics`, :class:`Clock`, :class:`Runner`) keep it free of any transport,
storage or timing choice. See ``docs/federated-learning.md``.
"""

from sedna_aggregator.core.clock import Clock, LoopClock, ManualClock, Timer
from sedna_aggregator.core.config import BelowMinimum, SessionConfig, TargetMode
from sedna_aggregator.core.errors import (
    CheckpointError,
    DuplicateUpdateError,
    InvalidRequestError,
    MalformedUpdateError,
    NotSelectedError,
    RoundNotOpenError,
    SessionClosedError,
    SessionConfigError,
    SessionError,
    SessionFailedError,
    UnknownClientError,
    UpdateRejectedError,
    WrongRoundError,
)
from sedna_aggregator.core.file_store import LocalFileRoundStore
from sedna_aggregator.core.model import (
    Checkpoint,
    ClientStatus,
    JoinResult,
    RoundRecord,
    RoundResult,
    SessionState,
    SessionStatus,
    UpdateAck,
)
from sedna_aggregator.core.ports import (
    NoopMetrics,
    RoundStore,
    Runner,
    SessionMetrics,
    run_in_thread,
    run_inline,
)
from sedna_aggregator.core.session import Session, UpdateUpload, make_aggregator

__all__ = [
    "BelowMinimum",
    "Checkpoint",
    "CheckpointError",
    "ClientStatus",
    "Clock",
    "DuplicateUpdateError",
    "InvalidRequestError",
    "JoinResult",
    "LocalFileRoundStore",
    "LoopClock",
    "MalformedUpdateError",
    "ManualClock",
    "NoopMetrics",
    "NotSelectedError",
    "RoundNotOpenError",
    "RoundRecord",
    "RoundResult",
    "RoundStore",
    "Runner",
    "Session",
    "SessionClosedError",
    "SessionConfig",
    "SessionConfigError",
    "SessionError",
    "SessionFailedError",
    "SessionMetrics",
    "SessionState",
    "SessionStatus",
    "TargetMode",
    "Timer",
    "UnknownClientError",
    "UpdateAck",
    "UpdateRejectedError",
    "UpdateUpload",
    "WrongRoundError",
    "make_aggregator",
    "run_in_thread",
    "run_inline",
]
