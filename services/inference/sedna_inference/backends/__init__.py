"""Model runtimes behind the :class:`~sedna_inference.backends.base.Backend` port."""

from __future__ import annotations

from sedna_inference.backends.base import (
    Backend,
    BackendLoader,
    BackendMetadata,
    load_backend,
    register_backend,
)
from sedna_inference.backends.onnx import load_onnx
from sedna_inference.backends.torchscript import load_torchscript

__all__ = ["Backend", "BackendLoader", "BackendMetadata", "load_backend", "register_backend"]

register_backend(".onnx", load_onnx)
register_backend(".pt", load_torchscript)
register_backend(".pth", load_torchscript)
