"""Model runtimes behind the :class:`~sedna_inference.backends.base.Backend` port.

| Model | Picked by | Backend |
|---|---|---|
| ONNX | ``.onnx``; format ``onnx`` | ONNX Runtime (CPU) |
| PyTorch: TorchScript, or state dict + model class | ``.pt``, ``.pth``; formats ``pt``, ``pth``, ``torchscript``, ``pytorch`` | PyTorch (CPU) |
| SavedModel | a directory holding ``saved_model.pb`` (or that file); formats ``savedmodel``, ``saved_model``, ``pb``, ``tensorflow``, ``tf`` | TensorFlow (CPU) |
| Keras | ``.keras``, ``.h5``, ``.hdf5``; formats ``keras``, ``h5``, ``hdf5`` | Keras 3 on TensorFlow (CPU) |

Runtimes are imported only when a model of theirs is loaded.
"""  # noqa: E501

from __future__ import annotations

from sedna_inference.backends.base import (
    Backend,
    BackendLoader,
    BackendMetadata,
    ModelLoader,
    RuntimeOptions,
    load_backend,
    model_formats,
    register_backend,
    register_directory_backend,
    register_format,
)
from sedna_inference.backends.keras_file import load_keras
from sedna_inference.backends.onnx import load_onnx
from sedna_inference.backends.savedmodel import SAVED_MODEL_MARKER, load_pb, load_saved_model
from sedna_inference.backends.torch_state_dict import load_pytorch

__all__ = [
    "Backend",
    "BackendLoader",
    "BackendMetadata",
    "ModelLoader",
    "RuntimeOptions",
    "load_backend",
    "model_formats",
    "register_backend",
    "register_directory_backend",
    "register_format",
]

register_backend(".onnx", load_onnx)
register_backend(".pt", load_pytorch)
register_backend(".pth", load_pytorch)
register_backend(".pb", load_pb)
register_backend(".keras", load_keras)
register_backend(".h5", load_keras)
register_backend(".hdf5", load_keras)
register_directory_backend(SAVED_MODEL_MARKER, load_saved_model)

for _name in ("onnx",):
    register_format(_name, load_onnx)
for _name in ("pt", "pth", "torchscript", "pytorch"):
    register_format(_name, load_pytorch)
for _name in ("savedmodel", "saved_model", "pb", "tensorflow", "tf"):
    register_format(_name, load_saved_model)
for _name in ("keras", "h5", "hdf5"):
    register_format(_name, load_keras)
