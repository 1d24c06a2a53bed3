"""Joint inference, edge side (upstream ``sedna.core.joint_inference.JointInference``).

The little model answers at the edge; hard examples, chosen by a hard example mining (HEM)
rule, are offloaded to the big model in the cloud over the Open Inference Protocol (gRPC,
:class:`~sedna.service.oip_client.InferenceClient`). When the cloud cannot answer within
``CLOUD_INFERENCE_TIMEOUT`` seconds, or answers with an error, the edge result is returned
instead and the fallback is counted.

Environment (set by the controller):

==========================  ==========================================================
``BIG_MODEL_IP``            cloud host (default ``127.0.0.1``)
``BIG_MODEL_PORT``          cloud port (default ``5000``)
``BIG_MODEL_NAME``          the cloud model's name (default ``SERVICE_NAME``, then
                            ``JOB_NAME``; ours)
``CLOUD_INFERENCE_TIMEOUT`` deadline of one cloud call in seconds (default 5; ours)
``MINING_MODE``             ``inference-then-mining`` (default) or
                            ``mining-then-inference``
``HEM_NAME``,               the HEM rule when ``hard_example_mining`` is not given
``HEM_PARAMETERS``
``LC_SERVER``, ``LC_PERIOD`` where and how often (seconds, default 30) the counters are
                            reported
==========================  ==========================================================
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from prometheus_client import Counter

from sedna.algorithms.hard_example_mining import build_hem_filter
from sedna.backend import BackendBase
from sedna.common.file_ops import FileOps
from sedna.core.base import JobBase, K8sResourceKind, ModelLoadingThread, resolve_post_process
from sedna.service.client import DEFAULT_LC_PERIOD, LCReporter
from sedna.service.oip_client import CloudInferenceError, CloudUnavailableError, InferenceClient

__all__ = [
    "DEFAULT_BIG_MODEL_PORT",
    "DEFAULT_CLOUD_INFERENCE_TIMEOUT",
    "INFERENCE_THEN_MINING",
    "MINING_MODES",
    "MINING_THEN_INFERENCE",
    "CloudModel",
    "JointInference",
    "JointInferenceReporter",
]

_log = logging.getLogger(__name__)

INFERENCE_THEN_MINING: Final = "inference-then-mining"
MINING_THEN_INFERENCE: Final = "mining-then-inference"
MINING_MODES: Final = (INFERENCE_THEN_MINING, MINING_THEN_INFERENCE)
DEFAULT_BIG_MODEL_IP: Final = "127.0.0.1"
DEFAULT_BIG_MODEL_PORT: Final = 5000
DEFAULT_CLOUD_INFERENCE_TIMEOUT: Final = 5.0
_TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"

INFERENCES = Counter(
    "sedna_joint_inference_inferences",
    "Joint inference calls, by who produced the final result (edge or cloud).",
    ["answered_by"],
)
HARD_EXAMPLES = Counter(
    "sedna_joint_inference_hard_examples",
    "Samples the hard example mining rule judged hard (offloaded to the cloud).",
)
CLOUD_FALLBACKS = Counter(
    "sedna_joint_inference_cloud_fallbacks",
    "Hard examples answered at the edge because the cloud failed: reason is 'unavailable' "
    "(unreachable, UNAVAILABLE or past CLOUD_INFERENCE_TIMEOUT) or 'error' (any other error).",
    ["reason"],
)


class CloudModel(Protocol):
    """What :class:`JointInference` needs from the cloud client."""

    def infer(self, data: Any) -> Any:
        """The big model's result for ``data``."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class JointInferenceReporter(LCReporter):
    """:class:`~sedna.service.client.LCReporter` that also reports ``cloudFallbackNumber``.

    ``ownerInfo`` is ``{startTime, updateTime, inferenceNumber, hardExampleNumber,
    uploadCloudRatio, cloudFallbackNumber}``; the last one is ours.
    """

    def __init__(
        self, lc_server: str, message: dict[str, Any], period_interval: float = DEFAULT_LC_PERIOD
    ) -> None:
        super().__init__(lc_server, message, period_interval)
        self.cloud_fallback_number = 0

    def update_for_cloud_fallback(self) -> None:
        """Count one hard example answered at the edge because the cloud failed."""
        with self.lock:
            self.cloud_fallback_number += 1

    def extra_owner_info(self) -> dict[str, Any]:
        """Add ``cloudFallbackNumber`` to ``ownerInfo``.

        Returns
        -------
        dict
            ``{"cloudFallbackNumber": n}``.
        """
        return {"cloudFallbackNumber": self.cloud_fallback_number}


