"""``BigModelService``: the cloud side of joint inference (upstream API, OIP v2 gRPC wire).

Upstream served ``POST /{service}/predict`` with JSON lists; this one serves the Open
Inference Protocol (KServe v2) gRPC API, so the edge offloads raw tensors and any OIP client
(``tritonclient``, :class:`~sedna.service.oip_client.InferenceClient`) can call it::

    BigModelService(estimator=Estimator).start()

Environment (the JointInferenceService cloud worker contract, plus ours):

==============================  ==========================================================
``BIG_MODEL_BIND_IP``           bind address (default ``0.0.0.0``)
``BIG_MODEL_BIND_PORT``         gRPC port (default 5000; 0 picks a free one)
``BIG_MODEL_NAME``              model name clients call; else ``SERVICE_NAME``, else
                                ``JOB_NAME`` (default ``sedna``, as upstream's config)
``MODEL_URL``                   the model, loaded with ``estimator.load`` before serving
``BIG_MODEL_MAX_BATCH_SIZE``    most requests per ``predict`` call (default 1: no batching)
``BIG_MODEL_MAX_QUEUE_DELAY_MS`` longest a batch waits for more requests (default 2)
``BIG_MODEL_INPUT_SHAPE``       declared input shape, e.g. ``-1,64`` (default: none)
``BIG_MODEL_INPUT_DATATYPE``    declared input datatype (default ``FP32``)
``METRICS_PORT``                Prometheus ``/metrics`` port (default: no endpoint)
==============================  ==========================================================
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any, Final

from sedna.backend import BackendBase
from sedna.common.errors import SednaError
from sedna.common.file_ops import FileOps
from sedna.core.base import JobBase, K8sResourceKind, ModelLoadingThread
from sedna.runtime import ServiceServer, ServiceSettings, configure_logging
from sedna.serving import (
    DYNAMIC,
    InferenceMetrics,
    ServedModel,
    StaticModelStore,
    TensorSpec,
    add_inference_service,
)
from sedna.serving.estimator import EstimatorBackend, encode_result, input_spec

__all__ = ["DEFAULT_BIND_IP", "DEFAULT_BIND_PORT", "BigModelService", "NotSupportedError"]

_log = logging.getLogger(__name__)

DEFAULT_BIND_IP: Final = "0.0.0.0"  # the cloud worker is called from the edge nodes
DEFAULT_BIND_PORT: Final = 5000
SERVER_NAME: Final = "sedna-big-model"
_DEFAULT_QUEUE_DELAY_MS: Final = 2.0


class NotSupportedError(SednaError, NotImplementedError):
    """The operation exists in upstream's API but is not supported (e.g. training)."""


def _env_int(
    environ: Mapping[str, str], name: str, default: int, minimum: int, maximum: int = 1 << 31
) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise SednaError(f"{name} must be an integer, not {text!r}") from None
    if not minimum <= value <= maximum:
        raise SednaError(f"{name} must be {minimum}..{maximum}, not {value}")
    return value


def _env_float(environ: Mapping[str, str], name: str, default: float) -> float:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise SednaError(f"{name} must be a number, not {text!r}") from None
    if not 0 <= value < float("inf"):
        raise SednaError(f"{name} must be >= 0, not {text!r}")
    return value


def big_model_name(environ: Mapping[str, str], default: str = "sedna") -> str:
    """The model name the cloud serves: ``BIG_MODEL_NAME``, ``SERVICE_NAME``, ``JOB_NAME``.

    Parameters
    ----------
    environ
        The environment.
    default
        When none is set (upstream's ``JOB_NAME`` default).

    Returns
    -------
    str
        The first non-blank one.
    """
    for key in ("BIG_MODEL_NAME", "SERVICE_NAME", "JOB_NAME"):
        value = environ.get(key, "").strip()
        if value:
            return value
    return default


