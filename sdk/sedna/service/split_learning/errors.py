"""Refusals of a split-learning session, each naming the gRPC status it maps to.

Every error carries ``code`` (a ``grpc.StatusCode`` name) and, for the refusals a client must
tell apart, a stable ``reason`` label sent as trailing metadata (the labels the SDK's
:class:`~sedna.service.aggregation_client.AggregationClient` already understands).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BatchRejectedError",
    "ConfigMismatchError",
    "DuplicateBatchError",
    "InvalidRequestError",
    "RoundNotOpenError",
    "SessionClosedError",
    "SessionFailedError",
    "SplitLearningError",
    "TooMuchDataError",
    "UnknownClientError",
    "UnknownSessionError",
    "UnsupportedCallError",
    "WrongRoundError",
]


class SplitLearningError(Exception):
    """Base of every refusal; ``code`` is the gRPC status name it is answered with."""

    code: ClassVar[str] = "INTERNAL"
    reason: ClassVar[str | None] = None


class InvalidRequestError(SplitLearningError):
    """A request field is missing or malformed."""

    code: ClassVar[str] = "INVALID_ARGUMENT"


class BatchRejectedError(SplitLearningError):
    """A feature batch is malformed: tensor names, dtypes, shapes, counts, NaN/Inf."""

    code: ClassVar[str] = "INVALID_ARGUMENT"
    reason: ClassVar[str | None] = "malformed"


class ConfigMismatchError(SplitLearningError):
    """The client's cut_layer, epsilon or aggregation differ from the session's."""

    code: ClassVar[str] = "FAILED_PRECONDITION"
    reason: ClassVar[str | None] = "config_conflict"


class UnknownClientError(SplitLearningError):
    """The client has not joined the session (or left it)."""

    code: ClassVar[str] = "FAILED_PRECONDITION"
    reason: ClassVar[str | None] = "unknown_client"


class RoundNotOpenError(SplitLearningError):
    """No round takes features now: waiting for clients, or the cloud is training."""

    code: ClassVar[str] = "FAILED_PRECONDITION"
    reason: ClassVar[str | None] = "round_not_open"


class WrongRoundError(SplitLearningError):
    """The batch is for another round than the session's open one."""

    code: ClassVar[str] = "FAILED_PRECONDITION"

    def __init__(self, message: str, current_round: int) -> None:
        super().__init__(message)
        self.current_round = current_round


class DuplicateBatchError(SplitLearningError):
    """The client already uploaded every sample it declared for the round."""

    code: ClassVar[str] = "ALREADY_EXISTS"


class TooMuchDataError(SplitLearningError):
    """The batch would exceed the client's declared samples or the round's byte budget."""

    code: ClassVar[str] = "RESOURCE_EXHAUSTED"


class SessionClosedError(SplitLearningError):
    """The session completed: it takes no more features."""

    code: ClassVar[str] = "FAILED_PRECONDITION"
    reason: ClassVar[str | None] = "session_closed"


class SessionFailedError(SplitLearningError):
    """The session failed (cloud training raised, or a round timed out with no data)."""

    code: ClassVar[str] = "ABORTED"


class UnknownSessionError(SplitLearningError):
    """This server does not serve that session."""

    code: ClassVar[str] = "NOT_FOUND"


class UnsupportedCallError(SplitLearningError):
    """A call a split-learning session does not take (e.g. a weight update)."""

    code: ClassVar[str] = "FAILED_PRECONDITION"
    reason: ClassVar[str | None] = "unsupported"
