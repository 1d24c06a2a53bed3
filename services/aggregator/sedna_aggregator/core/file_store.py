"""``LocalFileRoundStore``: the checkpoint port on a local directory (npz + JSON, no pickle).

Layout, per session (the id percent-encoded into one directory name)::

    <root>/session-<quoted id>/
        checkpoint.json          the manifest: scalars, history, and which npz holds the arrays
        round-<r>.npz            the arrays of round r (global weights, aggregator state)

A save writes ``round-<r>.npz`` (temporary file, fsync, rename), then the manifest the same way;
replacing the manifest is the commit. Older npz files are removed afterwards, so a crash at any
point leaves a manifest that names an npz that exists. Arrays shared between the global
weights and the aggregator state (FedAvg's ``weights.<i>`` are the global weights) are stored
once. Loading uses ``allow_pickle=False``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from sedna_aggregator.core.checkpoint_manifest import checkpoint_from_manifest, manifest_of
from sedna_aggregator.core.errors import CheckpointError
from sedna_aggregator.core.model import Array, Checkpoint

__all__ = ["FORMAT_VERSION", "LocalFileRoundStore"]

FORMAT_VERSION = 1
_MANIFEST = "checkpoint.json"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


class LocalFileRoundStore:
    """Checkpoints under ``root`` (created if missing); one directory per session."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def session_dir(self, session_id: str) -> Path:
        """The directory of ``session_id``."""
        return self.root / f"session-{quote(session_id, safe='')}"

    async def save(self, checkpoint: Checkpoint) -> None:
        await asyncio.to_thread(self._save, checkpoint)

    async def load(self, session_id: str) -> Checkpoint | None:
        return await asyncio.to_thread(self._load, session_id)

    async def delete(self, session_id: str) -> None:
        await asyncio.to_thread(self._delete, session_id)

    # ------------------------------------------------------------------ blocking parts

    def _save(self, checkpoint: Checkpoint) -> None:
        directory = self.session_dir(checkpoint.session_id)
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Array] = {}

        def store(name: str, array: Array) -> None:
            if array.dtype.hasobject:
                raise CheckpointError(f"array {name!r} has dtype object; refusing to pickle")
            arrays[name] = array

        manifest = manifest_of(checkpoint, store)
        npz_name = f"round-{checkpoint.round:06d}.npz"
        payload: dict[str, Any] = dict(arrays)
        _atomic_write(
            directory / npz_name,
            lambda handle: np.savez(handle, allow_pickle=False, **payload),
        )
        manifest.update(format=FORMAT_VERSION, arrays=npz_name)
        text = json.dumps(manifest, indent=1, allow_nan=False, default=str).encode()
        _atomic_write(directory / _MANIFEST, lambda handle: handle.write(text))
        for stale in directory.glob("round-*.npz"):
            if stale.name != npz_name:
                with contextlib.suppress(OSError):
                    stale.unlink()

    def _load(self, session_id: str) -> Checkpoint | None:
        directory = self.session_dir(session_id)
        manifest_path = directory / _MANIFEST
        try:
            raw = manifest_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            manifest = json.loads(raw)
            if manifest.get("format") != FORMAT_VERSION:
                raise CheckpointError(
                    f"{manifest_path}: unknown checkpoint format {manifest.get('format')!r}"
                )
            with np.load(directory / str(manifest["arrays"]), allow_pickle=False) as npz:
                arrays: dict[str, Array] = {name: npz[name] for name in npz.files}
            return checkpoint_from_manifest(manifest, lambda name: arrays[str(name)])
        except CheckpointError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"cannot read the checkpoint of {session_id!r}: {err}") from err

    def _delete(self, session_id: str) -> None:
        directory = self.session_dir(session_id)
        if not directory.exists():
            return
        for child in directory.iterdir():
            with contextlib.suppress(OSError):
                child.unlink()
        with contextlib.suppress(OSError):
            directory.rmdir()
