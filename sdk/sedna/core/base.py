"""The base of every job class (upstream ``sedna.core.base.JobBase``).

A job reads the worker's environment (:class:`~sedna.common.config.BaseConfig`), wraps the
user's estimator in the backend ``BACKEND_TYPE`` names (:func:`~sedna.backend.set_backend`),
and reports to the LocalController. With ``MODEL_HOT_UPDATE=true`` a
:class:`ModelLoadingThread` reloads the model when the hot-update file announces a new one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final

from sedna.backend import BackendBase, set_backend
from sedna.common.class_factory import ClassFactory, ClassType
from sedna.common.config import BaseConfig, Context
from sedna.common.file_ops import FileOps
from sedna.service.client import LCClient

__all__ = [
    "JobBase",
    "K8sResourceKind",
    "K8sResourceKindStatus",
    "ModelLoadingThread",
    "resolve_post_process",
]

_log = logging.getLogger(__name__)

DEFAULT_MODEL_POLL_PERIOD: Final = 60


class K8sResourceKind:
    """``ownerKind`` values of worker reports (upstream ``sedna.common.constant``)."""

    DEFAULT: Final = "default"
    REID_JOB: Final = "reidjob"
    VIDEO_ANALYTICS_JOB: Final = "videoanalyticsjob"
    FEATURE_EXTRACTION_SERVICE: Final = "featureextractionservice"
    JOINT_INFERENCE_SERVICE: Final = "jointinferenceservice"
    FEDERATED_LEARNING_JOB: Final = "federatedlearningjob"
    INCREMENTAL_JOB: Final = "incrementallearningjob"
    LIFELONG_JOB: Final = "lifelonglearningjob"


class K8sResourceKindStatus:
    """``status`` values of worker reports (upstream ``sedna.common.constant``)."""

    COMPLETED: Final = "completed"
    FAILED: Final = "failed"
    RUNNING: Final = "running"


def resolve_post_process(post_process: Any) -> Callable[..., Any] | None:
    """The callback a job applies to a result (upstream's ``post_process`` handling).

    Parameters
    ----------
    post_process : callable, str or None
        A callable is used as is; a string is looked up with
        ``ClassFactory.get_cls(ClassType.CALLBACK, name)`` and the registered object is
        called with the result (as upstream's joint inference does).

    Returns
    -------
    callable or None

    Raises
    ------
    ValueError
        If no callback is registered under the name.
    TypeError
        If ``post_process`` is neither callable nor a string.
    """
    if post_process is None:
        return None
    if callable(post_process):
        return post_process  # type: ignore[no-any-return]
    if isinstance(post_process, str):
        found = ClassFactory.get_cls(ClassType.CALLBACK, post_process)
        if not callable(found):
            raise TypeError(f"post_process {post_process!r} is registered but not callable")
        return found  # type: ignore[no-any-return]
    raise TypeError(
        f"post_process must be a callable or a registered callback name, got "
        f"{type(post_process).__name__}"
    )


def _explicit_job_name(config: BaseConfig) -> str:
    """``JOB_NAME`` when the environment or the merged config sets it, else ``""``."""
    overrides: Mapping[str, Any] = type(config).__dict__.get("_overrides", {})
    if "JOB_NAME" in os.environ or "job_name" in overrides:
        return str(config.job_name or "")
    return ""


class JobBase:
    """Sedna feature base class (upstream ``JobBase``).

    Parameters
    ----------
    estimator : class, factory or instance, optional
        The user's model, wrapped with :func:`~sedna.backend.set_backend`.
    config : Mapping, optional
        Merged into :class:`~sedna.common.config.BaseConfig` with ``from_json`` (process-wide,
        as upstream).

    Attributes
    ----------
    parameters : type[Context]
        Where :meth:`get_parameters` looks values up.
    config : BaseConfig
    estimator : BackendBase or None
        The backend around the estimator (None without one, except for ``ONNX``).
    job_kind : str
        The report's ``ownerKind`` (``"default"`` here).
    job_name : str
        ``JOB_NAME`` if set, else ``SERVICE_NAME``, else ``"sedna"``.
    worker_name : str
        ``WORKER_NAME``, else :attr:`job_name`.
    namespace : str
        ``NAMESPACE``, else :attr:`job_name`.
    lc_server : str
        ``LC_SERVER``.
    """

    parameters: ClassVar[type[Context]] = Context

    def __init__(self, estimator: Any = None, config: Mapping[str, Any] | None = None) -> None:
        self.config = BaseConfig()
        if config:
            self.config.from_json(config)
        self.log = _log
        self.estimator: BackendBase | None = set_backend(estimator=estimator, config=self.config)
        self.job_kind: str = K8sResourceKind.DEFAULT
        self.job_name: str = (
            _explicit_job_name(self.config)
            or str(self.config.service_name or "")
            or str(self.config.job_name or "sedna")
        )
        self.worker_name: str = str(self.config.worker_name or "") or self.job_name
        self.namespace: str = str(self.config.namespace or "") or self.job_name
        self.lc_server: str = str(self.config.lc_server)
        self.model_loader: ModelLoadingThread | None = None
        if str(self.get_parameters("MODEL_HOT_UPDATE", "false")).lower() == "true":
            if self.estimator is None:
                _log.error("MODEL_HOT_UPDATE=true but the job has no estimator: ignored")
            else:
                self.model_loader = ModelLoadingThread(self.estimator, self.report_task_info)
                self.model_loader.start()

    @property
    def model_path(self) -> str:
        """Where the job's model is (upstream rules).

        ``MODEL_URL`` itself when ``MODEL_LOAD_MODE`` (default ``"file"``) is not ``"file"``,
        when it is a local file, or when it names a file (it has an extension and is not a
        local directory: a remote file, or a missing local one); otherwise the ``model_path``
        parameter, or ``MODEL_URL/<estimator.model_name>``. A ``file://`` prefix is removed.
        """
        model_url = str(self.config.model_url or "")
        local = FileOps.local_path(model_url)
        mode = str(self.get_parameters("MODEL_LOAD_MODE", "file")).lower()
        if mode != "file" or os.path.isfile(local):
            return local
        if os.path.splitext(local.rstrip("/"))[1] and not os.path.isdir(local):
            return local  # names a file (remote, or local but missing: the error says so)
        explicit = self.get_parameters("model_path")
        if explicit:
            return str(explicit)
        if self.estimator is None or not model_url:
            return local
        return FileOps.join_path(local, self.estimator.model_name)

    def train(self, **kwargs: Any) -> Any:
        """Not provided by the base class."""
        raise NotImplementedError

    def inference(self, data: Any = None, post_process: Any = None, **kwargs: Any) -> Any:
        """``estimator.predict(data, **kwargs)``, then ``post_process`` (see
        :func:`resolve_post_process`); upstream names the first parameter ``x``."""
        estimator = self._require_estimator()
        callback = resolve_post_process(post_process)
        res = estimator.predict(data, **kwargs)
        return callback(res) if callback else res

    def evaluate(self, data: Any, post_process: Any = None, **kwargs: Any) -> Any:
        """``estimator.evaluate(data, **kwargs)``, then ``post_process``."""
        estimator = self._require_estimator()
        callback = resolve_post_process(post_process)
        res = estimator.evaluate(data, **kwargs)
        return callback(res) if callback else res

    def get_parameters(self, param: str, default: Any = None) -> Any:
        """:meth:`Context.get_parameters <sedna.common.config.Context.get_parameters>`."""
        return self.parameters.get_parameters(param=param, default=default)

    def report_task_info(
        self,
        task_info: Any,
        status: str,
        results: Any = None,
        kind: str = "train",
    ) -> dict[str, Any] | None:
        """Report a stage to the LC: ``POST {LC_SERVER}/sedna/workers/{WORKER_NAME}/info``.

        Parameters
        ----------
        task_info : Any
            Sent as ``ownerInfo`` when truthy.
        status : str
            ``"running"``, ``"completed"`` or ``"failed"``.
        results : list, optional
            Sent as ``results`` when truthy (see :meth:`BackendBase.model_info
            <sedna.backend.base.BackendBase.model_info>`).
        kind : str, default "train"
            ``"train"``, ``"eval"``, ``"deploy"`` or ``"inference"``.

        Returns
        -------
        dict or None
            The LC's answer; None when the report could not be delivered (logged, never
            raised, as upstream).
        """
        message: dict[str, Any] = {
            "name": self.worker_name,
            "namespace": self.namespace,
            "ownerName": self.job_name,
            "ownerKind": self.job_kind,
            "kind": kind,
            "status": status,
        }
        if results:
            message["results"] = results
        if task_info:
            message["ownerInfo"] = task_info
        try:
            return LCClient.send(self.lc_server, self.worker_name, message)
        except Exception:
            _log.exception("could not report to the LC at %s", self.lc_server)
            return None

    def _require_estimator(self) -> BackendBase:
        if self.estimator is None:
            raise ValueError(f"{type(self).__name__} has no estimator")
        return self.estimator

    def close(self) -> None:
        """Stop the background threads this job started (an addition)."""
        if self.model_loader is not None:
            self.model_loader.stop()


class ModelLoadingThread(threading.Thread):
    """Hot model update (upstream ``ModelLoadingThread``), started by ``MODEL_HOT_UPDATE=true``.

    Every ``MODEL_POLL_PERIOD_SECONDS`` (default 60; values < 1 fall back to 60) it reads the
    JSON file ``MODEL_HOT_UPDATE_CONFIG`` (a path or URL)::

        {"model_config": {"model_path": "<path or URL>", "model_update_time": "<version>"}}

    When ``model_update_time`` changes, the model is downloaded and loaded with
    ``estimator.load(path)`` under :attr:`MODEL_MANIPULATION_SEM`, then ``callback`` reports
    ``kind="deploy"`` with status ``completed`` or ``failed``.

    Parameters
    ----------
    estimator : BackendBase
        Whose ``load`` is called.
    callback : callable, optional
        ``callback(task_info=None, status=..., kind="deploy")``.
    version : str, default "latest"
        The version considered loaded.
    """

    MODEL_MANIPULATION_SEM: ClassVar[threading.Semaphore] = threading.Semaphore(1)

    def __init__(
        self,
        estimator: BackendBase,
        callback: Callable[..., Any] | None = None,
        version: str = "latest",
    ) -> None:
        super().__init__(name="sedna-model-hot-update", daemon=True)
        self.hot_update_conf = str(Context.get_parameters("MODEL_HOT_UPDATE_CONFIG", "") or "")
        self.run_flag = bool(self.hot_update_conf)
        if not self.run_flag:
            _log.error("MODEL_HOT_UPDATE_CONFIG is unset: hot model update disabled")
        raw_period = Context.get_parameters("MODEL_POLL_PERIOD_SECONDS", DEFAULT_MODEL_POLL_PERIOD)
        try:
            period = float(raw_period)
        except (TypeError, ValueError):
            period = 0.0
        if not period >= 1:
            _log.warning(
                "MODEL_POLL_PERIOD_SECONDS=%r is not a number >= 1: using %s",
                raw_period,
                DEFAULT_MODEL_POLL_PERIOD,
            )
            period = DEFAULT_MODEL_POLL_PERIOD
        self.check_time = period
        self.production_estimator = estimator
        self.callback = callback
        self.version = version
        self.temp_path = tempfile.mkdtemp(prefix="sedna-hot-update-")
        self._stop_event = threading.Event()

    def poll_once(self) -> bool:
        """Check the hot-update file once; load a new model when announced.

        Returns
        -------
        bool
            Whether a new version was loaded successfully.
        """
        try:
            conf = FileOps.download(self.hot_update_conf, os.path.join(self.temp_path, "conf"))
            with open(conf, encoding="utf-8") as stream:
                model_msg = json.load(stream)["model_config"]
            latest = str(model_msg["model_update_time"])
            source = str(model_msg["model_path"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            _log.error("cannot read the hot update config %s: %s", self.hot_update_conf, err)
            return False
        if latest == self.version:
            return False
        try:
            name = os.path.basename(source.rstrip("/")) or "model"
            model = FileOps.download(source, os.path.join(self.temp_path, f"{latest}-{name}"))
        except (OSError, ValueError) as err:
            _log.error("cannot fetch model %s (version %s): %s", source, latest, err)
            return False
        self.version = latest
        with self.MODEL_MANIPULATION_SEM:
            _log.info("model update to version %s starts", latest)
            try:
                self.production_estimator.load(model)
            except Exception:
                _log.exception("model update to version %s failed", latest)
                status = K8sResourceKindStatus.FAILED
            else:
                _log.info("model update to version %s done", latest)
                status = K8sResourceKindStatus.COMPLETED
        if self.callback is not None:
            with contextlib.suppress(Exception):
                self.callback(task_info=None, status=status, kind="deploy")
        return status == K8sResourceKindStatus.COMPLETED

    def run(self) -> None:
        """Poll every :attr:`check_time` seconds until :meth:`stop`."""
        while self.run_flag and not self._stop_event.wait(self.check_time):
            self.poll_once()

    def stop(self, timeout: float | None = None) -> None:
        """End the thread (an addition) and wait up to ``timeout`` seconds."""
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
