"""Ports of the round core: where checkpoints go, where metrics go, how heavy work runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from sedna_aggregator.core.model import Array, Checkpoint, RoundRecord, SessionState

__all__ = [
    "NoopMetrics",
    "RoundStore",
    "Runner",
    "SessionMetrics",
    "WeightsObjects",
    "run_in_thread",
    "run_inline",
]

_T = TypeVar("_T")


class RoundStore(Protocol):
    """Keeps the latest checkpoint of each session (a local file; Redis later).

    ``save`` replaces the session's checkpoint atomically: after a crash, ``load`` returns
    either the previous checkpoint or the new one, never a mix. Implementations must not use
    pickle: arrays as raw typed bytes (npz, Redis byte strings), scalars as JSON.
    """

    async def save(self, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint`` as the session's latest."""

    async def load(self, session_id: str) -> Checkpoint | None:
        """The session's latest checkpoint, None if there is none.

        Raises ``CheckpointError`` when one exists but cannot be read.
        """

    async def delete(self, session_id: str) -> None:
        """Forget the session (job deleted); no error if there is nothing."""


class WeightsObjects(Protocol):
    """Object storage for the S3 transmitter: one object holds one set of named tensors.

    Clients of an ``s3`` job write their update to an object and send its URI in the
    ``PushUpdate`` header; clients that pull ``by_reference`` get the aggregate's URI. The
    object format is safetensors (typed raw bytes with a JSON header; never pickle).
    """

    def object_uri(self, session_id: str, round_number: int) -> str:
        """Where the aggregate of ``round_number`` of ``session_id`` is written."""

    def read(self, uri: str, *, max_bytes: int) -> AsyncIterator[tuple[str, Array]]:
        """The tensors of object ``uri`` in stored order, one at a time (bounded memory).

        Raises ``MalformedUpdateError`` naming the problem when the object is missing, larger
        than ``max_bytes`` or not a valid tensor object, and ``InvalidRequestError`` when
        ``uri`` is outside the storage this aggregator was configured with.
        """

    async def write(self, uri: str, tensors: Sequence[tuple[str, Array]]) -> None:
        """Store ``tensors`` (in order) as object ``uri``, replacing any previous one."""


class SessionMetrics(Protocol):
    """Where the session reports what it does (Prometheus in the server; no-op by default)."""

    def update_received(
        self, session_id: str, nbytes: int, *, accepted: bool, reason: str = ""
    ) -> None:
        """An update arrived (``reason``: the rejection label when not accepted)."""

    def round_finished(self, session_id: str, record: RoundRecord) -> None:
        """A round was aggregated: duration, participants, dropped clients, bytes in."""

    def weights_sent(self, session_id: str, nbytes: int) -> None:
        """Global weights went out to a client (called by the transport)."""

    def state_changed(self, session_id: str, state: SessionState) -> None:
        """The session moved to ``state``."""

    def checkpoint_failed(self, session_id: str, error: BaseException) -> None:
        """Saving a checkpoint failed (the session goes on; the next round retries)."""


class NoopMetrics:
    """The default :class:`SessionMetrics`: records nothing."""

    def update_received(
        self, session_id: str, nbytes: int, *, accepted: bool, reason: str = ""
    ) -> None:
        return

    def round_finished(self, session_id: str, record: RoundRecord) -> None:
        return

    def weights_sent(self, session_id: str, nbytes: int) -> None:
        return

    def state_changed(self, session_id: str, state: SessionState) -> None:
        return

    def checkpoint_failed(self, session_id: str, error: BaseException) -> None:
        return


class Runner(Protocol):
    """Runs a CPU-heavy call (validating, summing, finishing a round) and awaits its result."""

    def __call__(self, fn: Callable[[], _T], /) -> Awaitable[_T]: ...


async def run_inline(fn: Callable[[], _T], /) -> _T:
    """Run ``fn`` on the event loop (fine for small models and tests)."""
    return fn()


async def run_in_thread(fn: Callable[[], _T], /) -> _T:
    """Run ``fn`` in a worker thread: numpy releases the GIL, the loop keeps serving."""
    return await asyncio.to_thread(fn)