def _positive_float(raw: Any, name: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of seconds > 0, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"{name} must be a number of seconds > 0, got {raw!r}")
    return value


def _port(raw: Any, name: str) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ValueError(f"{name} must be a port number, got {raw!r}") from None
    if not 0 < value < 65536:
        raise ValueError(f"{name} must be a port number (1-65535), got {raw!r}")
    return value


class JointInference(JobBase):
    """Edge-cloud joint inference (upstream ``JointInference``).

    Parameters
    ----------
    estimator : class, factory or instance, optional
        The little model, wrapped by the backend ``BACKEND_TYPE`` names. It may be None with
        ``BACKEND_TYPE=ONNX``: the backend then runs the ``.onnx`` ``MODEL_URL`` itself.
    hard_example_mining : dict, optional
        ``{"method": <HEM alias>, "param": {...}}``; when None or empty it comes from
        ``HEM_NAME`` / ``HEM_PARAMETERS`` (see :meth:`get_hem_algorithm_from_config`). No
        rule at all means no sample is hard.
    cloud : CloudModel, optional
        The cloud client (ours, for tests and custom transports); by default an
        :class:`~sedna.service.oip_client.InferenceClient` to
        ``BIG_MODEL_IP:BIG_MODEL_PORT``, model ``BIG_MODEL_NAME``, deadline
        ``CLOUD_INFERENCE_TIMEOUT``.

    Raises
    ------
    FileExistsError
        If ``MODEL_URL`` names a local model that does not exist (upstream's error type).
    FileNotFoundError
        If a remote model cannot be downloaded.
    ValueError
        For a missing estimator, an unknown ``MINING_MODE``, a bad ``BIG_MODEL_PORT``,
        ``CLOUD_INFERENCE_TIMEOUT`` or ``LC_PERIOD``, or an invalid HEM configuration.

    Examples
    --------
    >>> ji = JointInference(  # doctest: +SKIP
    ...     estimator=Estimator,
    ...     hard_example_mining={"method": "IBT", "param": {"threshold_img": 0.9}},
    ... )
    >>> is_hard, result, edge_result, cloud_result = ji.inference(image)  # doctest: +SKIP
    """

    def __init__(
        self,
        estimator: Any = None,
        hard_example_mining: Mapping[str, Any] | None = None,
        *,
        cloud: CloudModel | None = None,
    ) -> None:
        super().__init__(estimator=estimator)
        self.job_kind = K8sResourceKind.JOINT_INFERENCE_SERVICE
        self.remote_ip = str(self.get_parameters("BIG_MODEL_IP", DEFAULT_BIG_MODEL_IP))
        self.port = _port(
            self.get_parameters("BIG_MODEL_PORT", DEFAULT_BIG_MODEL_PORT), "BIG_MODEL_PORT"
        )
        self.big_model_name = str(
            self.get_parameters("BIG_MODEL_NAME")
            or self.config.service_name
            or self.config.job_name
            or self.job_name
        )
        self.cloud_timeout = _positive_float(
            self.get_parameters("CLOUD_INFERENCE_TIMEOUT", DEFAULT_CLOUD_INFERENCE_TIMEOUT),
            "CLOUD_INFERENCE_TIMEOUT",
        )
        mode = str(self.get_parameters("MINING_MODE", INFERENCE_THEN_MINING)).strip().lower()
        if mode not in MINING_MODES:
            raise ValueError(f"MINING_MODE must be one of {', '.join(MINING_MODES)}, got {mode!r}")
        self.mining_mode = mode
        period = _positive_float(self.get_parameters("LC_PERIOD", DEFAULT_LC_PERIOD), "LC_PERIOD")

        if self.estimator is None:
            raise ValueError(
                "JointInference needs an estimator (or BACKEND_TYPE=ONNX with MODEL_URL)"
            )
        self._load_model(self.estimator)
        self.hard_example_mining_algorithm: Callable[..., Any] | None = build_hem_filter(
            hard_example_mining or None
        )
        self.cloud: CloudModel = (
            cloud
            if cloud is not None
            else InferenceClient(
                self.remote_ip, self.port, self.big_model_name, timeout=self.cloud_timeout
            )
        )
        self._cloud_failing = False
        self._cloud_lock = threading.Lock()
        report_msg = {
            "name": self.worker_name,
            "namespace": self.config.namespace,
            "ownerName": self.job_name,
            "ownerKind": self.job_kind,
            "kind": "inference",
            "results": [],
        }
        self.lc_reporter = JointInferenceReporter(
            lc_server=self.lc_server, message=report_msg, period_interval=period
        )
        self.lc_reporter.start()

    def _load_model(self, estimator: BackendBase) -> None:
        estimator.instantiate()
        model_url = str(self.config.model_url or "")
        if not model_url:
            if getattr(estimator, "direct", False):
                raise ValueError("BACKEND_TYPE=ONNX without an estimator needs MODEL_URL")
            _log.info("MODEL_URL is unset: the estimator is used as it is")
            return
        path = self.model_path
        mode = str(self.get_parameters("MODEL_LOAD_MODE", "file")).lower()
        if mode == "file" and not FileOps.is_remote(path) and not os.path.exists(path):
            raise FileExistsError(f"{path} miss: the model (MODEL_URL={model_url!r}) is missing")
        estimator.load(path)

    @classmethod
    def get_hem_algorithm_from_config(cls, **param: Any) -> dict[str, Any]:
        """The HEM rule chosen in the resource (``HEM_NAME`` / ``HEM_PARAMETERS``).

        Parameters
        ----------
        **param
            Overrides merged on top of the resource's parameters.

        Returns
        -------
        dict
            e.g. ``{"method": "IBT", "param": {"threshold_img": 0.9}}``; ``{}`` when
            ``HEM_NAME`` is unset.
        """
        return cls.parameters.get_algorithm_from_api(algorithm="HEM", **param)

    # ----------------------------------------------------------------------------- inference
    def inference(self, data: Any = None, post_process: Any = None, **kwargs: Any) -> list[Any]:
        """Infer ``data`` jointly.

        ``inference-then-mining`` (default): the edge model predicts, ``post_process`` runs,
        the HEM rule judges that result; a hard example is sent to the cloud and the cloud's
        result (with ``post_process`` applied) becomes the final one.
        ``mining-then-inference``: the HEM rule judges the raw ``data``; a hard example goes
        to the cloud only, others to the edge only. In both modes a cloud failure falls
        back to the edge result.

        Parameters
        ----------
        data : array_like
            The sample, sent to the cloud as ``np.asarray(data)``.
        post_process : callable or str, optional
            Applied to the edge and the cloud result (a registered ``ClassType.CALLBACK``
            name works too).
        **kwargs
            Passed to the edge estimator's ``predict``.

        Returns
        -------
        list
            ``[is_hard_example, final_result, edge_result, cloud_result]``; ``edge_result`` is
            the edge model's raw result (None when the edge did not run), ``cloud_result``
            the post-processed cloud result (None when the cloud was not asked or failed).
        """
        callback = resolve_post_process(post_process)
        if self.mining_mode == MINING_THEN_INFERENCE:
            return self._mining_then_inference(data, callback, kwargs)
        return self._inference_then_mining(data, callback, kwargs)

    def _edge(
        self, data: Any, callback: Callable[..., Any] | None, kwargs: dict[str, Any]
    ) -> tuple[Any, Any]:
        estimator = self._require_estimator()
        if self.model_loader is None:
            res = estimator.predict(data, **kwargs)
        else:
            with ModelLoadingThread.MODEL_MANIPULATION_SEM:  # not during a hot model update
                res = estimator.predict(data, **kwargs)
        edge_result = copy.deepcopy(res)
        if callback is not None:
            res = callback(res)
        return edge_result, res

    def _is_hard(self, value: Any) -> bool:
        rule = self.hard_example_mining_algorithm
        return bool(rule(value)) if rule is not None else False

    def _inference_then_mining(
        self, data: Any, callback: Callable[..., Any] | None, kwargs: dict[str, Any]
    ) -> list[Any]:
        edge_result, res = self._edge(data, callback, kwargs)
        is_hard = self._is_hard(res)
        cloud_result = None
        if is_hard:
            ok, cloud_value = self._offload(data, callback)
            if ok:
                res = cloud_result = cloud_value
        else:
            self._count_edge()
        return [is_hard, res, edge_result, cloud_result]

    def _mining_then_inference(
        self, data: Any, callback: Callable[..., Any] | None, kwargs: dict[str, Any]
    ) -> list[Any]:
        is_hard = self._is_hard(data)
        if is_hard:
            ok, cloud_value = self._offload(data, callback)
            if ok:
                return [True, cloud_value, None, cloud_value]
            edge_result, res = self._edge(data, callback, kwargs)
            return [True, res, edge_result, None]
        edge_result, res = self._edge(data, callback, kwargs)
        self._count_edge()
        return [False, res, edge_result, None]

    def _count_edge(self) -> None:
        INFERENCES.labels(answered_by="edge").inc()
        self.lc_reporter.update_for_edge_inference()

    def _offload(self, data: Any, callback: Callable[..., Any] | None) -> tuple[bool, Any]:
        """Ask the cloud; ``(True, result)``, or ``(False, None)`` after a counted fallback."""
        HARD_EXAMPLES.inc()
        self.lc_reporter.update_for_collaboration_inference()
        try:
            raw = self.cloud.infer(data)
        except CloudUnavailableError as err:
            self._fallback("unavailable", f"{err}")
            return False, None
        except CloudInferenceError as err:
            self._fallback("error", f"{err}")
            return False, None
        except Exception as err:
            _log.debug("cloud inference raised", exc_info=True)
            self._fallback("error", f"{type(err).__name__}: {err}")
            return False, None
        with self._cloud_lock:
            recovered, self._cloud_failing = self._cloud_failing, False
        if recovered:
            _log.info("cloud inference at %s:%s works again", self.remote_ip, self.port)
        INFERENCES.labels(answered_by="cloud").inc()
        return True, callback(raw) if callback is not None else raw

    def _fallback(self, reason: str, detail: str) -> None:
        CLOUD_FALLBACKS.labels(reason=reason).inc()
        INFERENCES.labels(answered_by="edge").inc()
        self.lc_reporter.update_for_cloud_fallback()
        with self._cloud_lock:
            repeated, self._cloud_failing = self._cloud_failing, True
        if repeated:
            _log.debug("cloud inference failed again, edge result used: %s", detail)
        else:
            _log.warning(
                "cloud inference failed, edge result used (repeats are logged at DEBUG "
                "until the cloud answers again): %s",
                detail,
            )

    def close(self) -> None:
        """Stop the LC reporter and close the cloud connection (an addition)."""
        super().close()
        self.lc_reporter.stop(timeout=5.0)
        self.cloud.close()
