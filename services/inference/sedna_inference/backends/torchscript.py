"""PyTorch backend: TorchScript models (``torch.jit.save``) on the CPU.

TorchScript carries no static input/output shapes, so the tensor metadata comes from a
sidecar JSON file next to the model, named after it plus ``.json`` (``model.pt`` →
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
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from sedna.serving.errors import BackendError
from sedna.serving.tensors import DATATYPE_TO_NUMPY, DYNAMIC, TensorSpec, datatype_of
from sedna_inference.backends.base import BackendMetadata

if TYPE_CHECKING:
    import torch

__all__ = ["SIDECAR_SUFFIX", "TorchScriptBackend", "load_torchscript", "sidecar_path"]

SIDECAR_SUFFIX: Final = ".json"
"""Appended to the model file's name to find its metadata sidecar."""

_UNSUPPORTED: Final = frozenset({"BYTES"})


def sidecar_path(model: Path) -> Path:
    """Return the metadata sidecar of ``model`` (``model.pt`` → ``model.pt.json``)."""
    return model.with_name(model.name + SIDECAR_SUFFIX)


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


def read_sidecar(model: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Read the inputs and outputs declared in ``model``'s sidecar JSON.

    Raises
    ------
    BackendError
        The sidecar is missing or malformed; the message names the file.
    """
    path = sidecar_path(model)
    if not path.is_file():
        raise BackendError(
            f"TorchScript model {model.name!r} needs a metadata file {str(path)!r}, named "
            "after the model plus '.json' (a remote model's comes from its URL plus '.json'): "
            '{"inputs": [{"name", "datatype", "shape"}...], "outputs": [...]}'
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read {str(path)!r}: {exc}") from exc
    if not isinstance(document, dict):
        raise BackendError(f"{path.name}: expected a JSON object with 'inputs' and 'outputs'")
    return _specs(document, "inputs", path.name), _specs(document, "outputs", path.name)


def _import_torch() -> Any:
    try:
        import torch  # noqa: PLC0415
    except ImportError as exc:
        raise BackendError(
            "TorchScript models (.pt, .pth) need PyTorch: pip install 'sedna[torch]'"
        ) from exc
    return torch


class TorchScriptBackend:
    """A TorchScript module loaded with ``torch.jit.load`` on the CPU, in eval mode.

    Parameters
    ----------
    path
        The ``.pt``/``.pth`` file; its sidecar ``<path>.json`` declares inputs and outputs.
    """

    def __init__(self, path: Path) -> None:
        inputs, outputs = read_sidecar(path)
        self._torch = _import_torch()
        try:
            with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; it still works
                warnings.simplefilter("ignore", DeprecationWarning)
                module: torch.jit.ScriptModule = self._torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # torch raises RuntimeError and its own types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"torch cannot load {path.name!r}: {first}") from exc
        module.eval()
        self._module = module
        self._metadata = BackendMetadata(
            platform="pytorch_libtorch", inputs=inputs, outputs=outputs
        )

    def metadata(self) -> BackendMetadata:
        """Return the platform (``pytorch_libtorch``) and the sidecar's inputs and outputs."""
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
        with torch.inference_mode():
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


def load_torchscript(path: Path) -> TorchScriptBackend:
    """:data:`~sedna_inference.backends.base.BackendLoader` for ``.pt``/``.pth`` files."""
    return TorchScriptBackend(path)