class BigModelService(JobBase):
    """Serves the big model of joint inference (upstream ``BigModelService``).

    Parameters
    ----------
    estimator : class, factory or instance, optional
        The user's model, wrapped by :func:`sedna.backend.set_backend` (``BACKEND_TYPE``);
        None only with ``BACKEND_TYPE=ONNX`` (the backend runs ``MODEL_URL`` itself).
    config : Mapping, optional
        Merged into the worker config, as upstream's ``JobBase``.

    Attributes
    ----------
    estimator : BackendBase or None
        The wrapped estimator.
    model_name : str
        The name clients call the model by (``BIG_MODEL_NAME``, ``SERVICE_NAME``,
        ``JOB_NAME``, else :attr:`job_name`).
    local_ip, port : str, int
        Bind address and port (``port`` is the bound one once serving).
    metrics_port : int or None
        ``METRICS_PORT`` (the bound one once serving); None: no ``/metrics`` endpoint.
    max_batch_size : int
        ``BIG_MODEL_MAX_BATCH_SIZE``.

    Raises
    ------
    SednaError
        A malformed ``BIG_MODEL_*`` or ``METRICS_PORT`` variable, or batching without a
        declared input shape whose first dimension is variable.
    """

    def __init__(self, estimator: Any = None, config: Mapping[str, Any] | None = None) -> None:
        environ = os.environ  # checked before the job starts anything (hot update thread)
        self.local_ip = environ.get("BIG_MODEL_BIND_IP", "").strip() or DEFAULT_BIND_IP
        self.port = _env_int(environ, "BIG_MODEL_BIND_PORT", DEFAULT_BIND_PORT, 0, 65535)
        self.max_batch_size = _env_int(environ, "BIG_MODEL_MAX_BATCH_SIZE", 1, 1, 4096)
        self.max_queue_delay_ms = _env_float(
            environ, "BIG_MODEL_MAX_QUEUE_DELAY_MS", _DEFAULT_QUEUE_DELAY_MS
        )
        metrics_port = environ.get("METRICS_PORT", "").strip()
        self.metrics_port: int | None = (
            _env_int(environ, "METRICS_PORT", 0, 0, 65535) if metrics_port else None
        )
        try:
            self.input_spec: TensorSpec | None = input_spec(
                environ.get("BIG_MODEL_INPUT_SHAPE"), environ.get("BIG_MODEL_INPUT_DATATYPE")
            )
        except ValueError as exc:
            raise SednaError(f"BIG_MODEL_INPUT_SHAPE/BIG_MODEL_INPUT_DATATYPE: {exc}") from None
        if self.max_batch_size > 1 and (
            self.input_spec is None or self.input_spec.shape[0] != DYNAMIC
        ):
            raise SednaError(
                "BIG_MODEL_MAX_BATCH_SIZE > 1 needs BIG_MODEL_INPUT_SHAPE with a variable "
                "first (batch) dimension, e.g. -1,64: the estimator then gets the requests' "
                "rows concatenated along axis 0"
            )
        super().__init__(estimator=estimator, config=config)
        self.job_kind = K8sResourceKind.JOINT_INFERENCE_SERVICE
        self.model_name = big_model_name(environ, self.job_name)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ServiceServer | None = None
        self._serving = threading.Event()

    # ------------------------------------------------------------------ upstream API
    def inference(  # upstream names the input data (JobBase: x)
        self, data: Any = None, post_process: Any = None, **kwargs: Any
    ) -> Any:
        """Run the estimator on ``data`` (upstream ``BigModelService.inference``).

        Parameters
        ----------
        data
            The input, as the edge sent it (an array).
        post_process : callable or str, optional
            Applied to the estimator's result: a callable, or the name of a class/function
            registered as ``ClassType.CALLBACK``.
        **kwargs
            Passed to ``estimator.predict`` (the names it accepts).

        Returns
        -------
        Any
            The (post-processed) result.

        Raises
        ------
        SednaError
            No estimator.
        """
        self._check_estimator()
        return super().inference(data, post_process=post_process, **kwargs)

    def _check_estimator(self) -> BackendBase:
        if self.estimator is None:
            raise SednaError(
                "BigModelService has no estimator: pass estimator=..., or set "
                "BACKEND_TYPE=ONNX to serve an .onnx MODEL_URL"
            )
        return self.estimator

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """Not supported, as upstream ("todo: no support yet").

        Raises
        ------
        NotSupportedError
            Always (a :class:`SednaError` and a :class:`NotImplementedError`).
        """
        raise NotSupportedError(
            "BigModelService does not train: train the big model elsewhere and serve it "
            "with MODEL_URL"
        )

    def start(self) -> None:
        """Load ``MODEL_URL`` and serve until SIGTERM/SIGINT (or :meth:`stop`), then drain.

        Serves OIP v2 ``inference.GRPCInferenceService``, gRPC health and reflection on
        ``BIG_MODEL_BIND_IP:BIG_MODEL_BIND_PORT``. Signals are handled only when called
        from the main thread; from another thread, use :meth:`stop`.

        Raises
        ------
        SednaError
            No estimator.
        FileNotFoundError
            ``MODEL_URL`` names a local file that does not exist, or cannot be downloaded.
        sedna.runtime.ServerStartError
            The port cannot be bound.
        """
        if not logging.getLogger().handlers:
            configure_logging(str(self.config.log_level or "INFO"), "json")
        self._load()
        asyncio.run(self._serve(threading.current_thread() is threading.main_thread()))

    def stop(self, grace: float | None = None) -> None:
        """Drain and stop a service started by :meth:`start` (from any thread).

        Parameters
        ----------
        grace
            Drain deadline in seconds (the server's default when None).
        """
        loop, server = self._loop, self._server
        if loop is None or server is None or loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(server.stop(grace), loop)
        future.result()

    def wait_serving(self, timeout: float | None = None) -> bool:
        """Wait until :meth:`start` serves (the model loaded and the port bound).

        Parameters
        ----------
        timeout
            Seconds; None waits forever.

        Returns
        -------
        bool
            Whether it serves.
        """
        return self._serving.wait(timeout)

    # ------------------------------------------------------------------ internals
    def _load(self) -> None:
        estimator = self._check_estimator()
        if not self.config.model_url:
            _log.warning("MODEL_URL is not set: serving the estimator as it is")
            return
        path = self.model_path
        if not FileOps.is_remote(path) and not os.path.exists(path):
            raise FileNotFoundError(f"the model {path!r} (MODEL_URL) does not exist")
        estimator.load(path)
        _log.info("model loaded", extra={"model": self.model_name, "model_path": path})

    def _predict(self, data: Any) -> Any:
        if self.model_loader is None:
            return self.inference(data)
        with ModelLoadingThread.MODEL_MANIPULATION_SEM:  # not during a hot model update
            return self.inference(data)

    async def _serve(self, handle_signals: bool) -> None:
        settings = ServiceSettings(
            host=self.local_ip,
            port=self.port,
            metrics_host=self.local_ip,
            metrics_port=self.metrics_port,
        )
        server = ServiceServer(settings)
        metrics = InferenceMetrics(server.registry)
        store = StaticModelStore(metrics)
        add_inference_service(server, store, server_name=SERVER_NAME)
        backend = EstimatorBackend(
            self._predict,
            self.input_spec,
            batched=self.max_batch_size > 1,
            platform=f"sedna_{getattr(self.estimator, 'framework', '') or 'estimator'}",
        )
        model = ServedModel(
            self.model_name,
            backend,
            metrics,
            max_batch_size=self.max_batch_size,
            max_queue_delay_ms=self.max_queue_delay_ms,
            encode_output=encode_result,
        )
        model.batcher.start()
        store.add(model)
        server.on_shutdown(store.close)
        self._loop, self._server = asyncio.get_running_loop(), server
        try:
            await server.start()
            self.port, self.metrics_port = server.port, server.metrics_port
            _log.info(
                "big model serving",
                extra={
                    "model": self.model_name,
                    "address": server.address,
                    "port": server.port,
                    "max_batch_size": model.batcher.max_batch_size,
                },
            )
            self._serving.set()
            if handle_signals:
                await server.run_until_signal()
            else:
                await server.serve_forever()
        finally:
            self._serving.clear()
            await server.stop(0)
            self._loop = self._server = None
