"""Typed errors of the round core; ``code`` names the gRPC status a servicer should map to.

The core never imports gRPC: a servicer does ``grpc.StatusCode[err.code]``.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "CheckpointError",
    "DuplicateUpdateError",
    "InvalidRequestError",
    "MalformedUpdateError",
    "NotSelectedError",
    "RoundNotOpenError",
    "SessionClosedError",
    "SessionConfigError",
    "SessionError",
    "SessionFailedError",
    "UnknownClientError",
    "UpdateRejectedError",
    "WrongRoundError",
]


class SessionError(Exception):
    """Base of the round core's errors."""

    code: ClassVar[str] = "FAILED_PRECONDITION"


class SessionConfigError(SessionError, ValueError):
    """An invalid session configuration (unknown aggregation, bad parameter, bad bound)."""

    code: ClassVar[str] = "INVALID_ARGUMENT"


class InvalidRequestError(SessionError, ValueError):
    """A malformed request outside an update (empty client id, negative sample count)."""

    code: ClassVar[str] = "INVALID_ARGUMENT"


class UpdateRejectedError(SessionError):
    """Base of the reasons an update is refused; a refused update never touches the round.

    ``reason`` is a short stable label for metrics (``"wrong_round"``, ``"malformed"``...).
    """

    reason: ClassVar[str] = "rejected"


class UnknownClientError(UpdateRejectedError):
    """The client has not joined the session (or left it)."""

    reason: ClassVar[str] = "unknown_client"


class WrongRoundError(UpdateRejectedError):
    """The update is for another round than the one open (or next to open)."""

    reason: ClassVar[str] = "wrong_round"

    def __init__(self, message: str, *, current_round: int) -> None:
        super().__init__(message)
        self.current_round = current_round


class RoundNotOpenError(UpdateRejectedError):
    """The update's round is not accepting updates: not open yet, or closing at its deadline."""

    reason: ClassVar[str] = "round_not_open"


class NotSelectedError(UpdateRejectedError):
    """The client was not selected for this round."""

    reason: ClassVar[str] = "not_selected"


class DuplicateUpdateError(UpdateRejectedError):
    """The client already sent (or is sending) its update for this round."""

    reason: ClassVar[str] = "duplicate"
    code: ClassVar[str] = "ALREADY_EXISTS"


class MalformedUpdateError(UpdateRejectedError, ValueError):
    """Bad tensors (layer count, shape, dtype, NaN/Inf), sample count or metrics."""

    reason: ClassVar[str] = "malformed"
    code: ClassVar[str] = "INVALID_ARGUMENT"


class SessionClosedError(UpdateRejectedError):
    """The session is COMPLETED or FAILED: it takes no more updates."""

    reason: ClassVar[str] = "session_closed"


class SessionFailedError(SessionError):
    """The session FAILED (e.g. a round ended below ``min_participants``); waiters get this."""

    code: ClassVar[str] = "ABORTED"


class CheckpointError(SessionError):
    """A checkpoint could not be read, or does not fit the session's configuration."""

    code: ClassVar[str] = "DATA_LOSS"
