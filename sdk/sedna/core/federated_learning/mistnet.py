"""MistNet, edge side (upstream ``sedna.core.federated_learning.FederatedLearningV2``).

Upstream delegated MistNet to the Plato framework. Here it is native: the edge runs the first
``cut_layer`` layers of the model (the feature extractor), perturbs the features for local
differential privacy according to ``epsilon``, uploads them with their labels to the job's
aggregation worker (:class:`sedna.service.server.AggregationServerV2`) over
``SplitLearningService.UploadFeatures``, and pulls the model the cloud trained on them.

The model contract (an ``nn.Sequential``, or a module whose ``layers`` are applied in order)
is in :mod:`sedna.service.split_learning.torch_split`.

Perturbation (:func:`perturb_features`)
---------------------------------------
``"laplace"`` (default), the Laplace mechanism (Dwork, McSherry, Nissim & Smith, 2006) applied
per sample: each sample's flattened feature vector is first clipped to L1 norm ``clip_bound``
(``x * min(1, C / ||x||_1)``), so two samples' vectors differ by at most ``2C`` in L1 norm
(the sensitivity), then every coordinate gets independent ``Laplace(0, 2C / epsilon)`` noise.
Each uploaded vector is then ``epsilon``-locally differentially private with respect to the
sample it came from. The guarantee composes: ``R`` rounds of fresh noise on the same samples
cost ``R * epsilon`` (sequential composition), which is why MistNet jobs run few rounds and let
the cloud train many epochs per round. The clip bound must not be derived from the private
data; with clipping the noise scales with ``C``, so ``C`` only decides which vectors are
shrunk.

``"unary"``, as Plato's MistNet does: features are binarised (``x > 0``) and each bit is
reported through symmetric unary encoding / randomised response (Wang et al., "Locally
Differentially Private Protocols for Frequency Estimation", USENIX Security 2017), kept with
probability ``p = e^(eps/2) / (e^(eps/2) + 1)`` and flipped otherwise. The ``epsilon`` bound
then holds per pair of bits, not for the whole vector.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from sedna.common.config import BaseConfig, Context
from sedna.core.base import JobBase, K8sResourceKind, K8sResourceKindStatus
from sedna.service.aggregation_client import (
    DEFAULT_AGG_PORT,
    GlobalWeights,
    SessionClosedError,
    SessionNotFoundError,
    SessionSettings,
    WrongRoundError,
)
from sedna.service.split_learning.client import SplitLearningClient

__all__ = [
    "MECHANISMS",
    "FederatedLearningV2",
    "MistNetSettings",
    "clip_l1",
    "laplace_scale",
    "perturb_features",
    "unary_keep_probability",
]

Array = npt.NDArray[Any]

MECHANISMS: Final = ("laplace", "unary")
DEFAULT_CONNECT_TIMEOUT: Final = 300.0
DEFAULT_ROUND_WAIT_TIMEOUT: Final = 3600.0
DEFAULT_CALL_TIMEOUT: Final = 60.0
DEFAULT_UPLOAD_BYTES: Final = 4 << 20
"""Features per UploadFeatures call, about: small enough to retry cheaply."""
_TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"


# -------------------------------------------------------------------------- perturbation


def clip_l1(features: Array, bound: float) -> Array:
    """Scale each sample's feature vector (axis 0 indexes samples) to L1 norm <= ``bound``.

    Vectors already within the bound are returned unchanged.

    Raises
    ------
    ValueError
        ``bound`` is not a finite number > 0.
    """
    if not (math.isfinite(bound) and bound > 0):
        raise ValueError(f"clip_bound must be a finite number > 0, got {bound!r}")
    x = np.asarray(features, dtype=np.float64)
    flat = x.reshape(x.shape[0], -1)
    norms = np.abs(flat).sum(axis=1)
    scale = np.minimum(1.0, bound / np.maximum(norms, np.finfo(np.float64).tiny))
    clipped: Array = (flat * scale[:, None]).reshape(x.shape)
    return clipped


def laplace_scale(epsilon: float, clip_bound: float) -> float:
    """The Laplace noise scale ``b = 2 * clip_bound / epsilon`` (L1 sensitivity over epsilon)."""
    return 2.0 * clip_bound / epsilon


def unary_keep_probability(epsilon: float) -> float:
    """Symmetric unary encoding's ``p = e^(eps/2) / (e^(eps/2) + 1)`` (a bit is kept)."""
    half = min(epsilon / 2.0, 700.0)  # e^700 is near float64's limit; p is 1.0 long before
    return math.exp(half) / (math.exp(half) + 1.0)


