"""PyTorch backends' common part (sidecar, inference), and TorchScript models on the CPU.

A ``.pt``/``.pth`` file is a TorchScript archive (``torch.jit.save``; this module) or a state
dict plus a model class (:mod:`sedna_inference.backends.torch_state_dict`, which also picks
between the two). Neither carries static input/output shapes, so the tensor metadata comes
from a sidecar JSON file next to the model, named after it plus ``.json`` (``model.pt`` →
``model.pt.json``; for an ``s3://`` or ``http(s)://`` model, the source downloads
``<url>.json`` next to the cached copy)::

    {"inputs":  [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
     "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]}

Inputs are passed to ``forward`` positionally in the declared order; ``forward`` returns a
tensor (one declared output) or a tuple/list of tensors (one per declared output, in order).
``torch`` is imported only when such a model is loaded.
"""

from __future__ import annotations

import json
import threading
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from sedna.serving.errors import BackendError
from sedna.serving.tensors import DATATYPE_TO_NUMPY, DYNAMIC, TensorSpec, datatype_of
from sedna_inference.backends.base import BackendMetadata, RuntimeOptions

__all__ = [
    "SIDECAR_SUFFIX",
    "Sidecar",
    "TorchModuleBackend",
    "TorchScriptBackend",
    "first_line",
    "import_torch",
    "is_torchscript",
    "load_torchscript",
    "read_sidecar",
    "sidecar_path",
]

SIDECAR_SUFFIX: Final = ".json"
"""Appended to the model file's name to find its metadata sidecar."""

_UNSUPPORTED: Final = frozenset({"BYTES"})


def sidecar_path(model: Path) -> Path:
    """Return the metadata sidecar of ``model`` (``model.pt`` → ``model.pt.json``)."""
    return model.with_name(model.name + SIDECAR_SUFFIX)


@dataclass(frozen=True, slots=True)
class Sidecar:
    """A model's metadata sidecar: its declared tensors, and the whole JSON object."""

    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    document: Mapping[str, Any]
    """Every field, for those a backend reads itself (a state dict's ``model_class``...)."""


def _tensor_spec(raw: object, where: str) -> TensorSpec:
    if not isinstance(raw, dict):
        raise BackendError(f"{where}: expected an object with name, datatype and shape")
    name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
    if not isinstance(name, str) or not name:
        raise BackendError(f"{where}: 'name' must be a non-empty string")
    if not isinstance(datatype, str) or datatype not in DATATYPE_TO_NUMPY:
        raise BackendError(f"{where} ({name!r}): unknown datatype {datatype!r}")
    if datatype in _UNSUPPORTED:
        raise BackendError(f"{where} ({name!r}): datatype {datatype} is not supported by torch")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and (d == DYNAMIC or d >= 0) for d in shape
    ):
        raise BackendError(f"{where} ({name!r}): 'shape' must be a list of ints (-1: any size)")
    return TensorSpec(name=name, datatype=datatype, shape=tuple(shape))


def _specs(document: Mapping[str, Any], key: str, source: str) -> tuple[TensorSpec, ...]:
    raw = document.get(key)
    if not isinstance(raw, list) or not raw:
        raise BackendError(f"{source}: {key!r} must be a non-empty list")
    specs = tuple(_tensor_spec(item, f"{source}: {key}[{i}]") for i, item in enumerate(raw))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise BackendError(f"{source}: duplicate names in {key!r}")
    return specs


