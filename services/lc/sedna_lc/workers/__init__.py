"""The LocalController's embedded process runtime for ``Worker`` objects."""

from sedna_lc.workers.runtime import (
    NO_COMMAND_MESSAGE,
    BackoffPolicy,
    ProcessRuntime,
    UnknownWorkerError,
    WorkerView,
)

__all__ = [
    "NO_COMMAND_MESSAGE",
    "BackoffPolicy",
    "ProcessRuntime",
    "UnknownWorkerError",
    "WorkerView",
]
