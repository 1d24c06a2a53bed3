"""The split-learning (MistNet) session: rounds of feature uploads, then cloud training.

Transport-agnostic: the gRPC servicers (:mod:`sedna.service.split_learning.servicer`) only
decode requests and map :class:`~sedna.service.split_learning.errors.SplitLearningError` to
statuses. A session runs in one asyncio event loop; every state change happens between two
``await`` points, so no lock is needed, and the cloud training runs in a worker thread so the
loop keeps answering calls meanwhile.

A round:

1. Opens once ``min_clients`` clients have joined (round 1), or as soon as the previous
   round's training finished.
2. Every joined client uploads, in one or more batches, exactly the ``sample_count`` samples it
   declared when joining: features (the output of the first ``cut_layer`` layers, perturbed on
   the edge) and their labels. Each batch is checked before its bytes are allocated (names,
   dtypes, shapes, counts, size budgets) and after (NaN/Inf), and a bad batch never touches
   the round.
3. Closes when every joined client has uploaded all its samples, or at ``round_timeout`` with
   the clients that did (the others are reported as dropped; none at all fails the session).
4. The server part of the model (the layers after ``cut_layer``) is trained on the round's
   features (:class:`ServerModel`), and the full model (edge front + trained back) is
   published as the round's result, which clients pull. After ``exit_round`` rounds the
   session is complete.

The initial model is published as round 0, so clients start from the cloud's weights and
every edge runs the same feature extractor.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

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

__all__ = [
    "FEATURES",
    "LABELS",
    "ClientInfo",
    "JoinInfo",
    "RoundResult",
    "ServerModel",
    "SessionStatus",
    "SplitConfig",
    "SplitSession",
    "SplitState",
    "TensorLayout",
]

Array = npt.NDArray[Any]

FEATURES: Final = "features"
"""Tensor name of the edge features in an upload."""
LABELS: Final = "labels"
"""Tensor name of the labels in an upload."""
MAX_CLIENT_ID_LENGTH: Final = 256

_log = logging.getLogger(__name__)


class ServerModel(Protocol):
    """What a session trains: the layers after ``cut_layer``, inside a full model.

    :class:`~sedna.service.split_learning.torch_split.TorchSplitModel` implements it for torch.
    Both methods are called from a worker thread, never concurrently.
    """

    def get_weights(self) -> list[Array]:
        """The full model's weights (front and back), as the edge loads them."""
        ...

    def train_round(self, features: Array, labels: Array, round_number: int) -> Mapping[str, float]:
        """Train the server part on one round's features; return metrics (e.g. loss)."""
        ...


class SplitState(enum.Enum):
    """Lifecycle of a split-learning session."""

    WAITING_FOR_CLIENTS = "waiting_for_clients"
    ROUND_OPEN = "round_open"
    TRAINING = "training"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SplitConfig:
    """How a split-learning session runs.

    Parameters
    ----------
    cut_layer
        The model is split after this many layers; uploads must say the same.
    epsilon
        The privacy budget the edge perturbs features with; uploads must say the same.
    min_clients
        Round 1 opens once this many clients joined (upstream ``clients.per_round``).
    exit_round
        Rounds to run; the last one's result carries ``exit``.
    round_timeout
        Seconds a round stays open for uploads; then it closes with the clients that uploaded
        everything they declared. None: it waits for every joined client.
    max_round_bytes
        Feature and label bytes one round may hold in memory, all clients together.
    max_samples_per_client
        Largest ``sample_count`` a client may declare.
    """

    cut_layer: int
    epsilon: float
    min_clients: int = 1
    exit_round: int = 1
    round_timeout: float | None = None
    max_round_bytes: int = 1 << 30
    max_samples_per_client: int = 10_000_000

    def __post_init__(self) -> None:
        if isinstance(self.cut_layer, bool) or self.cut_layer < 0:
            raise ValueError(f"cut_layer must be an integer >= 0, got {self.cut_layer!r}")
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"epsilon must be a finite number > 0, got {self.epsilon!r}")
        if self.min_clients < 1:
            raise ValueError(f"min_clients must be >= 1, got {self.min_clients}")
        if self.exit_round < 1:
            raise ValueError(f"exit_round must be >= 1, got {self.exit_round}")
        if self.round_timeout is not None and not self.round_timeout > 0:
            raise ValueError(f"round_timeout must be > 0 seconds, got {self.round_timeout}")
        if self.max_round_bytes < 1 or self.max_samples_per_client < 1:
            raise ValueError("max_round_bytes and max_samples_per_client must be >= 1")


