"""``Session``: the transport-agnostic round engine of one federated-learning job.

One ``Session`` per job. Clients :meth:`~Session.join`; each round selects participants,
takes exactly one update per selected client (:meth:`~Session.submit_update`), and closes when
every selected client reported, or at the deadline if at least ``min_participants`` did
(stragglers are recorded as dropped). Clients await :meth:`~Session.wait_for_round`. After
every round the global weights, the aggregator's ``state_dict`` and the participants history
go to the :class:`~sedna_aggregator.core.ports.RoundStore`; :meth:`Session.restore` resumes.

Updates arrive whole (:meth:`~Session.submit_update`) or layer by layer
(:meth:`~Session.begin_update` gives an :class:`UpdateUpload`: ``add_layer`` as each layer
arrives, then ``commit``; any failure aborts it and its layers are backed out of the round's
sums). An update counts entirely or not at all.

Concurrency: everything runs on one event loop. The aggregator is touched only under one
``asyncio.Lock`` (FIFO), through the injected runner (a worker thread by default; steps on
at most a default-sized chunk run on the loop itself, see ``_INLINE_STEP_BYTES``), so an
update whose last step was queued before the deadline fired is still counted, and a round
never closes in the middle of an ``add``. A call cancelled mid-``add`` still holds the lock
until the worker thread is done with the aggregator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

import numpy as np

import sedna.algorithms.aggregation  # noqa: F401  (registers the FL_AGG plug-ins)
from sedna.algorithms.aggregation import AggregationError, BaseAggregation
from sedna.algorithms.client_choose import AbstractClientChoose, FractionClientChoose
from sedna.common.class_factory import ClassFactory, ClassType
from sedna_aggregator.core.clock import Clock, LoopClock, Timer
from sedna_aggregator.core.config import BelowMinimum, SessionConfig
from sedna_aggregator.core.errors import (
    CheckpointError,
    DuplicateUpdateError,
    InvalidRequestError,
    MalformedUpdateError,
    NotSelectedError,
    RoundNotOpenError,
    SessionClosedError,
    SessionConfigError,
    SessionFailedError,
    UnknownClientError,
    UpdateRejectedError,
    WrongRoundError,
)
from sedna_aggregator.core.model import (
    TRANSITIONS,
    Array,
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
)
from sedna_aggregator.core.weights_file import WeightsFile

__all__ = ["Session", "UpdateUpload", "make_aggregator"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
_INLINE_STEP_BYTES: Final = 4 << 20
"""Upload steps on at most this many bytes (a chunk of the default size) run on the event
loop, not in a worker thread: such a step takes a few milliseconds, and a worker thread's
round trip costs ~0.3 ms of CPU and two cross-CPU wake-ups on a virtual machine."""
_INLINE_STEP_SECONDS: Final = 0.05
"""An inline step that took longer than this (a write the kernel throttled for dirty pages, a
stalled disk under the undo file) sends the session's later steps to worker threads, so the
event loop is not held up again."""


def make_aggregator(config: SessionConfig) -> BaseAggregation:
    """The ``FL_AGG`` plug-in named by ``config`` with its parameters."""
    try:
        cls = ClassFactory.get_cls(ClassType.FL_AGG, config.aggregation)
        aggregator = cls(**dict(config.aggregation_parameters))
    except (ValueError, TypeError) as err:
        raise SessionConfigError(f"aggregation {config.aggregation!r}: {err}") from err
    if not isinstance(aggregator, BaseAggregation):
        raise SessionConfigError(
            f"aggregation {config.aggregation!r} is not a BaseAggregation plug-in"
        )
    return aggregator


def _initial_weights(weights: Sequence[Any] | None) -> list[Array] | None:
    if weights is None:
        return None
    layers: list[Array] = []
    for index, layer in enumerate(weights):
        if (
            not isinstance(layer, np.ndarray)
            or not np.issubdtype(layer.dtype, np.floating)
            or not np.isfinite(layer).all()
        ):
            raise SessionConfigError(
                f"initial weights layer {index} must be a finite floating-point ndarray"
            )
        layers.append(layer)
    return layers


def _nbytes(weights: object) -> int:
    if isinstance(weights, Sequence) and not isinstance(weights, str | bytes):
        return sum(int(layer.nbytes) for layer in weights if isinstance(layer, np.ndarray))
    return 0


def _clean_metrics(client_id: str, metrics: Mapping[str, float] | None) -> dict[str, float]:
    clean: dict[str, float] = {}
    for name, value in (metrics or {}).items():
        if not isinstance(name, str) or not name:
            raise MalformedUpdateError(f"client {client_id!r}: metric names must be strings")
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise MalformedUpdateError(f"client {client_id!r}: metric {name!r} is not a number")
        number = float(value)
        if not math.isfinite(number):
            raise MalformedUpdateError(f"client {client_id!r}: metric {name!r} is {number}")
        clean[name] = number
    return clean


@dataclass
class _Client:
    sample_count: int
    last_round: int = 0


class UpdateUpload:
    """One client's update arriving layer by layer (from :meth:`Session.begin_update`).

    Call :meth:`add_layer` for every layer as it arrives (each is checked and added into the
    round at once), then :meth:`commit`. Any error of ``add_layer`` or ``commit`` aborts the
    update; the transport calls :meth:`abort` for its own failures (a broken or cancelled
    stream, a bad chunk). An aborted update's layers are backed out of the round, it does
    not count, and the client may send it again.
    """

    def __init__(
        self,
        session: Session,
        client_id: str,
        round_number: int,
        num_samples: int,
        metrics: dict[str, float],
    ) -> None:
        self._session = session
        self.client_id = client_id
        self.round = round_number
        self.num_samples = num_samples
        self.metrics = metrics
        self.layer_bytes = 0
        self.begun = False
        self.done = False

    @property
    def active(self) -> bool:
        """Neither committed nor aborted."""
        return not self.done

    async def add_layer(self, index: int, layer: Array, *, name: str = "") -> None:
        """Check layer ``index`` (shape, dtype, NaN/Inf) and add it into the round.

        ``layer`` is not modified; streaming aggregations keep no reference to it.

        Raises
        ------
        UpdateRejectedError
            ``MalformedUpdateError`` naming the layer, ``RoundNotOpenError`` if the round
            closed (its deadline) meanwhile, ``SessionClosedError``. The update is aborted.
        """
        await self._session._upload_add(self, index, layer, name)

    async def add_part(self, index: int, start: int, part: Array, *, name: str = "") -> None:
        """Check elements ``[start, start + part.size)`` of layer ``index`` (flat; parts in
        order) and add them into the round: streaming aggregations sum each part at once, so
        no layer is ever assembled in memory.

        ``part`` is not kept (a view of a received message will do).

        Raises
        ------
        UpdateRejectedError
            As :meth:`add_layer`.
        """
        await self._session._upload_add_part(self, index, start, part, name)

    async def commit(self, *, nbytes: int | None = None) -> UpdateAck:
        """Count the update: every layer must have been added.

        Parameters
        ----------
        nbytes : int, optional
            Bytes received, for metrics (default: the layers' size).

        Raises
        ------
        UpdateRejectedError
            As :meth:`add_layer` (a missing layer is a ``MalformedUpdateError``).
        """
        return await self._session._upload_commit(self, nbytes)

    def abort(self, error: UpdateRejectedError | None = None, *, nbytes: int = 0) -> None:
        """Give the update up (idempotent; synchronous, so safe in a cancelled task).

        The layers already added are backed out of the round by a background task under the
        session's lock (queued behind the aggregator steps already waiting for it); the
        round's ``finish()`` backs out whatever is still in progress in any case, so an
        aborted update never reaches a result.
        """
        self._session._upload_abort(self, error, nbytes)


class Session:
    """One federated-learning job's rounds.

    Parameters
    ----------
    session_id : str
        Normally ``"<namespace>/<FederatedLearningJob name>"``.
    config : SessionConfig
        How to aggregate, select, time out and stop.
    store : RoundStore, optional
        Where checkpoints go after every round; None: no checkpoints.
    clock : Clock, optional
        Time and timers (default: the event loop's); tests pass a ``ManualClock``.
    metrics : SessionMetrics, optional
        Metrics hooks (default: no-op).
    runner : Runner, optional
        Runs the aggregator's ``add``/``finish`` (default: a worker thread).
    chooser : AbstractClientChoose, optional
        Client selection (default: ``FractionClientChoose(client_fraction,
        min_clients=min_participants, seed=selection_seed)``).
    initial_weights : list of ndarray, optional
        The global weights of round 0 (served to clients before round 1 and used by server
        optimisers from round 1). None: the clients start from their own initialisation, as
        upstream, and round 1's result is the plain weighted average.
    weights_dir : str, None or False
        Where each round's aggregate is kept once checkpointed: an unlinked file in this
        directory (None: the system's temporary directory), mapped read-only, so that the
        process holds at most the next round's sums (:class:`WeightsFile`). False: in memory.
    """

    def __init__(
        self,
        session_id: str,
        config: SessionConfig,
        *,
        store: RoundStore | None = None,
        clock: Clock | None = None,
        metrics: SessionMetrics | None = None,
        runner: Runner | None = None,
        chooser: AbstractClientChoose | None = None,
        initial_weights: Sequence[Any] | None = None,
        weights_dir: str | Literal[False] | None = None,
    ) -> None:
        if not isinstance(session_id, str) or not session_id:
            raise SessionConfigError("session_id must be a non-empty string")
        self._id = session_id
        self._config = config
        self._store = store
        self._clock: Clock = clock if clock is not None else LoopClock()
        self._metrics: SessionMetrics = metrics if metrics is not None else NoopMetrics()
        self._runner: Runner = runner if runner is not None else run_in_thread
        self._inline_steps = True  # until one held the event loop too long
        self._chooser = chooser or FractionClientChoose(
            fraction=config.client_fraction,
            min_clients=config.min_participants,
            seed=config.selection_seed,
        )
        self._agg = make_aggregator(config)
        self._weights_dir = weights_dir
        self._stored: WeightsFile | None = None
        self._global = _initial_weights(initial_weights)
        self._latest: RoundResult | None = (
            None if self._global is None else RoundResult(round=0, weights=self._global)
        )
        self._state = SessionState.WAITING_FOR_CLIENTS
        self._reason = ""
        self._round = 1
        self._completed_round = 0
        self._restored_round: int | None = None
        self._history: list[RoundRecord] = []
        self._clients: dict[str, _Client] = {}
        # The open round.
        self._selected: tuple[str, ...] = ()
        self._reported: dict[str, int] = {}
        self._pending: set[str] = set()
        self._uploads: dict[str, UpdateUpload] = {}
        self._metric_sums: dict[str, float] = {}
        self._metric_weights: dict[str, float] = {}
        self._round_bytes = 0
        self._round_started = 0.0
        self._extended = False
        self._deadline: Timer | None = None
        # Waiting for clients.
        self._opened_any = False
        self._grace: Timer | None = None
        self._grace_expired = False
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ construction

    @classmethod
    async def restore(
        cls,
        session_id: str,
        config: SessionConfig,
        store: RoundStore,
        *,
        clock: Clock | None = None,
        metrics: SessionMetrics | None = None,
        runner: Runner | None = None,
        chooser: AbstractClientChoose | None = None,
        initial_weights: Sequence[Any] | None = None,
        weights_dir: str | Literal[False] | None = None,
    ) -> Session:
        """The session resumed from ``store``'s checkpoint, or a fresh one if there is none.

        A resumed session has the global weights, aggregator state (optimiser moments...) and
        history of its last aggregated round ``r``, no joined clients, and state
        WAITING_FOR_CLIENTS for round ``r + 1`` (COMPLETED if the job had finished). The round
        open at the crash is restarted: clients re-join and train round ``r + 1`` from the
        checkpointed weights. ``initial_weights`` is used only when there is no checkpoint.

        Raises
        ------
        CheckpointError
            If the checkpoint is unreadable or belongs to another aggregation.
        """
        checkpoint = await store.load(session_id)
        session = cls(
            session_id,
            config,
            store=store,
            clock=clock,
            metrics=metrics,
            runner=runner,
            chooser=chooser,
            initial_weights=None if checkpoint is not None else initial_weights,
            weights_dir=weights_dir,
        )
        if checkpoint is not None:
            session._load_checkpoint(checkpoint)
        return session

    def _load_checkpoint(self, checkpoint: Checkpoint) -> None:
        if checkpoint.aggregation != self._config.aggregation:
            raise CheckpointError(
                f"session {self._id!r}: the checkpoint is for aggregation "
                f"{checkpoint.aggregation!r}, the session is configured for "
                f"{self._config.aggregation!r}"
            )
        try:
            self._agg.load_state_dict(checkpoint.aggregator_state)
            weights = _initial_weights(checkpoint.global_weights)
        except (AggregationError, SessionConfigError) as err:
            raise CheckpointError(f"session {self._id!r}: bad checkpoint: {err}") from err
        self._global = weights
        self._history = list(checkpoint.history)
        self._completed_round = checkpoint.round
        self._restored_round = checkpoint.round
        done = checkpoint.completed or checkpoint.round >= self._config.exit_round
        last = self._history[-1] if self._history else None
        self._latest = RoundResult(
            round=checkpoint.round,
            weights=weights,
            total_samples=last.total_samples if last else 0,
            participants=last.participants if last else (),
            dropped=last.dropped if last else (),
            metrics=dict(last.metrics) if last else {},
            exit=done,
        )
        if done:
            self._round = checkpoint.round
            self._state = SessionState.COMPLETED
            self._reason = checkpoint.reason or f"exit_round {self._config.exit_round} reached"
        else:
            self._round = checkpoint.round + 1

    # ------------------------------------------------------------------ read-only views

    @property
    def session_id(self) -> str:
        return self._id

    @property
    def config(self) -> SessionConfig:
        return self._config

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def reason(self) -> str:
        """Why the session completed or failed (empty while it runs)."""
        return self._reason

    @property
    def current_round(self) -> int:
        """The round open, or the next to open (the last one once COMPLETED)."""
        return self._round

    @property
    def completed_round(self) -> int:
        """The last aggregated round (0 before the first)."""
        return self._completed_round

    @property
    def restored_round(self) -> int | None:
        """The round the session was restored at, None for a fresh session."""
        return self._restored_round

    @property
    def selected(self) -> tuple[str, ...]:
        """The clients selected for the open round (empty when none is open)."""
        return self._selected if self._state is SessionState.ROUND_OPEN else ()

    @property
    def reported(self) -> tuple[str, ...]:
        """The clients whose update the open round accepted, in arrival order."""
        return tuple(self._reported)

    @property
    def history(self) -> tuple[RoundRecord, ...]:
        return tuple(self._history)

    @property
    def latest(self) -> RoundResult | None:
        """The newest global weights (round 0: the initial weights), None before any."""
        return self._latest

    @property
    def global_weights(self) -> list[Array] | None:
        return self._global

    @property
    def template(self) -> list[tuple[tuple[int, ...], np.dtype[Any]]] | None:
        """``(shape, dtype)`` per layer an update of the open round must have, if known.

        The global weights' (else the round's first update's); None when nothing is known.
        """
        if self._agg.round_open:
            return self._agg.template
        if self._global is None:
            return None
        return [(tuple(layer.shape), layer.dtype) for layer in self._global]

    @property
    def aggregator(self) -> BaseAggregation:
        """The aggregation plug-in (read it, do not drive it)."""
        return self._agg

    @property
    def metrics(self) -> SessionMetrics:
        return self._metrics

    def status(self) -> SessionStatus:
        """A snapshot for ``GetSessionStatus``."""
        selected = set(self.selected)
        return SessionStatus(
            session_id=self._id,
            state=self._state,
            current_round=self._round,
            completed_round=self._completed_round,
            clients=tuple(
                ClientStatus(cid, c.sample_count, c.last_round, cid in selected)
                for cid, c in sorted(self._clients.items())
            ),
            metrics=dict(self._latest.metrics) if self._latest else {},
            reason=self._reason,
        )

    # ------------------------------------------------------------------ clients

    async def join(self, client_id: str, sample_count: int = 0) -> JoinResult:
        """Join (or re-join after a reconnect: same identity, selection and reports kept).

        A client joining while a round is open is selected from the next round on. Joining a
        finished session is allowed and reports its final state.
        """
        if not isinstance(client_id, str) or not client_id:
            raise InvalidRequestError("client_id must be a non-empty string")
        if isinstance(sample_count, bool) or not isinstance(sample_count, int) or sample_count < 0:
            raise InvalidRequestError(f"client {client_id!r}: sample_count must be an integer >= 0")
        known = self._clients.get(client_id)
        if known is not None:
            known.sample_count = sample_count or known.sample_count
        elif not self._state.final:
            self._clients[client_id] = _Client(sample_count=sample_count)
            self._notify()
        if self._state is SessionState.WAITING_FOR_CLIENTS:
            await self._maybe_open()
        return JoinResult(
            state=self._state,
            current_round=self._round,
            selected=client_id in self.selected,
            rejoined=known is not None,
        )

    async def leave(self, client_id: str) -> None:
        """Leave the session (idempotent). An accepted update of the open round still counts;
        a selected client that leaves before reporting ends up among the round's dropped."""
        if self._clients.pop(client_id, None) is None:
            return
        self._notify()
        if self._state is SessionState.ROUND_OPEN:
            self._check_round_complete()
        elif self._state is SessionState.WAITING_FOR_CLIENTS:
            await self._maybe_open()

    # ------------------------------------------------------------------ updates

    async def submit_update(
        self,
        client_id: str,
        round_number: int,
        weights: Sequence[Any],
        num_samples: int,
        metrics: Mapping[str, float] | None = None,
        *,
        nbytes: int | None = None,
    ) -> UpdateAck:
        """Take ``client_id``'s update for ``round_number``.

        Parameters
        ----------
        weights : list of ndarray
            One floating-point array per layer (shapes of the global weights). The arrays are
            read, not kept (streaming algorithms) or kept until the round closes (others); do
            not modify them meanwhile.
        num_samples : int
            Samples behind the update (> 0), the FedAvg weight.
        metrics : mapping, optional
            The client's training metrics; averaged per round, sample-weighted.
        nbytes : int, optional
            Bytes received on the wire, for metrics (default: the arrays' size).

        Raises
        ------
        UpdateRejectedError
            A subclass naming why: ``SessionClosedError``, ``UnknownClientError``,
            ``WrongRoundError``, ``RoundNotOpenError``, ``NotSelectedError``,
            ``DuplicateUpdateError``, ``MalformedUpdateError``. The round is untouched.
        """
        size = nbytes if nbytes is not None else _nbytes(weights)
        try:
            self._check_update(client_id, round_number)
            client_metrics = _clean_metrics(client_id, metrics)
        except UpdateRejectedError as err:
            self._metrics.update_received(self._id, size, accepted=False, reason=err.reason)
            raise
        self._pending.add(client_id)
        try:
            async with self._lock:
                if self._round != round_number or not self._agg.round_open:
                    raise RoundNotOpenError(
                        f"client {client_id!r}: round {round_number} closed before the update "
                        "could be added"
                    )
                try:
                    await self._run_to_end(lambda: self._agg.add(client_id, weights, num_samples))
                except AggregationError as err:
                    raise MalformedUpdateError(str(err)) from err
                self._record_accepted(
                    client_id, round_number, int(num_samples), client_metrics, size
                )
                received = len(self._reported)
        except UpdateRejectedError as err:
            self._release_pending(client_id, round_number)
            self._metrics.update_received(self._id, size, accepted=False, reason=err.reason)
            self._check_round_complete()  # it may have been the last one in flight
            raise
        finally:
            self._release_pending(client_id, round_number)
        self._metrics.update_received(self._id, size, accepted=True)
        self._check_round_complete()
        self._notify()
        return UpdateAck(round=round_number, received_updates=received)

    def _release_pending(self, client_id: str, round_number: int) -> None:
        # A later round has its own pending set; this call's marker went with the old one.
        if self._round == round_number and client_id not in self._uploads:
            self._pending.discard(client_id)

    async def begin_update(
        self,
        client_id: str,
        round_number: int,
        num_samples: int,
        metrics: Mapping[str, float] | None = None,
        *,
        layout: Sequence[tuple[Sequence[int], Any]] | None = None,
    ) -> UpdateUpload:
        """Start ``client_id``'s update for ``round_number``, to arrive layer by layer.

        Parameters
        ----------
        num_samples : int
            Samples behind the update (> 0), the FedAvg weight.
        metrics : mapping, optional
            The client's training metrics.
        layout : list of (shape, dtype), optional
            What the update will carry (its manifest); checked against :attr:`template` and
            required when the round has no template yet.

        Returns
        -------
        UpdateUpload
            Add the layers to it, then commit it (or abort it).

        Raises
        ------
        UpdateRejectedError
            As :meth:`submit_update` (a bad ``num_samples`` or layout is a
            ``MalformedUpdateError``). Nothing is recorded.
        """
        try:
            self._check_update(client_id, round_number)
            client_metrics = _clean_metrics(client_id, metrics)
        except UpdateRejectedError as err:
            self._metrics.update_received(self._id, 0, accepted=False, reason=err.reason)
            raise
        samples = num_samples if isinstance(num_samples, int) else -1
        upload = UpdateUpload(self, client_id, round_number, samples, client_metrics)
        self._pending.add(client_id)
        self._uploads[client_id] = upload
        try:
            async with self._lock:
                self._require_current(upload)
                await self._back_out_stale()
                try:
                    self._agg.begin_update(client_id, num_samples, layout)
                except AggregationError as err:
                    raise MalformedUpdateError(str(err)) from err
                upload.begun = True
        except UpdateRejectedError as err:
            self._upload_abort(upload, err, 0)
            raise
        except BaseException:
            self._upload_abort(upload, None, 0)
            raise
        return upload

    def _require_current(self, upload: UpdateUpload) -> None:
        """Refuse a step of an upload whose round is gone (closed, deadline, session over)."""
        cid = upload.client_id
        if self._state.final:
            raise SessionClosedError(
                f"client {cid!r}: session {self._id!r} is {self._state.value}; the update of "
                f"round {upload.round} does not count"
            )
        if upload.done or self._uploads.get(cid) is not upload:
            raise RoundNotOpenError(
                f"client {cid!r}: the update of round {upload.round} was aborted or the round "
                "closed before it was complete; it does not count"
            )
        if self._round != upload.round or not self._agg.round_open:
            raise RoundNotOpenError(
                f"client {cid!r}: round {upload.round} closed (its deadline passed) before the "
                "update was complete; it does not count"
            )

    async def _upload_add(self, upload: UpdateUpload, index: int, layer: Array, name: str) -> None:
        cid = upload.client_id
        # A refused layer's update is backed out by _upload_abort, in a worker thread.
        await self._upload_step(
            upload,
            lambda: self._agg.add_layer(cid, index, layer, name=name, back_out=False),
            layer,
        )

    async def _upload_add_part(
        self, upload: UpdateUpload, index: int, start: int, part: Array, name: str
    ) -> None:
        cid = upload.client_id
        await self._upload_step(
            upload,
            lambda: self._agg.add_layer_part(cid, index, start, part, name=name, back_out=False),
            part,
        )

    async def _upload_step(self, upload: UpdateUpload, step: Callable[[], Any], data: Any) -> None:
        """Run one aggregator step of an upload under the lock; any failure aborts it.

        A step on at most ``_INLINE_STEP_BYTES`` (a chunk of the default size, a bias vector)
        runs on the event loop: a worker thread's hand-off costs more than the time such a
        step holds the loop. Once an inline step took longer than ``_INLINE_STEP_SECONDS``,
        the session's steps all go to worker threads.
        """
        nbytes: int | None = getattr(data, "nbytes", None)  # None: not an ndarray
        try:
            async with self._lock:
                self._require_current(upload)
                try:
                    if self._inline_steps and nbytes is not None and nbytes <= _INLINE_STEP_BYTES:
                        started = self._clock.now()
                        step()
                        self._check_inline_step(nbytes, self._clock.now() - started)
                    else:
                        await self._run_to_end(step)
                except AggregationError as err:
                    raise MalformedUpdateError(str(err)) from err
                upload.layer_bytes += nbytes or 0
        except UpdateRejectedError as err:
            self._upload_abort(upload, err, upload.layer_bytes)
            raise
        except BaseException:
            self._upload_abort(upload, None, upload.layer_bytes)
            raise

    def _check_inline_step(self, nbytes: int, seconds: float) -> None:
        if seconds > _INLINE_STEP_SECONDS:
            self._inline_steps = False
            _log.warning(
                "session %s: adding %d bytes of an update held the event loop for %.0f ms "
                "(a slow disk under the undo files, or a starved machine); from now on the "
                "session adds updates in worker threads",
                self._id,
                nbytes,
                seconds * 1000,
            )

    async def _upload_commit(self, upload: UpdateUpload, nbytes: int | None) -> UpdateAck:
        cid, round_number = upload.client_id, upload.round
        size = nbytes if nbytes is not None else upload.layer_bytes
        try:
            async with self._lock:
                self._require_current(upload)
                try:
                    await self._run_to_end(lambda: self._agg.commit_update(cid))
                except AggregationError as err:
                    raise MalformedUpdateError(str(err)) from err
                upload.done = True
                del self._uploads[cid]
                self._pending.discard(cid)
                self._record_accepted(cid, round_number, upload.num_samples, upload.metrics, size)
                received = len(self._reported)
        except UpdateRejectedError as err:
            self._upload_abort(upload, err, size)
            raise
        except BaseException:
            self._upload_abort(upload, None, size)
            raise
        self._metrics.update_received(self._id, size, accepted=True)
        self._check_round_complete()
        self._notify()
        return UpdateAck(round=round_number, received_updates=received)

    def _upload_abort(
        self, upload: UpdateUpload, error: UpdateRejectedError | None, nbytes: int
    ) -> None:
        if upload.done:
            return
        upload.done = True
        cid = upload.client_id
        current = self._uploads.get(cid) is upload
        if current:
            del self._uploads[cid]
            self._pending.discard(cid)
        reason = error.reason if error is not None else "cancelled"
        self._metrics.update_received(self._id, nbytes, accepted=False, reason=reason)
        if current and upload.begun:
            _log.info(
                "session %s: the update of %s for round %d was aborted (%s); backing it out",
                self._id,
                cid,
                upload.round,
                error if error is not None else "stream cancelled or broken",
            )
            self._spawn(self._back_out_task())
        self._check_round_complete()

    async def _back_out_task(self) -> None:
        async with self._lock:
            await self._back_out_stale()

    async def _back_out_stale(self) -> None:
        """Back out of the aggregator the updates in progress no live upload owns (lock held)."""
        if not self._agg.round_open:
            return
        stale = [
            cid
            for cid in self._agg.updates_in_progress
            if not ((upload := self._uploads.get(cid)) is not None and upload.begun)
        ]
        if stale:
            await self._run_to_end(lambda: [self._agg.abort_update(cid) for cid in stale])

    async def _run_to_end(self, fn: Callable[[], _T]) -> _T:
        """``await runner(fn)``, and if the caller is cancelled meanwhile, still wait for
        ``fn`` to end (the lock stays held): a worker thread must not be left working on the
        aggregator while the next lock holder uses it."""
        task = asyncio.ensure_future(self._runner(fn))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            while not task.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([task])
            if not task.cancelled():
                task.exception()  # retrieved: the cancellation is what propagates
            raise

    def _record_accepted(
        self,
        client_id: str,
        round_number: int,
        samples: int,
        client_metrics: Mapping[str, float],
        size: int,
    ) -> None:
        self._reported[client_id] = samples
        for name, value in client_metrics.items():
            self._metric_sums[name] = self._metric_sums.get(name, 0.0) + value * samples
            self._metric_weights[name] = self._metric_weights.get(name, 0.0) + samples
        self._round_bytes += size
        client = self._clients.get(client_id)
        if client is not None:
            client.last_round = round_number

    def precheck_update(self, client_id: str, round_number: int) -> None:
        """Refuse an update before its tensors are received, as :meth:`submit_update` would.

        For transports: the cheap checks (session closed, unknown client, wrong round, round
        not open, not selected, duplicate) run before megabytes of tensors are read. A refusal
        is counted in the metrics like one from :meth:`submit_update`, which checks again.
        """
        try:
            self._check_update(client_id, round_number)
        except UpdateRejectedError as err:
            self._metrics.update_received(self._id, 0, accepted=False, reason=err.reason)
            raise

    def _check_update(self, client_id: str, round_number: int) -> None:
        if self._state.final:
            raise SessionClosedError(
                f"session {self._id!r} is {self._state.value}; it takes no more updates"
            )
        if client_id not in self._clients:
            raise UnknownClientError(
                f"client {client_id!r} has not joined session {self._id!r}; join first"
            )
        if round_number != self._round:
            raise WrongRoundError(
                f"client {client_id!r}: update for round {round_number}, but the session is "
                f"at round {self._round}",
                current_round=self._round,
            )
        if self._state is not SessionState.ROUND_OPEN:
            what = (
                "is not open yet (waiting for clients)"
                if self._state is SessionState.WAITING_FOR_CLIENTS
                else "is closed (aggregating)"
            )
            raise RoundNotOpenError(f"client {client_id!r}: round {round_number} {what}")
        if client_id not in self._selected:
            raise NotSelectedError(
                f"client {client_id!r} was not selected for round {round_number}"
            )
        if client_id in self._reported or client_id in self._pending:
            raise DuplicateUpdateError(
                f"client {client_id!r} already sent its update for round {round_number}"
            )

    # ------------------------------------------------------------------ waiting

    async def wait_for_round(self, round_number: int) -> RoundResult:
        """The global weights once round ``round_number`` is aggregated (0: the latest).

        Returns at once if that round (or a later one) is done; a finished session returns
        its last result (``exit`` True) whatever was asked.

        Raises
        ------
        SessionFailedError
            If the session failed before the round was aggregated.
        """
        while True:
            latest = self._latest
            if latest is not None and (round_number <= 0 or latest.round >= round_number):
                return latest
            if self._state is SessionState.COMPLETED:
                if latest is None:  # pragma: no cover - a completed session has a result
                    raise SessionClosedError(f"session {self._id!r} completed without weights")
                return latest
            if self._state is SessionState.FAILED:
                raise SessionFailedError(f"session {self._id!r} failed: {self._reason}")
            await self._changed.wait()

    async def drain(self) -> None:
        """Wait until the session's background work (round closes, opens) has settled."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Stop timers and background work (server shutdown); the session stays as it is."""
        self._cancel_deadline()
        self._cancel_grace()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._stored is not None:
            self._stored.close()  # arrays still in use keep their mapping

    # ------------------------------------------------------------------ state machine

    def _set_state(self, state: SessionState) -> None:
        if state is self._state:
            return
        if state not in TRANSITIONS[self._state]:
            raise AssertionError(f"illegal session transition {self._state} -> {state}")
        self._state = state
        self._metrics.state_changed(self._id, state)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            _log.error("session %s: internal error", self._id, exc_info=error)
            if not self._state.final:
                self._fail(f"internal error: {error!r}")

    @property
    def _required(self) -> int:
        return max(1, min(self._config.min_participants, len(self._selected)))

    async def _maybe_open(self) -> None:
        if self._state is not SessionState.WAITING_FOR_CLIENTS:
            return
        async with self._lock:
            if self._state is SessionState.WAITING_FOR_CLIENTS:
                self._try_open_locked()

    def _try_open_locked(self) -> None:
        """Open the next round if enough clients joined, else wait (state WAITING)."""
        count = len(self._clients)
        enough = count >= self._config.min_participants
        expected = self._config.expected_clients
        gated = expected is not None and not self._opened_any
        if enough and (not gated or count >= (expected or 0) or self._grace_expired):
            self._open_round()
            return
        if self._state is SessionState.AGGREGATING:
            self._set_state(SessionState.WAITING_FOR_CLIENTS)
        grace = self._config.effective_join_grace
        if enough and gated and self._grace is None and grace is not None:
            self._grace = self._clock.call_later(grace, self._on_grace)

    def _on_grace(self) -> None:
        self._grace = None
        self._grace_expired = True
        if self._state is SessionState.WAITING_FOR_CLIENTS:
            self._spawn(self._maybe_open())

    def _open_round(self) -> None:
        try:
            chosen = self._chooser.choose(sorted(self._clients), self._round)
        except ValueError as err:
            self._fail(f"round {self._round}: client selection failed: {err}")
            return
        if not chosen or any(cid not in self._clients for cid in chosen):
            self._fail(f"round {self._round}: client selection chose {chosen!r}")
            return
        # The stored aggregate came out of finish(), finite: scanning it would map it whole.
        self._agg.begin_round(self._global, check_finite=self._stored is None)
        self._selected = tuple(chosen)
        self._reported = {}
        self._pending = set()
        self._uploads = {}
        self._metric_sums = {}
        self._metric_weights = {}
        self._round_bytes = 0
        self._round_started = self._clock.now()
        self._extended = False
        self._opened_any = True
        self._grace_expired = False
        self._cancel_grace()
        self._set_state(SessionState.ROUND_OPEN)
        self._arm_deadline()
        _log.info("session %s: round %d open for %s", self._id, self._round, list(chosen))

    def _arm_deadline(self) -> None:
        self._cancel_deadline()
        timeout = self._config.round_timeout
        if timeout is not None:
            round_number = self._round
            self._deadline = self._clock.call_later(
                timeout, lambda: self._on_deadline(round_number)
            )

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _cancel_grace(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None

    def _on_deadline(self, round_number: int) -> None:
        self._deadline = None
        if round_number == self._round and self._state is SessionState.ROUND_OPEN:
            self._start_close(at_deadline=True)

    def _check_round_complete(self) -> None:
        if self._state is not SessionState.ROUND_OPEN or self._pending:
            return
        outstanding = [
            cid for cid in self._selected if cid not in self._reported and cid in self._clients
        ]
        if not outstanding and len(self._reported) >= self._required:
            self._start_close(at_deadline=False)

    def _start_close(self, *, at_deadline: bool) -> None:
        self._cancel_deadline()
        self._set_state(SessionState.AGGREGATING)
        self._spawn(self._close(self._round, at_deadline=at_deadline))

    async def _close(self, round_number: int, *, at_deadline: bool) -> None:
        async with self._lock:
            if round_number != self._round or self._state is not SessionState.AGGREGATING:
                return
            got, required = len(self._reported), self._required
            if got < required:
                if (
                    self._config.below_minimum is BelowMinimum.EXTEND
                    and not self._extended
                    and self._config.round_timeout is not None
                ):
                    self._extended = True
                    _log.warning(
                        "session %s: round %d has %d of %d required updates at its deadline; "
                        "extending it once",
                        self._id,
                        round_number,
                        got,
                        required,
                    )
                    self._set_state(SessionState.ROUND_OPEN)
                    self._arm_deadline()
                    return
                self._fail(
                    f"round {round_number} ended with {got} of the {required} required "
                    f"updates ({len(self._selected)} selected"
                    + (", deadline extended once)" if self._extended else ")")
                )
                return
            try:
                weights = await self._run_to_end(self._agg.finish)
            except AggregationError as err:
                self._fail(f"round {round_number}: aggregation failed: {err}")
                return
            finally:
                if self._stored is not None:
                    self._stored.release()  # a server optimiser read the last aggregate
            await self._finish_round(round_number, weights, at_deadline=at_deadline)

    async def _finish_round(
        self, round_number: int, weights: list[Array], *, at_deadline: bool
    ) -> None:
        participants = tuple(self._reported)
        dropped = tuple(cid for cid in self._selected if cid not in self._reported)
        metrics = {
            name: total / self._metric_weights[name] for name, total in self._metric_sums.items()
        }
        record = RoundRecord(
            round=round_number,
            participants=participants,
            dropped=dropped,
            total_samples=sum(self._reported.values()),
            metrics=metrics,
            started_at=self._round_started,
            duration=self._clock.now() - self._round_started,
            extended=self._extended,
            bytes_in=self._round_bytes,
        )
        exit_now = round_number >= self._config.exit_round
        target = self._config.target_reached(metrics)
        reason = ""
        if exit_now:
            reason = f"exit_round {self._config.exit_round} reached"
        elif target:
            reason = (
                f"target {self._config.target_metric} "
                f"{self._config.target_mode.value} {self._config.target_metric_value} reached "
                f"({metrics[self._config.target_metric]:.6g})"
            )
        done = exit_now or target
        self._history.append(record)
        # Checkpoint before anyone sees the aggregate: a client never trains from weights a
        # restarted aggregator would not have.
        await self._save(round_number, weights, completed=done, reason=reason)
        stored = await self._store_weights(round_number, weights)
        if stored is not None:
            weights = stored.arrays
            self._agg.weights = weights  # the heap copy goes when the last reference does
        self._global = weights
        self._completed_round = round_number
        self._latest = RoundResult(
            round=round_number,
            weights=weights,
            total_samples=record.total_samples,
            participants=participants,
            dropped=dropped,
            metrics=metrics,
            exit=done,
            stored=stored,
        )
        self._metrics.round_finished(self._id, record)
        if dropped:
            _log.warning(
                "session %s: round %d dropped %s%s",
                self._id,
                round_number,
                list(dropped),
                " at the deadline" if at_deadline else "",
            )
        if done:
            self._reason = reason
            self._set_state(SessionState.COMPLETED)
            return
        self._round = round_number + 1
        self._try_open_locked()
        self._notify()

    async def _store_weights(self, round_number: int, weights: list[Array]) -> WeightsFile | None:
        """Move the aggregate to a :class:`WeightsFile` (None: keep it in memory: disabled,
        or the file could not be written)."""
        if self._weights_dir is False:
            return None
        directory = self._weights_dir
        try:
            stored = await self._run_to_end(lambda: WeightsFile.write(weights, directory))
        except OSError as err:
            _log.warning(
                "session %s: round %d's aggregate stays in memory: cannot write it to a "
                "file in %s: %s",
                self._id,
                round_number,
                directory or "the temporary directory",
                err,
            )
            return None
        previous, self._stored = self._stored, stored
        if previous is not None:
            previous.close()  # arrays still in use keep their mapping
        return stored

    def _fail(self, reason: str) -> None:
        _log.error("session %s failed: %s", self._id, reason)
        self._cancel_deadline()
        self._cancel_grace()
        self._reason = reason
        self._set_state(SessionState.FAILED)

    async def _save(
        self, round_number: int, weights: list[Array], *, completed: bool, reason: str
    ) -> None:
        if self._store is None:
            return
        checkpoint = Checkpoint(
            session_id=self._id,
            round=round_number,
            global_weights=weights,
            aggregator_state=self._agg.state_dict(),
            history=tuple(self._history),
            aggregation=self._config.aggregation,
            completed=completed,
            reason=reason,
            config=self._config.to_json(),
        )
        try:
            await self._store.save(checkpoint)
        except Exception as err:  # the round is done; the next save retries
            _log.exception("session %s: checkpoint of round %d failed", self._id, round_number)
            self._metrics.checkpoint_failed(self._id, err)
