"""Framework backends and :func:`set_backend` (upstream ``sedna.backend``).

``BACKEND_TYPE`` (else the config's ``backend_type``; ``BaseConfig``'s default is
``TENSORFLOW``, as upstream) picks the wrapper around the user's estimator:

========================  =====================================================
``TENSORFLOW``            :class:`~sedna.backend.tensorflow.TFBackend`
``KERAS``                 :class:`~sedna.backend.tensorflow.KerasBackend`
``TORCH``                 :class:`~sedna.backend.torch.TorchBackend`
``ONNX`` (ours)           :class:`~sedna.backend.onnx.ONNXBackend`
anything else             :class:`~sedna.backend.base.BackendBase` ("use itself", with
                          upstream's warning), e.g. ``SKLEARN``
========================  =====================================================

Importing :mod:`sedna.backend` imports no framework; the chosen backend's module (and so
``torch``, ``tensorflow`` or ``onnxruntime``) is imported by :func:`set_backend`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from sedna.backend.base import BackendBase, is_factory
from sedna.common.config import BaseConfig, ConfigSerializable

if TYPE_CHECKING:
    from sedna.backend.onnx import ONNXBackend
    from sedna.backend.tensorflow import KerasBackend, TFBackend
    from sedna.backend.torch import TorchBackend

__all__ = [
    "BACKEND_TYPES",
    "BackendBase",
    "KerasBackend",
    "ONNXBackend",
    "TFBackend",
    "TorchBackend",
    "is_factory",
    "set_backend",
]

BACKEND_TYPES: Final[dict[str, tuple[str, str]]] = {
    "TENSORFLOW": ("sedna.backend.tensorflow", "TFBackend"),
    "KERAS": ("sedna.backend.tensorflow", "KerasBackend"),
    "TORCH": ("sedna.backend.torch", "TorchBackend"),
    "ONNX": ("sedna.backend.onnx", "ONNXBackend"),
}
"""``BACKEND_TYPE`` value → (module, class) of the backends this SDK provides."""

_LAZY: Final = {cls: module for module, cls in BACKEND_TYPES.values()}


def __getattr__(name: str) -> Any:
    """Import a framework backend class on first access (``from sedna.backend import X``)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib  # noqa: PLC0415

    return getattr(importlib.import_module(module), name)


def _config_get(config: Any, name: str) -> Any:
    if isinstance(config, (Mapping, ConfigSerializable)):
        return config.get(name)
    return getattr(config, name, None)


def set_backend(estimator: Any = None, config: Any = None) -> BackendBase | None:
    """Wrap ``estimator`` in the backend ``BACKEND_TYPE`` names (upstream "Create Trainer").

    Parameters
    ----------
    estimator : class, factory or instance, optional
        The user's model. None gives None, except with ``BACKEND_TYPE=ONNX``, whose backend
        runs the ``.onnx`` model itself.
    config : BaseConfig or Mapping, optional
        Where ``backend_type``, ``device_category``, ``model_url``, ``base_model_url`` and
        ``model_name`` are read; :class:`~sedna.common.config.BaseConfig` by default.
        ``BACKEND_TYPE`` and ``DEVICE_CATEGORY`` in the environment win, as upstream.

    Returns
    -------
    BackendBase or None
        The backend, built with ``use_cuda`` (``CUDA_VISIBLE_DEVICES`` is set; then
        ``DEVICE_CATEGORY`` becomes ``GPU`` in the environment, as upstream),
        ``model_save_path`` (``base_model_url`` or ``model_url``), ``model_name`` and
        ``model_save_url`` (``model_url``).

    Raises
    ------
    ImportError
        If the framework of an explicitly chosen backend is not installed (the message names
        the extra to install). When ``BACKEND_TYPE`` is unset and the TensorFlow default is
        not installed, the estimator is used as is, with a warning.

    Warns
    -----
    UserWarning
        ``"<TYPE> Not Support yet, use itself"`` for an unknown type (upstream).
    """
    cfg = BaseConfig() if config is None else config
    explicit = "BACKEND_TYPE" in os.environ or _config_get(cfg, "backend_type") != "TENSORFLOW"
    backend_type = str(
        os.environ.get("BACKEND_TYPE") or _config_get(cfg, "backend_type") or "UNKNOWN"
    ).upper()
    if estimator is None and backend_type != "ONNX":
        return None
    device_category = os.environ.get("DEVICE_CATEGORY") or _config_get(cfg, "device_category")
    use_cuda = "CUDA_VISIBLE_DEVICES" in os.environ
    if use_cuda:
        os.environ["DEVICE_CATEGORY"] = "GPU"
    else:
        os.environ["DEVICE_CATEGORY"] = str(device_category or "CPU")

    backend_cls: type[BackendBase] = BackendBase
    target = BACKEND_TYPES.get(backend_type)
    if target is None:
        warnings.warn(f"{backend_type} Not Support yet, use itself", stacklevel=2)
    else:
        import importlib  # noqa: PLC0415

        module_name, class_name = target
        try:
            backend_cls = getattr(importlib.import_module(module_name), class_name)
        except ImportError as err:
            if explicit:
                extra = {"TENSORFLOW": "tensorflow", "KERAS": "tensorflow"}.get(
                    backend_type, backend_type.lower()
                )
                raise ImportError(
                    f"BACKEND_TYPE={backend_type} needs {err.name or 'its framework'}: "
                    f"pip install 'sedna[{extra}]'"
                ) from err
            warnings.warn(
                f"BACKEND_TYPE is unset and the default TENSORFLOW backend is not installed "
                f"({err}); use itself",
                stacklevel=2,
            )

    model_url = _config_get(cfg, "model_url")
    return backend_cls(
        estimator=estimator,
        use_cuda=use_cuda,
        model_save_path=_config_get(cfg, "base_model_url") or model_url,
        model_name=_config_get(cfg, "model_name"),
        model_save_url=model_url,
    )
