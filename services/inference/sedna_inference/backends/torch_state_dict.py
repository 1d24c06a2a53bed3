"""PyTorch state dicts: weights from ``torch.save(model.state_dict(), ...)`` + a model class.

A ``.pt``/``.pth`` file that is not a TorchScript archive is read as a state dict, with
``torch.load(path, map_location="cpu", weights_only=True)`` (tensors and plain containers
only: no pickled object is ever rebuilt). Its sidecar (see
:mod:`~sedna_inference.backends.torchscript`) then names the class to load it into::

    {"model_class": "net:Net", "model_file": "net.py", "model_kwargs": {"hidden": 8},
     "inputs":  [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
     "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]}

- ``model_class``: ``"module.path:ClassName"``, imported with :func:`importlib.import_module`;
  with ``model_file``, the class's name in that file (``"ClassName"``, or
  ``"<file stem>:ClassName"``).
- ``model_file`` (optional): a Python file, relative to the sidecar's directory and inside it,
  imported by path under a fresh module name at every load (so a model directory or archive
  is self-contained, and a reload runs the new code).
- ``model_kwargs`` (optional): a JSON object passed to the class as keyword arguments.

The file holds the state dict itself, or a dict with it under ``"state_dict"`` (a training
checkpoint); it is loaded with ``load_state_dict(strict=True)``, then the module is put in
eval mode and runs as a TorchScript module does (:class:`TorchModuleBackend`), with platform
``pytorch``.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import re
import sys
from collections.abc import Iterable, Mapping
from functools import reduce
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Final

from sedna.serving.errors import BackendError
from sedna_inference.backends.base import RuntimeOptions
from sedna_inference.backends.torchscript import (
    Sidecar,
    TorchModuleBackend,
    TorchScriptBackend,
    first_line,
    import_torch,
    is_torchscript,
    read_sidecar,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "MODEL_CLASS",
    "MODEL_FILE",
    "MODEL_KWARGS",
    "StateDictBackend",
    "load_pytorch",
    "load_state_dict_model",
]

MODEL_CLASS: Final = "model_class"
MODEL_FILE: Final = "model_file"
MODEL_KWARGS: Final = "model_kwargs"
STATE_DICT_KEY: Final = "state_dict"
"""A checkpoint dict's key holding the state dict."""
_STATE_DICT_FIELDS: Final = (MODEL_CLASS, MODEL_FILE, MODEL_KWARGS)
_LISTED_KEYS: Final = 5
"""How many missing or unexpected keys a mismatch error lists."""
_module_ids = itertools.count(1)


def _field(sidecar: Sidecar, name: str) -> str:
    """``net.pt.json: 'model_class'``: where an error message points."""
    return f"{sidecar.path.name}: {name!r}"


def _model_file(sidecar: Sidecar) -> Path | None:
    raw = sidecar.document.get(MODEL_FILE)
    if raw is None:
        return None
    where = _field(sidecar, MODEL_FILE)
    if not isinstance(raw, str) or not raw.endswith(".py"):
        raise BackendError(f"{where} must be the name of a .py file, got {raw!r}")
    relative = PurePath(raw)
    if relative.is_absolute() or ".." in relative.parts:
        raise BackendError(
            f"{where} must be a path relative to the sidecar's directory, inside it: {raw!r}"
        )
    path = sidecar.path.parent / relative
    if not path.is_file():
        raise BackendError(
            f"{where}: no file {str(path)!r} (next to the sidecar; the model file and its "
            "sidecar are all that is downloaded of a remote .pt/.pth model: serve a directory, "
            "an archive or an S3 prefix holding the Python file too)"
        )
    return path


