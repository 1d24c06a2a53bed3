"""The backend port: what the core needs from a model runtime (ONNX Runtime, ...).

:class:`Backend` and :class:`BackendMetadata` live in the SDK (:mod:`sedna.serving.backend`,
shared with ``BigModelService``) and are re-exported here; loaders are chosen by file suffix,
directory marker file or format name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sedna.serving.backend import Backend, BackendMetadata
from sedna.serving.errors import BackendError

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


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """How a backend's runtime runs a model (used by ONNX Runtime; others ignore them).

    Attributes
    ----------
    intra_op_threads
        Threads inside one operator; 0 lets the runtime choose (ONNX Runtime: one per
        physical core).
    inter_op_threads
        Threads running independent operators in parallel; 0 lets the runtime choose.
    spinning
        Let idle runtime threads spin-wait for work (ONNX Runtime's default): lower latency
        on a dedicated host, CPU taken from the server's own threads on a shared one.
    """

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    spinning: bool = True


BackendLoader = Callable[[Path, RuntimeOptions], Backend]
"""``load(path, options) -> Backend``: reads a model file and returns it ready to run."""


class ModelLoader(Protocol):
    """What the repository loads models with: :func:`load_backend`, or a test double."""

    def __call__(self, path: Path, *, model_format: str | None = None) -> Backend:
        """Load the model file or directory at ``path``.

        Parameters
        ----------
        path
            The local model file or directory (a downloaded copy for remote models).
        model_format
            The model's format name, if configured (see :func:`load_backend`).
        """
        ...


_LOADERS: dict[str, BackendLoader] = {}
_DIRECTORY_LOADERS: dict[str, BackendLoader] = {}
_FORMATS: dict[str, BackendLoader] = {}
_MAX_DEPTH = 3
"""How deep :func:`load_backend` looks for the model inside nested directories."""


def register_backend(suffix: str, loader: BackendLoader) -> None:
    """Make :func:`load_backend` use ``loader`` for files ending in ``suffix`` (e.g. ``.onnx``)."""
    _LOADERS[suffix.lower()] = loader


def register_directory_backend(marker: str, loader: BackendLoader) -> None:
    """Make :func:`load_backend` use ``loader`` for directories holding the file ``marker``.

    Parameters
    ----------
    marker
        A file name that identifies the format, e.g. ``saved_model.pb`` for a SavedModel.
    loader
        Called with the directory.
    """
    _DIRECTORY_LOADERS[marker] = loader


def register_format(name: str, loader: BackendLoader) -> None:
    """Make ``load_backend(path, model_format=name)`` use ``loader`` (names are case-blind)."""
    _FORMATS[name.lower()] = loader


def model_formats() -> tuple[str, ...]:
    """The format names :func:`load_backend` accepts as ``model_format``, sorted."""
    return tuple(sorted(_FORMATS))


def _model_files(directory: Path) -> tuple[list[Path], list[Path]]:
    """The files with a registered suffix and the subdirectories of ``directory``."""
    files, folders = [], []
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            folders.append(entry)
        elif entry.is_file() and entry.suffix.lower() in _LOADERS:
            files.append(entry)
    return files, folders


def _load_directory(
    directory: Path, model_format: str | None, options: RuntimeOptions, depth: int = 0
) -> Backend:
    for marker, loader in _DIRECTORY_LOADERS.items():
        if (directory / marker).is_file():
            return loader(directory, options)
    files, folders = _model_files(directory)
    if len(files) == 1:
        return _load_file(files[0], model_format, options)
    if not files and len(folders) == 1 and depth < _MAX_DEPTH:
        return _load_directory(folders[0], model_format, options, depth + 1)
    markers = ", ".join(sorted(_DIRECTORY_LOADERS)) or "none"
    suffixes = ", ".join(sorted(_LOADERS)) or "none"
    found = (
        f"it holds several model files ({', '.join(f.name for f in files)})"
        if files
        else "it holds no model"
    )
    raise BackendError(
        f"cannot tell which model to load from directory {str(directory)!r}: {found}; expected "
        f"a directory with {markers}, or one file ending in {suffixes} (or one subdirectory "
        "holding either)"
    )


def _load_file(path: Path, model_format: str | None, options: RuntimeOptions) -> Backend:
    loader = _LOADERS.get(path.suffix.lower())
    if loader is None and model_format:
        loader = _FORMATS.get(model_format.strip().lower())
        if loader is None:
            known = ", ".join(model_formats()) or "none"
            raise BackendError(
                f"no backend for model file {path.name!r} of format {model_format!r} (known "
                f"formats: {known})"
            )
    if loader is None:
        known = ", ".join(sorted(_LOADERS)) or "none"
        raise BackendError(f"no backend for model file {path.name!r} (known suffixes: {known})")
    if not path.is_file():
        raise BackendError(f"model file {str(path)!r} does not exist")
    return loader(path, options)


def load_backend(
    path: Path, *, model_format: str | None = None, options: RuntimeOptions | None = None
) -> Backend:
    """Load the model at ``path`` with the backend registered for it.

    A file is loaded by the backend registered for its suffix (:func:`register_backend`), or,
    when no backend claims the suffix, for ``model_format``. A directory is loaded by the
    backend whose marker file it holds (:func:`register_directory_backend`, e.g.
    ``saved_model.pb``); otherwise, when it holds exactly one file with a registered suffix,
    that file; otherwise, when it holds no such file and a single subdirectory, that
    subdirectory, the same way (e.g. an unpacked archive with one top-level folder).

    Parameters
    ----------
    path
        A local model file or directory.
    model_format
        A Model resource's ``format`` (e.g. ``onnx``, ``pt``, ``h5``; see
        :func:`model_formats`): picks the backend of a file whose suffix does not (a URL
        without one, say). The suffix or directory layout wins when both speak.
    options
        Runtime threads and spinning (:class:`RuntimeOptions`); the runtime's defaults
        when None.

    Returns
    -------
    Backend
        The loaded model.

    Raises
    ------
    BackendError
        An unknown suffix (and format), a missing file, a directory without exactly one
        model, or the backend failed to load it.
    """
    resolved = options if options is not None else RuntimeOptions()
    if path.is_dir():
        return _load_directory(path, model_format, resolved)
    return _load_file(path, model_format, resolved)