def perturb_features(
    features: Array,
    epsilon: float,
    *,
    mechanism: str = "laplace",
    clip_bound: float = 1.0,
    rng: np.random.Generator | None = None,
) -> Array:
    """Perturb a batch of features for ``epsilon``-local differential privacy.

    Parameters
    ----------
    features
        ``(n, ...)``: one row per sample.
    epsilon
        The privacy budget, > 0; smaller is more private and noisier.
    mechanism
        ``"laplace"`` (L1 clipping + Laplace noise) or ``"unary"`` (binarise + randomised
        response, as Plato); see the module docstring.
    clip_bound
        The L1 bound ``C`` of the Laplace mechanism.
    rng
        The noise source (a fresh, OS-seeded generator by default: noise must not be
        reproducible by anyone else).

    Returns
    -------
    numpy.ndarray
        float32, the shape of ``features``.

    Raises
    ------
    ValueError
        Bad ``epsilon``, ``mechanism`` or ``clip_bound``, or features with NaN/Inf.
    """
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    x = np.asarray(features)
    if x.ndim < 1:
        raise ValueError("features need a sample axis")
    if not np.isfinite(x).all():
        raise ValueError("the features hold NaN or infinity before perturbation")
    rng = rng if rng is not None else np.random.default_rng()
    if mechanism == "laplace":
        clipped = clip_l1(x, clip_bound)
        noisy = clipped + rng.laplace(0.0, laplace_scale(epsilon, clip_bound), clipped.shape)
        return noisy.astype(np.float32)
    if mechanism == "unary":
        bits = x > 0
        keep = rng.random(bits.shape) < unary_keep_probability(epsilon)
        return np.where(keep, bits, ~bits).astype(np.float32)
    raise ValueError(f"mechanism must be one of {MECHANISMS}, got {mechanism!r}")


# -------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class MistNetSettings:
    """The split: where the model is cut and how features are perturbed."""

    cut_layer: int
    epsilon: float
    mechanism: str = "laplace"
    clip_bound: float = 1.0

    @classmethod
    def resolve(cls, aggregation: Any, **overrides: Any) -> MistNetSettings:
        """From a ``MistNet`` aggregation object (or a mapping of its parameters), else the
        ``cut_layer`` / ``epsilon`` / ``mechanism`` / ``clip_bound`` environment (upstream's
        example sets ``cut_layer`` and ``epsilon``); keyword overrides win.

        Raises
        ------
        ValueError
            No ``cut_layer``, or a bad value (named).
        """
        params: dict[str, Any] = {}
        if isinstance(aggregation, Mapping):
            params.update(aggregation)
        elif aggregation is not None:
            params.update(getattr(aggregation, "parameters", {}) or {})
            for name in ("cut_layer", "epsilon"):
                if hasattr(aggregation, name):
                    params[name] = getattr(aggregation, name)
        for name in ("cut_layer", "epsilon", "mechanism", "clip_bound"):
            if name not in params:
                value = Context.get_parameters(name, None)
                if value is not None:
                    params[name] = value
        params.update({k: v for k, v in overrides.items() if v is not None})
        if "cut_layer" not in params:
            raise ValueError(
                "MistNet needs cut_layer: pass aggregation=MistNet(cut_layer=...) or set the "
                "cut_layer environment variable"
            )
        try:
            cut_layer = int(params["cut_layer"])
        except (TypeError, ValueError):
            raise ValueError(f"cut_layer must be an integer, got {params['cut_layer']!r}") from None
        epsilon = float(params.get("epsilon", 100))
        mechanism = str(params.get("mechanism", "laplace")).lower()
        clip_bound = float(params.get("clip_bound", 1.0))
        if cut_layer < 0:
            raise ValueError(f"cut_layer must be >= 0, got {cut_layer}")
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")
        if mechanism not in MECHANISMS:
            raise ValueError(f"mechanism must be one of {MECHANISMS}, got {mechanism!r}")
        if not (math.isfinite(clip_bound) and clip_bound > 0):
            raise ValueError(f"clip_bound must be a finite number > 0, got {clip_bound!r}")
        return cls(cut_layer, epsilon, mechanism, clip_bound)


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