def read_sidecar(model: Path) -> Sidecar:
    """Read ``model``'s sidecar JSON: its declared inputs and outputs, and its other fields.

    Raises
    ------
    BackendError
        The sidecar is missing or malformed; the message names the file.
    """
    path = sidecar_path(model)
    if not path.is_file():
        raise BackendError(
            f"PyTorch model {model.name!r} needs a metadata file {str(path)!r}, named "
            "after the model plus '.json' (a remote model's comes from its URL plus '.json'): "
            '{"inputs": [{"name", "datatype", "shape"}...], "outputs": [...]}'
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read {str(path)!r}: {exc}") from exc
    if not isinstance(document, dict):
        raise BackendError(f"{path.name}: expected a JSON object with 'inputs' and 'outputs'")
    return Sidecar(
        path=path,
        inputs=_specs(document, "inputs", path.name),
        outputs=_specs(document, "outputs", path.name),
        document=document,
    )


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive: a zip holding ``<name>/constants.pkl``.

    ``torch.save`` writes a zip too (or, in the legacy format, a pickle), but without
    ``constants.pkl``; this is how ``torch.load`` tells them apart. Reads no pickle.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return any(
                name.count("/") == 1 and name.endswith("/constants.pkl")
                for name in archive.namelist()
            )
    except (OSError, zipfile.BadZipFile):
        return False


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def import_torch() -> Any:
    """Import ``torch``, or raise a :class:`BackendError` saying how to install it."""
    try:
        import torch  # noqa: PLC0415
    except ImportError as exc:
        raise BackendError(
            "PyTorch models (.pt, .pth) need PyTorch: pip install 'sedna[torch]'"
        ) from exc
    return torch


class TorchModuleBackend:
    """A loaded torch module (in eval mode, on the CPU) called with the sidecar's tensors.

    ``infer`` runs under ``torch.inference_mode()``, one call at a time.

    Parameters
    ----------
    torch
        The ``torch`` module (imported by the subclass, with :func:`import_torch`).
    module
        The callable model: a ``ScriptModule`` or an ``nn.Module``.
    platform
        The model's OIP platform name.
    sidecar
        The model's sidecar: its inputs and outputs are the model's.
    """

    def __init__(
        self, torch: Any, module: Callable[..., object], platform: str, sidecar: Sidecar
    ) -> None:
        self._torch = torch
        self._module = module
        self._lock = threading.Lock()
        self._metadata = BackendMetadata(
            platform=platform, inputs=sidecar.inputs, outputs=sidecar.outputs
        )

    def metadata(self) -> BackendMetadata:
        """Return the platform and the sidecar's inputs and outputs."""
        return self._metadata

    def infer(
        self, inputs: Mapping[str, npt.NDArray[np.generic]]
    ) -> dict[str, npt.NDArray[np.generic]]:
        """Call ``forward`` with the inputs in declared order; map results to output names."""
        torch = self._torch
        args = []
        for spec in self._metadata.inputs:
            array = np.ascontiguousarray(inputs[spec.name])
            if not array.flags.writeable:  # torch.from_numpy warns on read-only buffers
                array = array.copy()
            args.append(torch.from_numpy(array))
        with self._lock, torch.inference_mode():
            result = self._module(*args)
        specs = self._metadata.outputs
        values = [result] if isinstance(result, torch.Tensor) else result
        if not isinstance(values, (tuple, list)) or len(values) != len(specs):
            raise BackendError(
                f"model returned {_describe(result, torch)}, expected {len(specs)} tensor(s) "
                f"({', '.join(repr(s.name) for s in specs)})"
            )
        outputs: dict[str, npt.NDArray[np.generic]] = {}
        for spec, value in zip(specs, values, strict=True):
            if not isinstance(value, torch.Tensor):
                raise BackendError(f"output {spec.name!r} is {type(value).__name__}, not a tensor")
            array = value.detach().cpu().numpy()
            if datatype_of(array.dtype) != spec.datatype:
                raise BackendError(
                    f"output {spec.name!r} is {datatype_of(array.dtype)}, declared {spec.datatype}"
                )
            outputs[spec.name] = array
        return outputs


def _describe(result: object, torch: Any) -> str:
    if isinstance(result, (tuple, list)):
        return f"{len(result)} value(s)"
    return "a tensor" if isinstance(result, torch.Tensor) else type(result).__name__


class TorchScriptBackend(TorchModuleBackend):
    """A TorchScript module loaded with ``torch.jit.load`` on the CPU, in eval mode.

    Parameters
    ----------
    path
        The ``.pt``/``.pth`` file; its sidecar ``<path>.json`` declares inputs and outputs.
    sidecar
        That sidecar, when already read.
    """

    def __init__(self, path: Path, sidecar: Sidecar | None = None) -> None:
        sidecar = sidecar if sidecar is not None else read_sidecar(path)
        torch = import_torch()
        try:
            with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; it still works
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # torch raises RuntimeError and its own types
            raise BackendError(f"torch cannot load {path.name!r}: {first_line(exc)}") from exc
        module.eval()
        super().__init__(torch, module, "pytorch_libtorch", sidecar)


def load_torchscript(path: Path, options: RuntimeOptions | None = None) -> TorchScriptBackend:
    """:data:`~sedna_inference.backends.base.BackendLoader` for TorchScript files only.

    :func:`~sedna_inference.backends.torch_state_dict.load_pytorch` (registered for
    ``.pt``/``.pth``) takes state dicts too.
    """
    return TorchScriptBackend(path)
