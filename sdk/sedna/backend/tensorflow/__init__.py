"""TensorFlow and Keras backends (upstream ``sedna.backend.tensorflow``).

``BACKEND_TYPE=TENSORFLOW`` selects :class:`TFBackend`, ``KERAS`` :class:`KerasBackend`.
Importing this module imports ``tensorflow``; :func:`sedna.backend.set_backend` does so only
when one of them is chosen.

Upstream targets TF1-style estimators: the backend owns a ``tf.Graph`` and a
``tf.compat.v1.Session`` (created here on first access of :attr:`TFBackend.graph` /
:attr:`TFBackend.sess`). Besides user estimators, a bare Keras model works: ``train`` calls
``fit`` (``train_data`` may be an ``(x, y)`` pair), ``predict``/``evaluate`` call Keras's
(quietly), ``load`` uses ``keras.models.load_model`` and the default file name ends in
``.keras`` (Keras 3 saves only ``.keras``/``.h5``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import tensorflow as tf  # type: ignore[import-untyped,unused-ignore]

from sedna.backend.base import BackendBase
from sedna.common.file_ops import FileOps

__all__ = ["ConfigProto", "KerasBackend", "Session", "TFBackend", "reset_default_graph"]

_log = logging.getLogger(__name__)

ConfigProto = tf.compat.v1.ConfigProto
Session = tf.compat.v1.Session
reset_default_graph = tf.compat.v1.reset_default_graph


def _keras_model_type() -> type[Any]:
    return tf.keras.Model  # type: ignore[no-any-return]


def _split_xy(data: Any) -> tuple[Any, Any]:
    """``(x, y)`` from an ``(x, y)`` pair, else ``(data, None)``."""
    if isinstance(data, tuple) and len(data) == 2:
        return data[0], data[1]
    return data, None


class TFBackend(BackendBase):
    """TensorFlow backend.

    Parameters
    ----------
    estimator : class, factory or instance
        A user estimator or a Keras model; a class/factory is instantiated here without
        arguments, as upstream.
    fine_tune : bool, default True
        Load weights from ``model_save_path`` before training when it exists (Keras).
    **kwargs
        See :class:`~sedna.backend.base.BackendBase`.
    """

    def __init__(self, estimator: Any, fine_tune: bool = True, **kwargs: Any) -> None:
        super().__init__(estimator=estimator, fine_tune=fine_tune, **kwargs)
        self.framework = "tensorflow"
        self._graph: Any = None
        self._sess: Any = None
        self.instantiate()

    # ------------------------------------------------------------------ TF1 graph / session
    @staticmethod
    def _init_cpu_session_config() -> Any:
        return ConfigProto(allow_soft_placement=True)

    @staticmethod
    def _init_gpu_session_config() -> Any:
        config = ConfigProto(log_device_placement=True, allow_soft_placement=True)
        config.gpu_options.per_process_gpu_memory_fraction = 0.7
        config.gpu_options.allow_growth = True
        return config

    @property
    def graph(self) -> Any:
        """The backend's ``tf.Graph`` (created on first access)."""
        if self._graph is None:
            self._graph = tf.Graph()
        return self._graph

    @property
    def sess(self) -> Any:
        """A ``tf.compat.v1.Session`` on :attr:`graph` (created on first access)."""
        if self._sess is None:
            config = (
                self._init_gpu_session_config()
                if self.use_cuda
                else self._init_cpu_session_config()
            )
            with self.graph.as_default():
                self._sess = Session(config=config)
        return self._sess

    # ---------------------------------------------------------------------------- helpers
    @property
    def _keras(self) -> bool:
        return isinstance(self.estimator, _keras_model_type())

    def _own(self, name: str) -> bool:
        return callable(getattr(self.estimator, name, None))

    @property
    def model_name(self) -> str:
        """As upstream (``.pb``), but ``.keras`` for a bare Keras model."""
        name = super().model_name
        if not self.default_name and self._keras:
            return name.rsplit(".", 1)[0] + ".keras"
        return name

    def _reset_graph(self) -> None:
        if not tf.executing_eagerly():
            reset_default_graph()

    # ------------------------------------------------------------------------ estimator API
    def train(self, train_data: Any, valid_data: Any = None, **kwargs: Any) -> Any:
        """Train: the estimator's ``train(train_data=, valid_data=)``, or Keras ``fit``.

        With ``fine_tune`` and an existing ``model_save_path``, :meth:`finetune` runs first.
        """
        self.instantiate()
        if self.fine_tune and FileOps.exists(self.model_save_path):
            self.finetune()
        self.has_load = True
        if self._own("train"):
            return self._call(("train",), train_data=train_data, valid_data=valid_data, **kwargs)
        x, y = _split_xy(train_data)
        options = {"verbose": 0, **kwargs}
        if valid_data is not None:
            options.setdefault("validation_data", valid_data)
        return self._call(("fit",), x, y, **options)

    def predict(self, data: Any, **kwargs: Any) -> Any:
        """Load the model on first use, then ``estimator.predict(data, **accepted kwargs)``."""
        if not self.has_load:
            self._reset_graph()
            self.load()
        if self._keras:
            kwargs = {"verbose": 0, **kwargs}
        return self._call(("predict",), data, **kwargs)

    def evaluate(self, data: Any, **kwargs: Any) -> Any:
        """Load the model on first use, then evaluate (Keras: ``data`` may be ``(x, y)``)."""
        if not self.has_load:
            self._reset_graph()
            self.load()
        if self._keras:
            x, y = _split_xy(data)
            return self._call(("evaluate",), x, y, **{"verbose": 0, **kwargs})
        return self._call(("evaluate",), data, **kwargs)

    def finetune(self) -> None:
        """Not supported for TensorFlow estimators (upstream: "todo")."""

    def load_weights(self) -> None:
        """``estimator.load_weights(model_save_path/model_name)`` when that file exists."""
        path = FileOps.join_path(self.model_save_path, self.model_name)
        if FileOps.exists(path):
            self._method("load_weights")(path)

    def get_weights(self) -> Any:
        """The estimator's weights (Keras models); upstream: "todo"."""
        return super().get_weights()

    def set_weights(self, weights: Any) -> None:
        """Set the estimator's weights (Keras models); upstream: "todo"."""
        super().set_weights(weights)

    def _load_local(self, path: str) -> Any:
        if self._own("load"):
            return super()._load_local(path)
        if self.estimator is None or self._keras:
            self.estimator = tf.keras.models.load_model(path)
            return self.estimator
        return None

    def model_info(
        self, model: str, relpath: str | None = None, result: Any = None
    ) -> list[dict[str, Any]]:
        """As the base, plus a ``ckpt`` entry (the model's directory) for a ``.pb`` model."""
        results = super().model_info(model, relpath=relpath, result=result)
        results[0]["format"] = str(results[0]["format"]).lower()
        if results[0]["format"] == "pb":
            ckpt = os.path.dirname(model)
            ckpt_url = FileOps.remove_path_prefix(ckpt, relpath) if relpath else ckpt
            results.append({"format": "ckpt", "url": ckpt_url, "metrics": result})
        return results


class KerasBackend(TFBackend):
    """Keras backend: :class:`TFBackend` whose weights travel as nested lists (upstream)."""

    def __init__(self, estimator: Any, fine_tune: bool = True, **kwargs: Any) -> None:
        super().__init__(estimator=estimator, fine_tune=fine_tune, **kwargs)
        self.framework = "keras"

    def set_session(self) -> None:
        """Make :attr:`sess` Keras's session (TF1 Keras only; a no-op on Keras 3)."""
        setter = getattr(tf.compat.v1.keras.backend, "set_session", None)
        if setter is None:
            _log.debug("Keras has no global session (Keras 3): set_session is a no-op")
            return
        setter(self.sess)

    def finetune(self) -> None:
        """Load weights from ``model_save_path`` (upstream)."""
        self.load_weights()

    def get_weights(self) -> list[Any]:
        """The model's weights as nested lists (upstream)."""
        return [np.asarray(w).tolist() for w in super().get_weights()]

    def set_weights(self, weights: Any) -> None:
        """Set the model's weights from nested lists or arrays (upstream)."""
        super().set_weights([np.array(w) for w in weights])
