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

from sedna_aggregator.core.errors import CheckpointError
from sedna_aggregator.core.model import Array, Checkpoint, RoundRecord

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


def _scalar(value: object, key: str) -> object:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise CheckpointError(
        f"aggregator state {key!r} is a {type(value).__name__}; only JSON scalars and "
        "ndarrays can be checkpointed"
    )


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
        by_id: dict[int, str] = {}

        def put(name: str, array: Array) -> str:
            known = by_id.get(id(array))
            if known is not None:
                return known
            if array.dtype.hasobject:
                raise CheckpointError(f"array {name!r} has dtype object; refusing to pickle")
            arrays[name] = array
            by_id[id(array)] = name
            return name

        global_names = (
            None
            if checkpoint.global_weights is None
            else [put(f"global.{i}", layer) for i, layer in enumerate(checkpoint.global_weights)]
        )
        state: dict[str, Any] = {}
        for key, value in checkpoint.aggregator_state.items():
            if isinstance(value, np.ndarray):
                state[key] = {"array": put(f"agg.{key}", value)}
            else:
                state[key] = {"value": _scalar(value, key)}
        npz_name = f"round-{checkpoint.round:06d}.npz"
        payload: dict[str, Any] = dict(arrays)
        _atomic_write(
            directory / npz_name,
            lambda handle: np.savez(handle, allow_pickle=False, **payload),
        )
        manifest = {
            "format": FORMAT_VERSION,
            "session_id": checkpoint.session_id,
            "round": checkpoint.round,
            "aggregation": checkpoint.aggregation,
            "completed": checkpoint.completed,
            "reason": checkpoint.reason,
            "arrays": npz_name,
            "global_weights": global_names,
            "aggregator_state": state,
            "history": [record.to_json() for record in checkpoint.history],
            "config": dict(checkpoint.config),
        }
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
            global_names = manifest["global_weights"]
            weights = None if global_names is None else [arrays[n] for n in global_names]
            state: dict[str, Any] = {}
            for key, entry in dict(manifest["aggregator_state"]).items():
                state[key] = arrays[entry["array"]] if "array" in entry else entry["value"]
            return Checkpoint(
                session_id=str(manifest["session_id"]),
                round=int(manifest["round"]),
                global_weights=weights,
                aggregator_state=state,
                history=tuple(RoundRecord.from_json(r) for r in manifest["history"]),
                aggregation=str(manifest["aggregation"]),
                completed=bool(manifest["completed"]),
                reason=str(manifest.get("reason", "")),
                config=dict(manifest.get("config", {})),
            )
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
