"""Federated learning, trainer side (upstream ``sedna.core.federated_learning.FederatedLearning``).

Each training worker runs :meth:`FederatedLearning.train`: it joins the job's session on the
aggregation server (``sedna-aggregator``), then per round sets the global weights, trains
locally, pushes its weights and pulls the aggregate, until the server says the job is done.
Weights travel as chunked typed tensors over gRPC
(:class:`~sedna.service.aggregation_client.AggregationClient`), not as JSON lists over a
websocket as upstream.

A restart of the aggregator (restored from its checkpoint: the round after the last
aggregated one, no clients, no updates) is ridden out: a call refused because the server
does not know the session or this client, or a lost connection (a push cut mid-stream, a
pull waiting for its round), makes the trainer re-join (waiting up to ``CONNECT_TIMEOUT``
for the server) and carry on with the same round: it pushes the same update again when the
session is at that round (a "duplicate" answer, once the server's status shows the update
counted, is success), pulls when the round is already aggregated, and trains the session's
round again when a checkpoint older than this trainer's round was restored. A push refused
because the round is not open yet (the restored session waits for the other trainers to
re-join) is retried for up to ``ROUND_WAIT_TIMEOUT``.

Environment (set by the controller):

======================  ==============================================================
``AGG_IP``, ``AGG_PORT``  the aggregation server (default ``127.0.0.1``, ``7363``)
``NAMESPACE``,            the session id is ``<NAMESPACE>/<JOB_NAME>``; the client id is
``JOB_NAME``,             ``WORKER_NAME``
``WORKER_NAME``
``TRANSMITTER``           ``ws`` (upstream's name; here: gRPC streaming, the default) or
                          ``s3``: weights as safetensors objects under ``AGG_DATA_PATH``
                          (``s3://bucket/prefix``, required) through ``S3_ENDPOINT_URL``
                          with ``ACCESS_KEY_ID``/``SECRET_ACCESS_KEY``; only their URIs
                          go through the aggregation calls
``CONNECT_TIMEOUT``       seconds :meth:`~FederatedLearning.register`, the first join and
                          every re-join keep trying to reach the server (default 300)
``ROUND_WAIT_TIMEOUT``    seconds one pull waits for a round's aggregate, and a push for
                          its round to open (default 3600; ours)
``MODEL_URL``             where the final model is saved, when set
``LC_SERVER``             where the per-round reports go
======================  ==============================================================
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from sedna.algorithms.transmitter import S3Transmitter, TransmitterError
from sedna.backend import BackendBase
from sedna.common.config import BaseConfig, Context
from sedna.core.base import JobBase, K8sResourceKind, K8sResourceKindStatus, resolve_post_process
from sedna.service.aggregation_client import (
    DEFAULT_AGG_PORT,
    AggregationClient,
    AggregationClientError,
    AggregatorUnavailableError,
    DuplicateUpdateError,
    GlobalWeights,
    JoinResult,
    NotJoinedError,
    NotSelectedError,
    RoundNotOpenError,
    SessionClosedError,
    SessionFailedError,
    SessionNotFoundError,
    SessionSettings,
    WrongRoundError,
)

__all__ = ["DEFAULT_ROUND_WAIT_TIMEOUT", "FederatedLearning", "sample_count_of"]

DEFAULT_CONNECT_TIMEOUT: Final = 300.0
DEFAULT_ROUND_WAIT_TIMEOUT: Final = 3600.0
DEFAULT_CALL_TIMEOUT: Final = 60.0
TRANSMITTERS: Final = {"ws": "grpc", "grpc": "grpc", "s3": "s3"}
"""``TRANSMITTER`` value → the transport used (upstream's ``ws`` is our gRPC streaming)."""
_TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
_FINAL_STATES: Final = frozenset({"COMPLETED", "FAILED"})
_INITIAL_BACKOFF: Final = 0.1
_MAX_BACKOFF: Final = 2.0
"""Seconds between pushes refused as too early (the round is not open yet)."""


def sample_count_of(train_data: Any) -> int:
    """The number of training samples of ``train_data`` (the FedAvg weight).

    ``len(x)`` for an ``(x, y)`` tuple, ``len(loader.dataset)`` for a torch ``DataLoader``,
    else ``len(train_data)`` (upstream; a ``BaseDataSource`` counts its samples).

    Raises
    ------
    TypeError
        If the count cannot be found: pass ``sample_count=`` to ``train``.
    """
    if isinstance(train_data, tuple) and len(train_data) == 2:
        x, y = train_data
        if hasattr(x, "__len__") and hasattr(y, "__len__") and len(x) == len(y):
            return len(x)
    dataset = getattr(train_data, "dataset", None)
    if dataset is not None and hasattr(dataset, "__len__"):
        return len(dataset)
    try:
        return len(train_data)
    except TypeError:
        raise TypeError(
            f"cannot count the samples of a {type(train_data).__name__}: pass "
            "train(..., sample_count=N)"
        ) from None


def _float_env(name: str, default: float) -> float:
    raw = Context.get_parameters(name, None)
    if raw is None:
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={raw!r} is not a number of seconds") from None
    if not value > 0:
        raise ValueError(f"{name}={raw!r} must be > 0")
    return value


def _metrics(result: Any) -> dict[str, float]:
    """The finite numbers of a training result that is a mapping (else none)."""
    if not isinstance(result, Mapping):
        return {}
    out: dict[str, float] = {}
    for key, value in result.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[str(key)] = number
    return out


def _is_bare_torch_module(backend: BackendBase) -> bool:
    """Whether the estimator is an ``nn.Module`` with no ``fit``/own ``train`` of its own."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    estimator = backend.estimator
    if not isinstance(estimator, torch.nn.Module):
        return False
    own_train = getattr(type(estimator), "train", None) is not torch.nn.Module.train
    return not callable(getattr(estimator, "fit", None)) and not own_train


class FederatedLearning(JobBase):
    """A federated-learning training worker (upstream API).

    Parameters
    ----------
    estimator : class, factory or instance
        The local model, wrapped by :func:`~sedna.backend.set_backend` (``BACKEND_TYPE``). It
        needs ``get_weights()``/``set_weights(weights)`` (a list of arrays; the torch and
        Keras backends provide them) and ``train(train_data, valid_data=None, **kwargs)`` or
        ``fit``, except a bare torch ``nn.Module``, which the built-in loop trains
        (:func:`~sedna.core.federated_learning.train_torch_module`).
    aggregation : str, default "FedAvg"
        The algorithm the job is expected to use. The server's session decides (it is
        configured on the aggregation worker); a mismatch is logged. Upstream put it in the
        websocket URL.
    config : Mapping, optional
        As :class:`~sedna.core.base.JobBase`.
    session_config : Mapping or SessionSettings, optional
        Sent with the join (ours): the first join creates the session with it, a later join
        with a different one fails. None (default): the server's settings.
    client : AggregationClient, optional
        Injected (tests); else one to ``AGG_IP:AGG_PORT``, with an
        :class:`~sedna.algorithms.transmitter.S3Transmitter` when ``TRANSMITTER=s3``.

    Raises
    ------
    TransmitterError
        ``TRANSMITTER=s3`` without a usable ``AGG_DATA_PATH`` (the message names it).

    Attributes
    ----------
    proximal_mu : float
        FedProx's coefficient for this job (the session's ``proximal_mu``, or ``train``'s
        ``proximal_mu`` keyword); set when :meth:`train` joins.
    global_weights : list of ndarray or None
        The weights of the round being trained (None in round 1: each client starts from its
        own initialisation, as upstream).
    current_round : int
        The round being trained (0 before :meth:`train`).
    """

    def __init__(
        self,
        estimator: Any,
        aggregation: str = "FedAvg",
        config: Mapping[str, Any] | None = None,
        *,
        session_config: Mapping[str, Any] | SessionSettings | None = None,
        client: AggregationClient | None = None,
    ) -> None:
        super().__init__(estimator=estimator, config=config)
        self.job_kind = K8sResourceKind.FEDERATED_LEARNING_JOB
        self.aggregation = aggregation
        self.transmitter = self.get_transmitter_from_config()
        s3 = self._s3_transmitter() if self.transmitter == "s3" and client is None else None
        self.agg_ip = str(self.get_parameters("AGG_IP", "127.0.0.1"))
        self.agg_port = int(self.get_parameters("AGG_PORT", DEFAULT_AGG_PORT))
        self.connect_timeout = _float_env("CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT)
        self.round_wait_timeout = _float_env("ROUND_WAIT_TIMEOUT", DEFAULT_ROUND_WAIT_TIMEOUT)
        self.session_id = f"{self.namespace}/{self.job_name}"
        self.client_id = self.worker_name
        self.session_config = session_config
        self.client = client or AggregationClient(
            self.agg_ip, self.agg_port, timeout=DEFAULT_CALL_TIMEOUT, transmitter=s3
        )
        self.proximal_mu = 0.0
        self.global_weights: list[np.ndarray[Any, Any]] | None = None
        self.current_round = 0
        self.joined: JoinResult | None = None
        self._start_time = ""
        self._torch_optimizer: Any = None

    @classmethod
    def get_transmitter_from_config(cls) -> str:
        """The transport named by ``TRANSMITTER``: ``"grpc"`` for ``ws`` (the default) or
        ``grpc``, ``"s3"`` for ``s3``. Upstream returned a transmitter object.

        Raises
        ------
        ValueError
            For another value.
        """
        name = str(BaseConfig().transmitter or "ws").strip().lower()
        if name not in TRANSMITTERS:
            raise ValueError(f"TRANSMITTER={name!r}: expected one of {sorted(TRANSMITTERS)}")
        return TRANSMITTERS[name]

    @staticmethod
    def _s3_transmitter() -> S3Transmitter:
        """The S3 transmitter of ``TRANSMITTER=s3`` from ``AGG_DATA_PATH`` and the S3 env."""
        config = BaseConfig()
        path = str(config.agg_data_path or "").strip()
        if not path.startswith("s3://"):
            shown = "not set" if path in {"", "./"} else f"{path!r}, not an s3:// URI"
            raise TransmitterError(
                f"TRANSMITTER=s3 needs AGG_DATA_PATH=s3://bucket/prefix (where the job's weights "
                f"go; the job's spec.transmitter.s3.aggDataPath): it is {shown}"
            )
        return S3Transmitter.from_env(
            {
                "AGG_DATA_PATH": path,
                "S3_ENDPOINT_URL": str(config.s3_endpoint_url or ""),
                "ACCESS_KEY_ID": str(config.access_key_id or ""),
                "SECRET_ACCESS_KEY": str(config.secret_access_key or ""),
            }
        )

    def register(self, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> JoinResult:
        """Join the session, trying for up to ``timeout`` seconds (upstream: deprecated; the
        client subscribes by itself). :meth:`train` joins anyway.

        Raises
        ------
        AggregatorUnavailableError
            No aggregation server answered in time.
        """
        return self._join(0, timeout)

    def _join(self, sample_count: int, timeout: float) -> JoinResult:
        joined = self.client.join(
            self.session_id,
            self.client_id,
            sample_count,
            config=self.session_config,
            timeout=timeout,
        )
        self.joined = joined
        if joined.config.aggregation and joined.config.aggregation != self.aggregation:
            self.log.warning(
                "the session %s aggregates with %s, not %s as this trainer was told",
                self.session_id,
                joined.config.aggregation,
                self.aggregation,
            )
        return joined

    # ------------------------------------------------------------------ training

    def _set_global(self, result: GlobalWeights) -> None:
        estimator = self._require_estimator()
        if result.weights:
            estimator.set_weights(result.weights)
            self.global_weights = result.weights

    def _train_locally(self, train_data: Any, valid_data: Any, kwargs: dict[str, Any]) -> Any:
        estimator = self._require_estimator()
        if _is_bare_torch_module(estimator):
            from sedna.core.federated_learning.proximal import (  # noqa: PLC0415
                train_torch_module,
            )

            if self._torch_optimizer is None and "optimizer" in kwargs:
                self._torch_optimizer = kwargs["optimizer"]
            return train_torch_module(
                estimator.estimator,
                train_data,
                epochs=int(kwargs.get("epochs", 1)),
                batch_size=int(kwargs.get("batch_size", 32)),
                learning_rate=float(kwargs.get("learning_rate", 0.01)),
                momentum=float(kwargs.get("momentum", 0.0)),
                loss_fn=kwargs.get("loss_fn"),
                optimizer=self._torch_optimizer,
                proximal_mu=self.proximal_mu,
                global_weights=self.global_weights,
            )
        extra = dict(kwargs)
        method = getattr(estimator.instantiate(), "fit", None) or getattr(
            estimator.estimator, "train", None
        )
        if callable(method):
            names = BackendBase.parse_kwargs(method, proximal_mu=0, global_weights=None)
            # Only an estimator that names them explicitly gets them (not via **kwargs).
            import inspect  # noqa: PLC0415

            try:
                declared = set(inspect.signature(method).parameters)
            except (TypeError, ValueError):
                declared = set()
            if "proximal_mu" in names and "proximal_mu" in declared:
                extra["proximal_mu"] = self.proximal_mu
            if "global_weights" in names and "global_weights" in declared:
                extra["global_weights"] = self.global_weights
        return estimator.train(train_data, valid_data, **extra)

    def _options(
        self, train_data: Any, kwargs: dict[str, Any]
    ) -> tuple[int, int | None, float | None, float]:
        """Take train()'s own keywords out of ``kwargs``."""
        sample_count = kwargs.pop("sample_count", None)
        if sample_count is None:
            sample_count = sample_count_of(train_data)
        if int(sample_count) <= 0:
            raise ValueError(f"the sample count must be > 0, not {sample_count}")
        exit_round = kwargs.pop("exit_round", None)
        mu = kwargs.pop("proximal_mu", None)
        wait = float(kwargs.pop("round_wait_timeout", self.round_wait_timeout))
        return (
            int(sample_count),
            None if exit_round is None else int(exit_round),
            None if mu is None else float(mu),
            wait,
        )

    def _rejoin(self, sample_count: int, why: object) -> JoinResult:
        """Join again (waiting up to ``CONNECT_TIMEOUT`` for the server): after a restart the
        server knows neither this client nor the update it pushed before."""
        self.log.warning("re-joining session %s: %s", self.session_id, why)
        joined = self._join(sample_count, self.connect_timeout)
        self.log.info(
            "re-joined session %s: %s at round %d",
            self.session_id,
            joined.state,
            joined.current_round,
        )
        return joined

    def _update_counted(self, round_number: int) -> bool:
        """Whether the server counted this client's update of ``round_number`` (or closed
        the round): a duplicate answer may also mean an earlier, broken attempt is still
        being received and may yet be backed out."""
        try:
            status = self.client.status(timeout=DEFAULT_CALL_TIMEOUT)
        except AggregationClientError as err:
            # Unconfirmed: the push is tried again, and its answer says what happened.
            self.log.info("round %d: could not read the session's status: %s", round_number, err)
            return False
        if status.state in _FINAL_STATES or status.current_round > round_number:
            return True
        return any(
            c.client_id == self.client_id and c.last_round >= round_number for c in status.clients
        )

    def _push(
        self,
        round_number: int,
        weights: list[np.ndarray[Any, Any]],
        sample_count: int,
        metrics: dict[str, float],
        wait: float,
    ) -> int:
        """Push this round's update until the server has it, riding out a restart.

        Returns ``round_number`` once the update counted (or the trainer was not selected,
        or the round closed without it, or the session ended: its aggregate comes next), or
        the earlier round the session is at (an aggregator restored from an older
        checkpoint, or without one): that round is to be trained again.
        """
        deadline = time.monotonic() + wait
        backoff = _INITIAL_BACKOFF
        while True:
            try:
                self.client.push(round_number, weights, sample_count, metrics)
                return round_number
            except NotSelectedError:
                self.log.info("not selected for round %d; waiting for its aggregate", round_number)
                return round_number
            except SessionClosedError:
                return round_number  # its last aggregate (exit) or failure comes with the pull
            except WrongRoundError as err:
                if err.current_round > round_number:
                    self.log.warning(
                        "round %d closed without this trainer's update; the session is at round %d",
                        round_number,
                        err.current_round,
                    )
                    return round_number
                if err.current_round < 1:
                    raise
                return self._resync(err.current_round)
            except DuplicateUpdateError as err:
                if self._update_counted(round_number):
                    self.log.info("round %d: the server already has this update", round_number)
                    return round_number
                # An earlier attempt is still being received: it counts or is backed out.
                if time.monotonic() + backoff > deadline:
                    raise
                self.log.info("round %d: %s; asking again", round_number, err)
            except RoundNotOpenError as err:
                # E.g. a restored session waiting for the other trainers to re-join: they
                # are, so this waits for the round (ROUND_WAIT_TIMEOUT), not one call's time.
                if time.monotonic() + backoff > deadline:
                    raise
                self.log.info("round %d: %s; waiting", round_number, err)
            except (NotJoinedError, SessionNotFoundError, AggregatorUnavailableError) as err:
                joined = self._rejoin(sample_count, err)
                if joined.state in _FINAL_STATES or joined.current_round > round_number:
                    return round_number
                if joined.current_round < round_number:
                    return self._resync(joined.current_round)
                continue  # the same round again: a duplicate answer says it counted
            time.sleep(backoff)
            backoff = min(2 * backoff, _MAX_BACKOFF)

    def _resync(self, current_round: int) -> int:
        self.log.warning(
            "the session is back at round %d (an aggregator restored from an older "
            "checkpoint, or from none): training it again",
            current_round,
        )
        return max(current_round, 1)

    def _pull(
        self,
        round_number: int,
        wait: float,
        sample_count: int,
        update: tuple[list[np.ndarray[Any, Any]], dict[str, float]] | None,
    ) -> GlobalWeights | int:
        """The aggregate of ``round_number`` (or a later one), riding out a restart.

        A lost connection or a server that forgot the session or this client means a
        restart: re-join, and push ``update`` (this round's weights and metrics) again when
        the session is back at this round (a restored server lost it; a duplicate answer
        says it did not). Returns an earlier round to train again, as :meth:`_push`.
        """
        while True:
            try:
                return self.client.pull(round_number, wait, retry_unavailable=False)
            except (NotJoinedError, SessionNotFoundError, AggregatorUnavailableError) as err:
                joined = self._rejoin(sample_count, err)
            if joined.state in _FINAL_STATES:
                continue  # its last aggregate (exit) or its failure
            if update is None:
                # Waiting for a round this trainer has no update of: if the session is not
                # past it (an older checkpoint), the round is to be trained, not waited for.
                if round_number <= 0 or joined.current_round <= round_number:
                    return self._resync(joined.current_round)
                continue
            if joined.current_round > round_number:
                continue
            weights, metrics = update
            pushed = self._push(round_number, weights, sample_count, metrics, wait)
            if pushed != round_number:
                return pushed

    def _resume(
        self, joined: JoinResult, sample_count: int, wait: float
    ) -> tuple[GlobalWeights | None, int]:
        """The latest aggregate (None before round 1's) and the round to train first."""
        if joined.state == "COMPLETED":
            last = self._pull(0, wait, sample_count, None)
            if isinstance(last, GlobalWeights):
                self._set_global(last)
                return last, last.round + 1
            return self._catch_up(last, sample_count, wait)
        # Resuming (restart of this trainer or of the aggregator): start from the latest.
        return self._catch_up(max(joined.current_round, 1), sample_count, wait)

    def _catch_up(
        self, round_number: int, sample_count: int, wait: float
    ) -> tuple[GlobalWeights | None, int]:
        """Set the aggregate of the round before ``round_number`` (the session's round) as
        the global weights; that aggregate (None for round 1) and the round to train."""
        while round_number > 1:
            got = self._pull(round_number - 1, wait, sample_count, None)
            if isinstance(got, GlobalWeights):
                self._set_global(got)
                return got, got.round + 1
            round_number = got  # the session went back further still
        return None, 1

    def _report(self, round_number: int, sample_count: int, status: str, results: Any) -> None:
        self.report_task_info(
            task_info={
                "currentRound": round_number,
                "sampleCount": sample_count,
                "startTime": self._start_time,
                "updateTime": time.strftime(_TIME_FORMAT, time.localtime()),
            },
            status=status,
            results=results,
            kind="train",
        )

    def train(  # type: ignore[override] # upstream's signature
        self, train_data: Any, valid_data: Any = None, post_process: Any = None, **kwargs: Any
    ) -> Any:
        """Run the federated rounds until the server ends the job (upstream's loop).

        Per round: set the global weights (round 1: the local initial weights), train locally
        (``estimator.train(train_data, valid_data, **kwargs)``, or the built-in torch loop),
        push ``get_weights()`` with the sample count and the training metrics (a training
        result that is a mapping of numbers), pull the aggregate, set it, and report
        ``{currentRound, sampleCount, startTime, updateTime}`` to the LC (``kind="train"``,
        status ``running``, ``completed`` at the end). Ends on the server's exit flag, or
        after ``exit_round`` rounds when that keyword is given. Then leaves the session and
        saves the model to ``MODEL_URL`` when it is set.

        Parameters
        ----------
        train_data, valid_data
            Passed to the estimator's training.
        post_process : callable or str, optional
            Applied to the last local training result (see ``resolve_post_process``).
        **kwargs
            Passed to the estimator's training, except these (ours): ``sample_count`` (the
            FedAvg weight; default :func:`sample_count_of`), ``exit_round`` (stop after this
            round at the latest), ``proximal_mu`` (overrides the session's FedProx
            coefficient), ``round_wait_timeout`` (seconds a pull waits). The built-in torch
            loop reads ``epochs``, ``batch_size``, ``learning_rate``, ``momentum``,
            ``loss_fn``, ``optimizer``.

        Returns
        -------
        Any
            The last local training result, after ``post_process``.

        Raises
        ------
        AggregatorUnavailableError
            No server within ``CONNECT_TIMEOUT`` (at the start, or when re-joining after a
            lost connection).
        SessionFailedError
            The session failed (reported to the LC as ``failed`` first).
        PullTimeoutError
            A round was not aggregated within ``round_wait_timeout``.
        RoundNotOpenError
            A round did not open within ``round_wait_timeout``.
        """
        callback = resolve_post_process(post_process)
        sample_count, exit_round, mu_override, wait = self._options(train_data, kwargs)
        self._start_time = time.strftime(_TIME_FORMAT, time.localtime())

        joined = self._join(sample_count, self.connect_timeout)
        self.proximal_mu = float(
            mu_override if mu_override is not None else joined.config.proximal_mu
        )
        if not math.isfinite(self.proximal_mu) or self.proximal_mu < 0:
            raise ValueError(f"proximal_mu must be a finite number >= 0, not {self.proximal_mu}")
        result, round_number = self._resume(joined, sample_count, wait)
        res: Any = None
        try:
            while result is None or not result.exit:
                if exit_round is not None and round_number > exit_round:
                    break
                self.current_round = round_number
                res = self._train_locally(train_data, valid_data, kwargs)
                metrics = _metrics(res)
                # Kept as pushed: after a restart the same update is pushed again.
                weights = [np.asarray(w) for w in self._require_estimator().get_weights()]
                pushed = self._push(round_number, weights, sample_count, metrics, wait)
                if pushed != round_number:
                    result, round_number = self._catch_up(pushed, sample_count, wait)
                    continue
                pulled = self._pull(round_number, wait, sample_count, (weights, metrics))
                if not isinstance(pulled, GlobalWeights):
                    result, round_number = self._catch_up(pulled, sample_count, wait)
                    continue
                result = pulled
                self._set_global(result)
                done = result.exit or (exit_round is not None and result.round >= exit_round)
                self._report(
                    result.round,
                    sample_count,
                    K8sResourceKindStatus.COMPLETED if done else K8sResourceKindStatus.RUNNING,
                    None,
                )
                self.log.info(
                    "round %d aggregated (%d samples, %d participants)%s",
                    result.round,
                    result.total_samples,
                    len(result.participants),
                    ": done" if done else "",
                )
                if done:
                    break
                round_number = result.round + 1
        except SessionFailedError:
            self._report(self.current_round, sample_count, K8sResourceKindStatus.FAILED, None)
            raise
        finally:
            try:
                self.client.leave(timeout=5.0)
            except Exception as err:
                self.log.warning("could not leave the session: %s", err)
        self._save(sample_count, result)
        return callback(res) if callback else res

    def _save(self, sample_count: int, result: GlobalWeights | None) -> None:
        if not self.config.model_url:
            return
        estimator = self._require_estimator()
        try:
            saved = estimator.save(model_url=self.model_path)
        except Exception:
            self.log.exception("could not save the model to %s", self.model_path)
            return
        round_number = result.round if result is not None else self.current_round
        metrics = dict(result.metrics) if result is not None else {}
        self._report(
            round_number,
            sample_count,
            K8sResourceKindStatus.COMPLETED,
            estimator.model_info(saved, result=metrics),
        )

    def close(self) -> None:
        """Close the connection to the aggregator and stop background threads."""
        super().close()
        self.client.close()