@dataclass(frozen=True, slots=True)
class TensorLayout:
    """Dtype and per-sample shape of one uploaded tensor (its first axis is the samples)."""

    dtype: np.dtype[Any]
    sample_shape: tuple[int, ...]

    def describe(self) -> str:
        """E.g. ``float32 (n, 16, 4, 4)``."""
        return f"{self.dtype} {('n', *self.sample_shape)}".replace("'", "")


@dataclass(frozen=True, slots=True)
class RoundResult:
    """A published model: round 0 is the initial one."""

    round: int
    weights: tuple[Array, ...]
    exit: bool
    total_samples: int = 0
    participants: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes of the weights."""
        return sum(int(w.nbytes) for w in self.weights)


@dataclass(frozen=True, slots=True)
class JoinInfo:
    """The answer to a join: the state and the round to upload for."""

    state: SplitState
    current_round: int


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """One joined client, as the session sees it."""

    client_id: str
    sample_count: int
    received_samples: int
    last_round: int


@dataclass(frozen=True, slots=True)
class SessionStatus:
    """A snapshot of the session."""

    state: SplitState
    current_round: int
    clients: tuple[ClientInfo, ...]
    metrics: Mapping[str, float]


@dataclass(slots=True)
class _Client:
    sample_count: int
    features: list[Array] = field(default_factory=list)
    labels: list[Array] = field(default_factory=list)
    received: int = 0
    nbytes: int = 0
    last_round: int = 0

    @property
    def complete(self) -> bool:
        return self.received == self.sample_count

    def clear(self) -> None:
        self.features.clear()
        self.labels.clear()
        self.received = 0
        self.nbytes = 0


def _is_float(dtype: np.dtype[Any]) -> bool:
    return bool(np.issubdtype(dtype, np.floating))


def _is_label_dtype(dtype: np.dtype[Any]) -> bool:
    return bool(np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating))


def _first_not_finite(array: Array) -> tuple[int, ...] | None:
    bad = ~np.isfinite(array)
    if not bad.any():
        return None
    return tuple(int(i) for i in np.argwhere(bad)[0])


class SplitSession:
    """One MistNet job's cloud side: feature rounds and training of the server part.

    Parameters
    ----------
    session_id
        ``<namespace>/<job name>``.
    config
        The session's :class:`SplitConfig`.
    model
        The model whose layers after ``cut_layer`` are trained (:class:`ServerModel`).
    initial_weights
        The round-0 model; ``model.get_weights()`` when None.
    """

    def __init__(
        self,
        session_id: str,
        config: SplitConfig,
        model: ServerModel,
        *,
        initial_weights: Sequence[Array] | None = None,
    ) -> None:
        self.session_id = session_id
        self.config = config
        self._model = model
        weights = model.get_weights() if initial_weights is None else list(initial_weights)
        self._latest = RoundResult(round=0, weights=tuple(weights), exit=False)
        self._state = SplitState.WAITING_FOR_CLIENTS
        self._round = 0
        self._clients: dict[str, _Client] = {}
        # Clients that left after uploading all of the open round: their samples stay in it.
        self._left_complete: dict[str, _Client] = {}
        self._features: TensorLayout | None = None
        self._labels: TensorLayout | None = None
        self._round_bytes = 0
        self._failure = ""
        self._waiters: list[tuple[int, asyncio.Future[RoundResult]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._training: asyncio.Task[None] | None = None
        self._done = asyncio.Event()

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> SplitState:
        """The session's state."""
        return self._state

    @property
    def current_round(self) -> int:
        """The round open (or being trained); 1 while waiting for clients; the last one once
        complete."""
        return max(self._round, 1)

    @property
    def latest(self) -> RoundResult:
        """The latest published model (round 0: the initial one)."""
        return self._latest

    @property
    def feature_layout(self) -> TensorLayout | None:
        """Dtype and per-sample shape of the features, fixed by the first accepted batch."""
        return self._features

    def status(self) -> SessionStatus:
        """A snapshot: state, round, clients, the last round's metrics."""
        return SessionStatus(
            state=self._state,
            current_round=self.current_round,
            clients=tuple(
                ClientInfo(cid, c.sample_count, c.received, c.last_round)
                for cid, c in sorted(self._clients.items())
            ),
            metrics=dict(self._latest.metrics),
        )

    async def wait_completed(self) -> None:
        """Return once the session is completed or failed."""
        await self._done.wait()

    # ------------------------------------------------------------------ clients

    def join(self, client_id: str, sample_count: int) -> JoinInfo:
        """Join (re-joining is fine) declaring the samples uploaded per round.

        Raises
        ------
        InvalidRequestError
            Empty or overlong ``client_id``, ``sample_count`` < 1 or over the limit.
        ConfigMismatchError
            A re-join with another ``sample_count`` after uploading part of a round.
        SessionFailedError
            The session failed.
        """
        if not client_id or len(client_id) > MAX_CLIENT_ID_LENGTH or not client_id.isprintable():
            raise InvalidRequestError(
                f"client_id must be printable, 1 to {MAX_CLIENT_ID_LENGTH} characters"
            )
        if sample_count < 1:
            raise InvalidRequestError(
                f"client {client_id!r}: sample_count must be >= 1 (the samples the client "
                f"uploads per round), got {sample_count}"
            )
        if sample_count > self.config.max_samples_per_client:
            raise InvalidRequestError(
                f"client {client_id!r}: sample_count {sample_count} is over the session's "
                f"max_samples_per_client={self.config.max_samples_per_client}"
            )
        self._check_not_failed()
        client = self._clients.get(client_id)
        if client is None:
            self._clients[client_id] = _Client(sample_count)
            _log.info("client joined", extra={"session": self.session_id, "client": client_id})
        elif client.sample_count != sample_count:
            if client.received:
                raise ConfigMismatchError(
                    f"client {client_id!r} re-joined with sample_count {sample_count} after "
                    f"uploading {client.received} of the {client.sample_count} it declared"
                )
            client.sample_count = sample_count
        if (
            self._state is SplitState.WAITING_FOR_CLIENTS
            and len(self._clients) >= self.config.min_clients
        ):
            self._open_round(1)
        return JoinInfo(self._state, self.current_round)

    def leave(self, client_id: str) -> None:
        """Leave (idempotent); samples of an unfinished round are discarded."""
        client = self._clients.pop(client_id, None)
        if client is None:
            return
        if client.complete and self._state is SplitState.ROUND_OPEN:
            self._left_complete[client_id] = client
        else:
            self._round_bytes -= client.nbytes
        self._maybe_close()

    # ------------------------------------------------------------------ uploads

    def precheck(self, client_id: str, round_number: int, cut_layer: int, epsilon: float) -> None:
        """Refuse an upload from its header alone, before any tensor byte is read.

        Raises
        ------
        ConfigMismatchError
            ``cut_layer`` or ``epsilon`` differ from the session's.
        UnknownClientError, RoundNotOpenError, WrongRoundError,
        DuplicateBatchError, SessionClosedError, SessionFailedError
            As their names say; the message names the client and the rounds.
        """
        self._check_not_failed()
        if cut_layer != self.config.cut_layer:
            raise ConfigMismatchError(
                f"client {client_id!r}: cut_layer is {cut_layer}, the session's is "
                f"{self.config.cut_layer}"
            )
        if not math.isclose(epsilon, self.config.epsilon, rel_tol=1e-9, abs_tol=0.0):
            raise ConfigMismatchError(
                f"client {client_id!r}: epsilon is {epsilon!r}, the session's is "
                f"{self.config.epsilon!r}"
            )
        if self._state is SplitState.COMPLETED:
            raise SessionClosedError(
                f"session {self.session_id!r} completed after round {self._latest.round}; "
                "it takes no more features"
            )
        client = self._clients.get(client_id)
        if client is None:
            raise UnknownClientError(
                f"client {client_id!r} has not joined session {self.session_id!r}"
            )
        if self._state is SplitState.WAITING_FOR_CLIENTS:
            raise RoundNotOpenError(
                f"round {round_number} is not open: waiting for {self.config.min_clients} "
                f"clients, {len(self._clients)} joined"
            )
        if self._state is SplitState.TRAINING:
            if round_number == self._round:
                # Answered as a stale round: the client pulls this round's model and goes on
                # with the next, as with a round that closed without its update.
                raise WrongRoundError(
                    f"client {client_id!r}: round {round_number} closed (the cloud is training "
                    "on it) before all of this client's samples arrived",
                    current_round=self._round + 1,
                )
            if round_number == self._round + 1:
                raise RoundNotOpenError(
                    f"round {round_number} is not open yet: the cloud is training round "
                    f"{self._round}"
                )
        if round_number != self._round or self._state is SplitState.TRAINING:
            raise WrongRoundError(
                f"client {client_id!r}: features for round {round_number}, but the session is "
                f"at round {self._round}",
                current_round=self._round,
            )
        if client.complete:
            raise DuplicateBatchError(
                f"client {client_id!r} already uploaded all {client.sample_count} samples it "
                f"declared for round {round_number}"
            )

    def check_layout(
        self,
        client_id: str,
        features: tuple[np.dtype[Any], tuple[int, ...]],
        labels: tuple[np.dtype[Any], tuple[int, ...]],
    ) -> None:
        """Refuse a batch from its dtypes and shapes, before its bytes are allocated.

        Parameters
        ----------
        client_id
            The uploading client (joined; :meth:`precheck` passed).
        features, labels
            ``(dtype, shape)`` of each tensor; the first axis counts samples.

        Raises
        ------
        BatchRejectedError
            Wrong dtype, no sample axis, counts that differ, or a layout other than the
            session's (fixed by the first accepted batch); the message names the tensor.
        TooMuchDataError
            More samples than the client declared, or over the round's byte budget.
        """
        f_dtype, f_shape = features
        l_dtype, l_shape = labels
        who = f"client {client_id!r}"
        if not _is_float(f_dtype):
            raise BatchRejectedError(
                f"{who}: tensor {FEATURES!r} has dtype {f_dtype}; features must be float16, "
                "float32 or float64"
            )
        if not _is_label_dtype(l_dtype):
            raise BatchRejectedError(
                f"{who}: tensor {LABELS!r} has dtype {l_dtype}; labels must be integers or floats"
            )
        if len(f_shape) < 2:
            raise BatchRejectedError(
                f"{who}: tensor {FEATURES!r} has shape {f_shape}; it needs a sample axis and at "
                "least one feature axis"
            )
        if len(l_shape) < 1:
            raise BatchRejectedError(
                f"{who}: tensor {LABELS!r} is a scalar; it needs a sample axis"
            )
        count = f_shape[0]
        if count < 1:
            raise BatchRejectedError(f"{who}: the batch has no samples")
        if l_shape[0] != count:
            raise BatchRejectedError(
                f"{who}: tensor {LABELS!r} has {l_shape[0]} labels for {count} feature rows; "
                "the counts must be equal"
            )
        for name, want, dtype, shape in (
            (FEATURES, self._features, f_dtype, f_shape),
            (LABELS, self._labels, l_dtype, l_shape),
        ):
            got = TensorLayout(np.dtype(dtype), tuple(shape[1:]))
            if want is not None and got != want:
                raise BatchRejectedError(
                    f"{who}: tensor {name!r} is {got.describe()}, but the session's {name} are "
                    f"{want.describe()}"
                )
        client = self._clients[client_id]
        if client.received + count > client.sample_count:
            raise TooMuchDataError(
                f"{who}: {count} more samples would make {client.received + count}, over the "
                f"{client.sample_count} the client declared when joining"
            )
        nbytes = math.prod(f_shape) * f_dtype.itemsize + math.prod(l_shape) * l_dtype.itemsize
        if self._round_bytes + nbytes > self.config.max_round_bytes:
            raise TooMuchDataError(
                f"{who}: the batch's {nbytes} bytes would take round {self._round} over its "
                f"budget of {self.config.max_round_bytes} bytes (max_round_bytes)"
            )

    def submit(  # noqa: PLR0917 - the header's fields, then the two tensors
        self,
        client_id: str,
        round_number: int,
        cut_layer: int,
        epsilon: float,
        features: Array,
        labels: Array,
    ) -> int:
        """Add a received batch to the round (all checks again: the round may have moved on).

        Returns
        -------
        int
            Samples received from the client in the round, this batch included.

        Raises
        ------
        BatchRejectedError
            A NaN or infinity (the message names the tensor and the first bad index), or
            any :meth:`check_layout` refusal.
        SplitLearningError
            Any :meth:`precheck` refusal.
        """
        self.precheck(client_id, round_number, cut_layer, epsilon)
        self.check_layout(
            client_id, (features.dtype, tuple(features.shape)), (labels.dtype, tuple(labels.shape))
        )
        for name, array in ((FEATURES, features), (LABELS, labels)):
            if _is_float(array.dtype):
                bad = _first_not_finite(array)
                if bad is not None:
                    raise BatchRejectedError(
                        f"client {client_id!r}: tensor {name!r} holds {array[bad]} at index "
                        f"{bad}; NaN and infinity are refused"
                    )
        if self._features is None:
            self._features = TensorLayout(features.dtype, tuple(features.shape[1:]))
            self._labels = TensorLayout(labels.dtype, tuple(labels.shape[1:]))
        client = self._clients[client_id]
        client.features.append(features)
        client.labels.append(labels)
        client.received += int(features.shape[0])
        nbytes = int(features.nbytes + labels.nbytes)
        client.nbytes += nbytes
        client.last_round = round_number
        self._round_bytes += nbytes
        received = client.received
        self._maybe_close()
        return received

    # ------------------------------------------------------------------ results

    async def wait_for_round(self, round_number: int) -> RoundResult:
        """The model of ``round_number`` (0: the latest), once published.

        A later round's model is returned if the session moved on; a completed session
        answers with its last model (``exit`` set).

        Raises
        ------
        SessionFailedError
            The session failed (now or while waiting).
        """
        self._check_not_failed()
        if (
            round_number <= self._latest.round
            or round_number == 0
            or self._state is SplitState.COMPLETED
        ):
            return self._latest
        future: asyncio.Future[RoundResult] = asyncio.get_running_loop().create_future()
        self._waiters.append((round_number, future))
        try:
            return await future
        finally:
            self._waiters = [(r, f) for r, f in self._waiters if f is not future]

    async def aclose(self) -> None:
        """Stop the round timer and any training (server shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
        if self._training is not None and not self._training.done():
            self._training.cancel()
        for _round, future in self._waiters:
            if not future.done():
                future.set_exception(SessionFailedError("the server is shutting down"))
        self._waiters.clear()

    # ------------------------------------------------------------------ internals

    def _check_not_failed(self) -> None:
        if self._state is SplitState.FAILED:
            raise SessionFailedError(f"session {self.session_id!r} failed: {self._failure}")

    def _open_round(self, round_number: int) -> None:
        self._round = round_number
        self._state = SplitState.ROUND_OPEN
        self._round_bytes = 0
        self._left_complete.clear()
        for client in self._clients.values():
            client.clear()
        if self.config.round_timeout is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.config.round_timeout, self._on_timeout, round_number)
        _log.info("round opened", extra={"session": self.session_id, "round": round_number})

    def _maybe_close(self) -> None:
        if self._state is not SplitState.ROUND_OPEN:
            return
        clients = list(self._clients.values())
        if (clients or self._left_complete) and all(c.complete for c in clients):
            self._close_round()

    def _on_timeout(self, round_number: int) -> None:
        if self._state is not SplitState.ROUND_OPEN or self._round != round_number:
            return
        if self._left_complete or any(c.complete for c in self._clients.values()):
            self._close_round()
        else:
            self._fail(
                f"no client uploaded all its declared samples for round {round_number} within "
                f"round_timeout={self.config.round_timeout} s"
            )

    def _close_round(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._state = SplitState.TRAINING
        finished = {cid: c for cid, c in self._clients.items() if c.complete}
        finished.update(self._left_complete)
        participants = sorted(finished.items())
        dropped = tuple(sorted(cid for cid, c in self._clients.items() if not c.complete))
        features = np.concatenate([f for _cid, c in participants for f in c.features])
        labels = np.concatenate([y for _cid, c in participants for y in c.labels])
        names = tuple(cid for cid, _c in participants)
        for client in self._clients.values():
            client.clear()
        self._left_complete.clear()
        self._round_bytes = 0
        self._training = asyncio.get_running_loop().create_task(
            self._train(self._round, features, labels, names, dropped)
        )

    async def _train(
        self,
        round_number: int,
        features: Array,
        labels: Array,
        participants: tuple[str, ...],
        dropped: tuple[str, ...],
    ) -> None:
        _log.info(
            "training the server part",
            extra={
                "session": self.session_id,
                "round": round_number,
                "samples": int(features.shape[0]),
                "participants": list(participants),
            },
        )
        try:
            metrics = await asyncio.to_thread(
                self._model.train_round, features, labels, round_number
            )
            weights = await asyncio.to_thread(self._model.get_weights)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the user's model: any failure ends the session, reported
            _log.exception("cloud training failed", extra={"session": self.session_id})
            self._fail(f"training round {round_number} raised {type(exc).__name__}: {exc}")
            return
        done = round_number >= self.config.exit_round
        self._latest = RoundResult(
            round=round_number,
            weights=tuple(weights),
            exit=done,
            total_samples=int(features.shape[0]),
            participants=participants,
            dropped=dropped,
            metrics={str(k): float(v) for k, v in dict(metrics).items()},
        )
        if done:
            self._state = SplitState.COMPLETED
            self._done.set()
        else:
            self._open_round(round_number + 1)
        self._wake()

    def _wake(self) -> None:
        still: list[tuple[int, asyncio.Future[RoundResult]]] = []
        for wanted, future in self._waiters:
            if future.done():
                continue
            if wanted <= self._latest.round or self._state is SplitState.COMPLETED:
                future.set_result(self._latest)
            else:
                still.append((wanted, future))
        self._waiters = still

    def _fail(self, reason: str) -> None:
        self._state = SplitState.FAILED
        self._failure = reason
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for client in self._clients.values():
            client.clear()
        _log.error("session failed: %s", reason, extra={"session": self.session_id})
        for _wanted, future in self._waiters:
            if not future.done():
                future.set_exception(
                    SessionFailedError(f"session {self.session_id!r} failed: {reason}")
                )
        self._waiters.clear()
        self._done.set()
