"""The JSON manifest of a checkpoint, shared by every ``RoundStore`` adapter.

A manifest holds a checkpoint's scalars, history and config, and names its arrays; where the
arrays' bytes live (an npz file, Redis fields) is the adapter's business. Arrays shared between
the global weights and the aggregator state (FedAvg's ``weights.<i>`` are the global weights)
are named once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from sedna_aggregator.core.errors import CheckpointError
from sedna_aggregator.core.model import Array, Checkpoint, RoundRecord

__all__ = ["checkpoint_from_manifest", "manifest_of"]


def _scalar(value: object, key: str) -> object:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise CheckpointError(
        f"aggregator state {key!r} is a {type(value).__name__}; only JSON scalars and "
        "ndarrays can be checkpointed"
    )


def manifest_of(checkpoint: Checkpoint, store: Callable[[str, Array], None]) -> dict[str, Any]:
    """The manifest of ``checkpoint``; ``store(name, array)`` keeps each distinct array once.

    The caller adds its own ``format`` and ``arrays`` entries.

    Raises
    ------
    CheckpointError
        If the aggregator state holds something other than JSON scalars and ndarrays.
    """
    by_id: dict[int, str] = {}

    def put(name: str, array: Array) -> str:
        known = by_id.get(id(array))
        if known is not None:
            return known
        store(name, array)
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
    return {
        "session_id": checkpoint.session_id,
        "round": checkpoint.round,
        "aggregation": checkpoint.aggregation,
        "completed": checkpoint.completed,
        "reason": checkpoint.reason,
        "global_weights": global_names,
        "aggregator_state": state,
        "history": [record.to_json() for record in checkpoint.history],
        "config": dict(checkpoint.config),
    }


def checkpoint_from_manifest(
    manifest: Mapping[str, Any], array: Callable[[object], Array]
) -> Checkpoint:
    """The checkpoint a manifest describes; ``array(name)`` returns the named array.

    Missing keys and wrong types raise ``KeyError``/``TypeError``/``ValueError``: the adapter
    turns them into a ``CheckpointError`` naming where the checkpoint lives.
    """
    global_names = manifest["global_weights"]
    weights = None if global_names is None else [array(name) for name in global_names]
    state: dict[str, Any] = {}
    for key, entry in dict(manifest["aggregator_state"]).items():
        state[key] = array(entry["array"]) if "array" in entry else entry["value"]
    return Checkpoint(
        session_id=str(manifest["session_id"]),
        round=int(manifest["round"]),
        global_weights=weights,
        aggregator_state=state,
        history=tuple(RoundRecord.from_json(record) for record in manifest["history"]),
        aggregation=str(manifest["aggregation"]),
        completed=bool(manifest["completed"]),
        reason=str(manifest.get("reason", "")),
        config=dict(manifest.get("config", {})),
    )