def _xy(data: Any) -> tuple[Array, Array]:
    """``(x, y)`` arrays of a ``(x, y)`` pair or an object with ``x`` and ``y``."""
    if isinstance(data, tuple) and len(data) == 2:
        x, y = data
    elif hasattr(data, "x") and hasattr(data, "y"):
        x, y = data.x, data.y
    else:
        raise TypeError(
            f"MistNet trains on (x, y) arrays or a data source with .x and .y, got "
            f"{type(data).__name__}"
        )
    xs, ys = np.asarray(x), np.asarray(y)
    if xs.ndim < 1 or len(xs) != len(ys) or len(xs) == 0:
        raise ValueError(
            f"x {xs.shape} and y {ys.shape} must hold the same number (> 0) of samples"
        )
    return xs, ys


# -------------------------------------------------------------------------- the job


class FederatedLearningV2(JobBase):
    """A MistNet training worker (upstream API; native, no Plato).

    Parameters
    ----------
    data
        Training data, ``(x, y)`` or an object with ``x`` and ``y`` (e.g. a
        ``BaseDataSource``); may instead be given to :meth:`train`.
    estimator
        The full torch model (:mod:`sedna.service.split_learning.torch_split` contract), or
        an object whose ``model`` is one (upstream); a class is instantiated.
    aggregation
        ``MistNet(cut_layer, epsilon)`` (:class:`sedna.algorithms.aggregation.MistNet`) or a
        mapping of its parameters; None: the ``cut_layer`` / ``epsilon`` environment.
    transmitter
        A transmitter object (upstream); default :meth:`get_transmitter_from_config`. Features
        travel over gRPC streams (``ws``); ``s3`` is refused by :meth:`train`.
    mechanism, clip_bound
        The perturbation (:func:`perturb_features`); else the ``mechanism`` /
        ``clip_bound`` environment, else ``"laplace"`` and 1.0.
    client
        Injected (tests); else a :class:`SplitLearningClient` to ``AGG_IP:AGG_PORT``.
    rng
        Noise source (tests); OS-seeded by default.

    Attributes
    ----------
    settings : MistNetSettings
        Cut layer, epsilon, mechanism, clip bound.
    model : torch.nn.Module
        The full model; after :meth:`train`, the cloud-trained one.
    last_result : GlobalWeights or None
        The last model pulled (round, metrics, exit).
    """

    def __init__(
        self,
        data: Any = None,
        estimator: Any = None,
        aggregation: Any = None,
        transmitter: Any = None,
        *,
        mechanism: str | None = None,
        clip_bound: float | None = None,
        client: SplitLearningClient | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__(estimator=None)
        self.job_kind = K8sResourceKind.FEDERATED_LEARNING_JOB
        from sedna.service.split_learning.torch_split import (  # noqa: PLC0415 - torch
            resolve_module,
            split_layers,
        )

        if estimator is None:
            raise ValueError("FederatedLearningV2 needs estimator= (the full torch model)")
        if isinstance(estimator, type):
            estimator = estimator()
        self.data = data
        self.aggregation = aggregation
        self.settings = MistNetSettings.resolve(
            aggregation, mechanism=mechanism, clip_bound=clip_bound
        )
        self.model = resolve_module(estimator)
        self.front, self.back = split_layers(self.model, self.settings.cut_layer)
        self.transmitter = (
            transmitter if transmitter is not None else self.get_transmitter_from_config()
        )
        self.agg_ip = str(self.get_parameters("AGG_IP", "127.0.0.1"))
        self.agg_port = int(self.get_parameters("AGG_PORT", DEFAULT_AGG_PORT))
        self.connect_timeout = _float_env("CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT)
        self.round_wait_timeout = _float_env("ROUND_WAIT_TIMEOUT", DEFAULT_ROUND_WAIT_TIMEOUT)
        self.session_id = f"{self.namespace}/{self.job_name}"
        self.client_id = self.worker_name
        self.client = client or SplitLearningClient(
            self.agg_ip, self.agg_port, timeout=DEFAULT_CALL_TIMEOUT
        )
        self._rng = rng if rng is not None else np.random.default_rng()
        self.last_result: GlobalWeights | None = None
        self.current_round = 0
        self._start_time = ""

    @classmethod
    def get_transmitter_from_config(cls) -> Any:
        """The transmitter ``TRANSMITTER`` names (upstream): ``WSTransmitter()`` for ``ws``
        (the default), ``S3Transmitter(...)`` for ``s3`` (endpoint and keys from
        ``S3_ENDPOINT_URL`` / ``ACCESS_KEY_ID`` / ``SECRET_ACCESS_KEY``, bucket from
        ``AGG_DATA_PATH``), from :mod:`sedna.algorithms.transmitter`; an SDK without that
        module gets a plain record with ``name``.

        Raises
        ------
        ValueError
            For another ``TRANSMITTER`` value (``TransmitterError``, a ``ValueError``, from
            :mod:`sedna.algorithms.transmitter`).
        """
        try:
            from sedna.algorithms import transmitter as module  # noqa: PLC0415 - optional
        except ImportError:  # an SDK without it: the same choice, as a plain record
            name = str(BaseConfig().transmitter or "ws").strip().lower()
            if name not in ("ws", "grpc", "s3"):
                raise ValueError(f"TRANSMITTER={name!r}: expected 'ws' or 's3'") from None
            return _Transmitter("s3" if name == "s3" else "ws")
        return module.get_transmitter_from_config()

    # ------------------------------------------------------------------ training

    def extract_features(self, x: Any, batch_size: int = 256) -> Array:
        """The front layers' output on ``x`` (no perturbation), float32, batch by batch."""
        import torch  # noqa: PLC0415

        self.front.eval()
        out: list[Array] = []
        inputs = np.asarray(x, dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(inputs[start : start + batch_size]))
                out.append(self.front(batch).cpu().numpy().astype(np.float32))
        return np.concatenate(out)

    def perturbed_features(self, x: Any) -> Array:
        """:meth:`extract_features`, then :func:`perturb_features` with this job's settings."""
        return perturb_features(
            self.extract_features(x),
            self.settings.epsilon,
            mechanism=self.settings.mechanism,
            clip_bound=self.settings.clip_bound,
            rng=self._rng,
        )

    def _set_model(self, result: GlobalWeights) -> None:
        from sedna.service.split_learning.torch_split import set_state_arrays  # noqa: PLC0415

        if result.weights:
            set_state_arrays(self.model, result.weights)
        self.last_result = result

    def _join(self, sample_count: int) -> None:
        self.client.join(
            self.session_id,
            self.client_id,
            sample_count,
            config=SessionSettings(
                aggregation="MistNet",
                aggregation_parameters={
                    "cut_layer": self.settings.cut_layer,
                    "epsilon": self.settings.epsilon,
                },
            ),
            timeout=self.connect_timeout,
        )

    def _upload(self, round_number: int, features: Array, labels: Array) -> int | None:
        """Upload the round's features in batches; the round to pull (None: re-joined)."""
        per_sample = max(1, int(features[:1].nbytes + labels[:1].nbytes))
        step = max(1, DEFAULT_UPLOAD_BYTES // per_sample)
        try:
            for start in range(0, len(features), step):
                self.client.upload(
                    round_number,
                    features[start : start + step],
                    labels[start : start + step],
                    cut_layer=self.settings.cut_layer,
                    epsilon=self.settings.epsilon,
                )
        except WrongRoundError as err:
            if err.current_round <= round_number:
                raise
            self.log.warning(
                "round %d closed without all of this edge's features; the session is at %d",
                round_number,
                err.current_round,
            )
            return err.current_round - 1
        except SessionClosedError:
            return 0
        except SessionNotFoundError:
            self.log.warning("the aggregation worker lost the session (restart?): re-joining")
            self._join(len(features))
            return None
        return round_number

    def _report(self, round_number: int, sample_count: int, status: str) -> None:
        if not os.environ.get("LC_SERVER"):
            # Run by hand (no LocalController set LC_SERVER): nobody to report to, and a
            # report to the default address would only log connection errors.
            return
        self.report_task_info(
            task_info={
                "currentRound": round_number,
                "sampleCount": sample_count,
                "startTime": self._start_time,
                "updateTime": time.strftime(_TIME_FORMAT, time.localtime()),
            },
            status=status,
            kind="train",
        )

    def train(  # upstream's signature: train()
        self, train_data: Any = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Run MistNet rounds until the aggregation worker says the job is done.

        Joins the session declaring the number of samples, loads the cloud's current model
        (so every edge runs the same feature extractor), then per round: computes the front
        layers' features, perturbs them (fresh noise each round), uploads them with the labels
        and waits for the model the cloud trained, which it loads. Reports each round to the
        LC (``kind="train"``), leaves the session, and saves the model to ``MODEL_URL`` when
        set.

        Parameters
        ----------
        train_data
            ``(x, y)`` or an object with ``x`` and ``y``; the constructor's ``data`` by
            default.
        **kwargs
            ``round_wait_timeout`` (seconds a pull waits; else ``ROUND_WAIT_TIMEOUT``).

        Returns
        -------
        dict
            ``{"round": last round, "metrics": the cloud's metrics of it}``.

        Raises
        ------
        NotImplementedError
            ``TRANSMITTER=s3``: features travel over gRPC only.
        AggregationClientError
            The aggregation worker refused or could not be reached (a subclass naming it).
        """
        if (
            getattr(self.transmitter, "by_reference", False)
            or getattr(self.transmitter, "name", "") == "s3"
        ):
            raise NotImplementedError(
                "MistNet features travel over gRPC streams here: use TRANSMITTER=ws"
            )
        x, y = _xy(train_data if train_data is not None else self.data)
        wait = float(kwargs.pop("round_wait_timeout", self.round_wait_timeout))
        sample_count = len(x)
        self._start_time = time.strftime(_TIME_FORMAT, time.localtime())
        self._join(sample_count)
        try:
            result = self.client.pull(0, wait)
            self._set_model(result)
            round_number = result.round + 1
            while not result.exit:
                self.current_round = round_number
                features = self.perturbed_features(x)
                pulled = self._upload(round_number, features, y)
                if pulled is None:
                    continue
                result = self.client.pull(pulled, wait)
                self._set_model(result)
                self._report(
                    result.round,
                    sample_count,
                    K8sResourceKindStatus.COMPLETED
                    if result.exit
                    else K8sResourceKindStatus.RUNNING,
                )
                self.log.info(
                    "round %d trained in the cloud (%d samples, %d participants)%s",
                    result.round,
                    result.total_samples,
                    len(result.participants),
                    ": done" if result.exit else "",
                )
                round_number = result.round + 1
        finally:
            try:
                self.client.leave(timeout=5.0)
            except Exception as err:
                self.log.warning("could not leave the session: %s", err)
        self._save()
        return {"round": result.round, "metrics": dict(result.metrics)}

    def _save(self) -> None:
        if not self.config.model_url:
            return
        import torch  # noqa: PLC0415

        try:
            torch.save(self.model.state_dict(), self.model_path)
        except Exception:
            self.log.exception("could not save the model to %s", self.model_path)

    def close(self) -> None:
        """Close the connection to the aggregation worker and stop background threads."""
        super().close()
        self.client.close()


@dataclass(frozen=True, slots=True)
class _Transmitter:
    """Stand-in for ``sedna.algorithms.transmitter`` objects when that module is absent."""

    name: str
    by_reference: bool = False
