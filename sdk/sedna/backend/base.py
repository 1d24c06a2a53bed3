"""The estimator wrapper every job uses (upstream ``sedna.backend.base.BackendBase``).

A worker script hands a job its *estimator*: a class (instantiated lazily, with the keyword
arguments its constructor accepts) or an instance, with some of ``fit``/``train``,
``predict``, ``evaluate``, ``load``, ``save``. :class:`BackendBase` forwards calls to it,
dropping keyword arguments the callee does not accept (:meth:`BackendBase.parse_kwargs`), and
moves model files between local paths and ``s3://`` / ``http(s)://`` URLs with
:class:`~sedna.common.file_ops.FileOps`. The framework backends (TORCH, TENSORFLOW, KERAS,
ONNX) subclass it.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import os
import tempfile
from collections.abc import Callable
from typing import Any

from sedna.common.file_ops import FileOps, redact_url

__all__ = ["BackendBase", "is_factory"]

_log = logging.getLogger(__name__)

_MODEL_POSTFIX: dict[str, str] = {
    "pytorch": ".pth",
    "keras": ".pb",
    "tensorflow": ".pb",
    "mindspore": ".ckpt",
    "onnx": ".onnx",
}


def is_factory(estimator: object) -> bool:
    """Whether ``estimator`` is a class or a factory function rather than a model instance.

    Upstream calls any ``callable`` estimator to build it; that would call a model instance
    that happens to be callable (a ``torch.nn.Module``, a Keras model). Only classes, plain
    functions, methods and ``functools.partial`` objects count as factories here.
    """
    return (
        inspect.isclass(estimator)
        or inspect.isfunction(estimator)
        or inspect.ismethod(estimator)
        or isinstance(estimator, functools.partial)
    )


def _accepts(func: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(
        p.kind is inspect.Parameter.VAR_KEYWORD
        or (
            p.name == name
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        )
        for p in params
    )


def _cache_dir(url: str) -> str:
    digest = hashlib.sha256(redact_url(url).encode()).hexdigest()[:16]
    path = os.path.join(tempfile.gettempdir(), "sedna-models", digest)
    os.makedirs(path, exist_ok=True)
    return path


class BackendBase:
    """ML framework backend base class (upstream ``BackendBase``): "use the estimator itself".

    Parameters
    ----------
    estimator : class, factory or instance
        The user's model. A class or factory function is instantiated on first use with the
        keyword arguments its signature accepts.
    fine_tune : bool, default True
        Part of the default :attr:`model_name` (``model_finetune_...``), as upstream.
    **kwargs
        ``use_cuda``, ``use_npu`` (bool); ``model_save_path`` (where models are saved and
        loaded from by default: a directory, a file or a URL; default: the temp dir);
        ``model_name`` (overrides :attr:`model_name`); ``model_save_url``.

    Attributes
    ----------
    framework : str
        ``""`` here; ``"pytorch"``, ``"tensorflow"``, ``"keras"``, ``"onnx"`` in subclasses.
    has_load : bool
        Whether :meth:`load` ran.
    model_path : str or None
        The local file :meth:`load` last loaded (an addition).
    """

    def __init__(self, estimator: Any, fine_tune: bool = True, **kwargs: Any) -> None:
        self.framework = ""
        self.estimator = estimator
        self.use_cuda = bool(kwargs.get("use_cuda"))
        self.use_npu = bool(kwargs.get("use_npu"))
        self.fine_tune = fine_tune
        self.model_save_path: str = str(kwargs.get("model_save_path") or tempfile.gettempdir())
        self.model_save_url: str | None = kwargs.get("model_save_url")
        self.default_name: str | None = kwargs.get("model_name")
        self.has_load = False
        self.model_path: str | None = None

    # ------------------------------------------------------------------------------ helpers
    @property
    def model_name(self) -> str:
        """``model_name`` if given, else ``model[_finetune_]<framework><ext>`` (upstream)."""
        if self.default_name:
            return self.default_name
        continue_flag = "_finetune_" if self.fine_tune else ""
        postfix = _MODEL_POSTFIX.get(self.framework, ".pkl")
        return f"model{continue_flag}{self.framework}{postfix}"

    @staticmethod
    def parse_kwargs(func: Any, **kwargs: Any) -> dict[str, Any]:
        """The subset of ``kwargs`` that ``func`` accepts (all of them if it takes ``**kw``).

        Parameters
        ----------
        func : callable
            A function, method or class (its constructor is inspected).
        **kwargs
            Candidate keyword arguments.

        Returns
        -------
        dict
            ``kwargs`` unchanged when ``func`` is not callable, has ``**kwargs`` or cannot be
            inspected; otherwise only the names it declares.
        """
        if not callable(func):
            return kwargs
        try:
            params = inspect.signature(func).parameters.values()
        except (TypeError, ValueError):
            return kwargs
        names: set[str] = set()
        for param in params:
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                return kwargs
            if param.kind in (
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                inspect.Parameter.KEYWORD_ONLY,
            ):
                names.add(param.name)
        return {k: v for k, v in kwargs.items() if k in names}

    def instantiate(self, **kwargs: Any) -> Any:
        """Build the estimator from its class/factory once, with the kwargs it accepts (ours).

        Returns
        -------
        Any
            The estimator instance.
        """
        if is_factory(self.estimator):
            self.estimator = self.estimator(**self.parse_kwargs(self.estimator, **kwargs))
        return self.estimator

    def _method(self, *names: str) -> Callable[..., Any]:
        estimator = self.instantiate()
        for name in names:
            method = getattr(estimator, name, None)
            if callable(method):
                return method  # type: ignore[no-any-return]
        raise AttributeError(
            f"the estimator {type(estimator).__name__} has no "
            + " or ".join(f"{name}()" for name in names)
        )

    def _call(self, names: tuple[str, ...], *args: Any, **kwargs: Any) -> Any:
        method = self._method(*names)
        return method(*args, **self.parse_kwargs(method, **kwargs))

    # ------------------------------------------------------------------------- estimator API
    def train(self, *args: Any, **kwargs: Any) -> Any:
        """Train: ``estimator.fit`` if it has one, else ``estimator.train`` (upstream)."""
        self.instantiate(**kwargs)
        return self._call(("fit", "train"), *args, **kwargs)

    def update(self, *args: Any, **kwargs: Any) -> Any:
        """Update: ``estimator.fit`` if it has one, else ``estimator.update`` (upstream)."""
        self.instantiate(**kwargs)
        return self._call(("fit", "update"), *args, **kwargs)

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        """``estimator.predict(*args, **accepted kwargs)``."""
        return self._call(("predict",), *args, **kwargs)

    def predict_proba(self, *args: Any, **kwargs: Any) -> Any:
        """``estimator.predict_proba(*args, **accepted kwargs)``."""
        return self._call(("predict_proba",), *args, **kwargs)

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        """``estimator.evaluate(*args, **accepted kwargs)``."""
        return self._call(("evaluate",), *args, **kwargs)

    def get_weights(self) -> Any:
        """The estimator's ``get_weights()``; upstream's base raises NotImplementedError.

        Raises
        ------
        NotImplementedError
            If the estimator has no ``get_weights``.
        """
        method = getattr(self.instantiate(), "get_weights", None)
        if not callable(method):
            raise NotImplementedError(f"{type(self).__name__}.get_weights is not supported")
        return method()

    def set_weights(self, weights: Any) -> None:
        """The estimator's ``set_weights(weights)``; upstream's base raises NotImplementedError.

        Raises
        ------
        NotImplementedError
            If the estimator has no ``set_weights``.
        """
        method = getattr(self.instantiate(), "set_weights", None)
        if not callable(method):
            raise NotImplementedError(f"{type(self).__name__}.set_weights is not supported")
        method(weights)

    # --------------------------------------------------------------------------- model files
    def save(self, model_url: str = "", model_name: str | None = None) -> str:
        """Save the model locally, then upload it to ``model_url`` when given (upstream).

        The local file is ``model_save_path/model_name`` (``model_save_path`` itself when it
        names a file; a temporary directory when it is a URL).

        Parameters
        ----------
        model_url : str, optional
            Where to upload the saved file: a local path or ``s3://``.
        model_name : str, optional
            File name; :attr:`model_name` by default.

        Returns
        -------
        str
            ``model_url`` when uploaded, else the local path.
        """
        mname = model_name or self.model_name
        save_dir = self.model_save_path
        if FileOps.is_remote(save_dir):
            if not model_url:
                model_url = FileOps.join_path(save_dir, mname)
            save_dir = tempfile.mkdtemp(prefix="sedna-save-")
        else:
            save_dir = FileOps.local_path(save_dir)
            if os.path.isfile(save_dir) or os.path.splitext(save_dir)[1]:
                save_dir, mname = os.path.split(save_dir)
        os.makedirs(save_dir or ".", exist_ok=True)
        model_path = os.path.join(save_dir, mname)
        self._save_local(model_path)
        if model_url and FileOps.exists(model_path):
            FileOps.upload(model_path, model_url)
            return model_url
        return model_path

    def _save_local(self, path: str) -> None:
        """Write the model to the local ``path`` (subclasses add framework fallbacks)."""
        self._method("save")(path)

    def model_info(
        self, model: str, relpath: str | None = None, result: Any = None
    ) -> list[dict[str, Any]]:
        """The ``results`` entry of a stage report: ``[{"format", "url", "metrics"}]``.

        Parameters
        ----------
        model : str
            The model's path or URL; its extension is the format.
        relpath : str, optional
            A prefix to strip from ``model`` (``DATA_PATH_PREFIX``: container → host path).
        result : Any, optional
            The metrics.
        """
        _, ext = os.path.splitext(model)
        url = FileOps.remove_path_prefix(model, relpath) if relpath else model
        return [{"format": ext.lstrip("."), "url": url, "metrics": result}]

    def load(self, model_url: str = "", model_name: str | None = None, **kwargs: Any) -> Any:
        """Instantiate the estimator, fetch the model and call ``estimator.load`` (upstream).

        Parameters
        ----------
        model_url : str, optional
            The model: a local file or directory, ``file://``, ``s3://`` or ``http(s)://``.
            Defaults to ``model_save_path``. A directory resolves to ``<dir>/<model_name>``
            when that file exists. Remote models are downloaded to a cache directory first.
        model_name : str, optional
            File name inside a directory; :attr:`model_name` by default.
        **kwargs
            Passed to the estimator's constructor (the names it accepts).

        Returns
        -------
        Any
            What ``estimator.load`` returned, or None when the model file does not exist
            (logged) or the estimator has no ``load``.

        Raises
        ------
        FileNotFoundError
            If a remote model cannot be downloaded.
        """
        self.instantiate(**kwargs)
        path = self._fetch(model_url, model_name)
        self.has_load = True
        if path is None or not os.path.exists(path):
            _log.warning(
                "model %s does not exist; %s keeps its current weights",
                path or redact_url(model_url or self.model_save_path),
                type(self.estimator).__name__,
            )
            return None
        self.model_path = path
        return self._load_local(path)

    def _load_local(self, path: str) -> Any:
        """Load the local model file ``path`` into the estimator."""
        method = getattr(self.estimator, "load", None)
        if not callable(method):
            return None
        if _accepts(method, "model_url"):
            return method(model_url=path)
        return method(path)

    def _fetch(self, model_url: str, model_name: str | None) -> str | None:
        """The local file (or directory) holding the model; downloads remote models."""
        mname = model_name or self.model_name
        src = model_url or self.model_save_path
        if not src:
            return None
        if FileOps.is_remote(src):
            local = FileOps.download(src, _cache_dir(src))
        else:
            local = FileOps.local_path(src)
        if os.path.isdir(local):
            candidate = os.path.join(local, mname)
            if os.path.exists(candidate):
                return candidate
        return local

    def __repr__(self) -> str:
        return f"{type(self).__name__}(estimator={type(self.estimator).__name__})"