def _import_file(path: Path, where: str) -> Any:
    """Import the Python file ``path`` under a new, unique module name."""
    stem = re.sub(r"\W", "_", path.stem)
    name = f"_sedna_model_{next(_module_ids)}_{stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise BackendError(f"{where}: cannot import {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import would: dataclasses, typing and torch look it up
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise BackendError(
            f"{where}: importing {path.name!r} failed: {type(exc).__name__}: {first_line(exc)}"
        ) from exc
    return module


def _model_class(sidecar: Sidecar, torch_module: Any) -> type[torch.nn.Module]:
    raw = sidecar.document.get(MODEL_CLASS)
    where = _field(sidecar, MODEL_CLASS)
    file = _model_file(sidecar)
    shape = (
        "'ClassName' (a class in 'model_file')"
        if file is not None
        else "'module.path:ClassName' (or a class name with 'model_file')"
    )
    if not isinstance(raw, str) or not raw.strip():
        raise BackendError(f"{where} must be a string, {shape}; got {raw!r}")
    module_name, colon, qualname = raw.strip().rpartition(":")
    if not qualname or (colon and not module_name):
        raise BackendError(f"{where} must be {shape}; got {raw!r}")
    if file is not None:
        if module_name and module_name != file.stem:
            raise BackendError(
                f"{where}: {raw!r} names module {module_name!r}, but 'model_file' is "
                f"{file.name!r}: give the class name alone, or {file.stem}:{qualname}"
            )
        module = _import_file(file, _field(sidecar, MODEL_FILE))
        source = f"{file.name!r}"
    elif not module_name:
        raise BackendError(f"{where} must be {shape}; got {raw!r}")
    else:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise BackendError(
                f"{where}: cannot import module {module_name!r}: {type(exc).__name__}: "
                f"{first_line(exc)}"
            ) from exc
        source = f"module {module_name!r}"
    try:
        cls = reduce(getattr, qualname.split("."), module)
    except AttributeError as exc:
        raise BackendError(f"{where}: {source} has no class {qualname!r}") from exc
    if not isinstance(cls, type) or not issubclass(cls, torch_module.nn.Module):
        kind = "a class" if isinstance(cls, type) else f"a {type(cls).__name__}"
        raise BackendError(f"{where}: {raw!r} is {kind}, not a torch.nn.Module subclass")
    return cls


def _model_kwargs(sidecar: Sidecar) -> dict[str, Any]:
    raw = sidecar.document.get(MODEL_KWARGS, {})
    if not isinstance(raw, dict):
        raise BackendError(
            f"{_field(sidecar, MODEL_KWARGS)} must be a JSON object of the class's keyword "
            f"arguments, got {type(raw).__name__}"
        )
    return raw


def _read_weights(path: Path, torch: Any) -> Mapping[str, Any]:
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError...
        lines = [line.strip() for line in str(exc).splitlines()]
        reason = next(
            (
                line.removeprefix("WeightsUnpickler error: ").split(". Please")[0]
                for line in lines
                if line.startswith("WeightsUnpickler error:")
            ),
            first_line(exc),
        )
        raise BackendError(
            f"torch cannot load {path.name!r} as a state dict (weights_only=True: tensors and "
            f"plain containers only; save model.state_dict(), not the model): {reason}"
        ) from exc
    if isinstance(loaded, Mapping) and isinstance(loaded.get(STATE_DICT_KEY), Mapping):
        loaded = loaded[STATE_DICT_KEY]
    if not isinstance(loaded, Mapping) or not all(isinstance(key, str) for key in loaded):
        raise BackendError(
            f"{path.name!r} holds {type(loaded).__name__}, not a state dict (a dict of names to "
            f"tensors, or a dict with one under {STATE_DICT_KEY!r})"
        )
    return loaded


def _some(keys: Iterable[str]) -> str:
    ordered = sorted(keys)
    listed = ", ".join(ordered[:_LISTED_KEYS])
    more = len(ordered) - _LISTED_KEYS
    return f"{listed} (+{more} more)" if more > 0 else listed


def _load_weights(
    module: torch.nn.Module, weights: Mapping[str, Any], path: Path, sidecar: Sidecar
) -> None:
    expected = set(module.state_dict())
    missing, unexpected = expected - set(weights), set(weights) - expected
    fault = f"{_field(sidecar, MODEL_CLASS)} ({type(module).__name__}"
    fault += f", {MODEL_KWARGS!r})" if MODEL_KWARGS in sidecar.document else ")"
    if missing or unexpected:
        found = [f"missing keys: {_some(missing)}"] if missing else []
        found += [f"unexpected keys: {_some(unexpected)}"] if unexpected else []
        raise BackendError(
            f"{fault} does not match the state dict in {path.name!r}: {'; '.join(found)}"
        )
    try:
        module.load_state_dict(weights, strict=True)
    except Exception as exc:  # size mismatches
        detail = " ".join(str(exc).split()).removeprefix("Error(s) in loading state_dict for ")
        raise BackendError(
            f"{fault} does not match the state dict in {path.name!r}: {detail}"
        ) from exc


class StateDictBackend(TorchModuleBackend):
    """A state dict loaded into the sidecar's ``model_class`` on the CPU, in eval mode.

    Parameters
    ----------
    path
        The ``.pt``/``.pth`` file written by ``torch.save``.
    sidecar
        Its sidecar, when already read: inputs, outputs, ``model_class`` and the optional
        ``model_file`` and ``model_kwargs``.
    """

    def __init__(self, path: Path, sidecar: Sidecar | None = None) -> None:
        sidecar = sidecar if sidecar is not None else read_sidecar(path)
        if MODEL_CLASS not in sidecar.document:
            raise BackendError(_missing_class(path, sidecar))
        torch = import_torch()
        kwargs = _model_kwargs(sidecar)
        cls = _model_class(sidecar, torch)
        weights = _read_weights(path, torch)
        try:
            module = cls(**kwargs)
        except Exception as exc:
            raise BackendError(
                f"{_field(sidecar, MODEL_CLASS)}: {cls.__qualname__}(**{MODEL_KWARGS}) "
                f"failed: {type(exc).__name__}: {first_line(exc)}"
            ) from exc
        _load_weights(module, weights, path, sidecar)
        module.eval()
        super().__init__(torch, module, "pytorch", sidecar)


def _missing_class(path: Path, sidecar: Sidecar) -> str:
    return (
        f"{path.name!r} is not a TorchScript archive, so it is loaded as a state dict, and its "
        f"sidecar {sidecar.path.name!r} must name the model class: "
        '"model_class": "module.path:ClassName" (or "ClassName" with "model_file": "net.py")'
    )


def load_state_dict_model(path: Path, options: RuntimeOptions | None = None) -> StateDictBackend:
    """:data:`~sedna_inference.backends.base.BackendLoader` for state dicts only (no options)."""
    return StateDictBackend(path)


def load_pytorch(path: Path, options: RuntimeOptions | None = None) -> TorchModuleBackend:
    """:data:`~sedna_inference.backends.base.BackendLoader` for ``.pt``/``.pth`` files.

    A TorchScript archive is loaded by :class:`TorchScriptBackend` (its sidecar must then not
    set ``model_class``, ``model_file`` or ``model_kwargs``); any other file, as a state dict,
    by :class:`StateDictBackend`. ``options`` are ONNX Runtime's: torch ignores them.
    """
    sidecar = read_sidecar(path)
    if is_torchscript(path):
        for name in _STATE_DICT_FIELDS:
            if name in sidecar.document:
                raise BackendError(
                    f"{_field(sidecar, name)} is for state dicts, but {path.name!r} is a "
                    "TorchScript archive, which carries its own code: remove the field (or "
                    "save the state dict: torch.save(model.state_dict(), path))"
                )
        return TorchScriptBackend(path, sidecar)
    return StateDictBackend(path, sidecar)
