"""Proto ↔ round-core conversion for the aggregation servicer (no gRPC calls, no state).

Everything that knows both ``aggregation_service.proto`` and :mod:`sedna_aggregator.core`
lives here: configs, states, statuses, round results, and the checks of an update's tensors
against the session's template (the global weights' layer count, shapes and dtypes): of a
streamed update's manifest, so a wrong layer is refused before its bytes are received or
allocated, and of each tensor of an object (S3 transmitter) before it is added.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any, Final

import numpy as np
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration

from sedna.api.aggregator.v1 import aggregation_service_pb2 as pb
from sedna.api.common.v1.tensor_pb2 import DataType, TensorManifest
from sedna.tensor import TensorError, data_type_name, from_numpy_dtype, to_numpy_dtype
from sedna_aggregator.core import (
    MalformedUpdateError,
    RoundResult,
    SessionConfig,
    SessionConfigError,
    SessionState,
    SessionStatus,
    TargetMode,
)

__all__ = [
    "Template",
    "check_manifest",
    "check_manifest_dtype",
    "check_object_tensor",
    "config_conflict",
    "config_from_proto",
    "config_to_proto",
    "layer_name",
    "object_layer_index",
    "result_header",
    "state_to_proto",
    "status_to_proto",
]

Template = Sequence[tuple[tuple[int, ...], np.dtype[Any]]]
"""``(shape, dtype)`` per layer, as ``Session.template`` gives it."""

_LAYER_NAME: Final = re.compile(r"layer\.(0|[1-9][0-9]*)")

_FLOAT_TYPES: Final = frozenset(
    {DataType.DATA_TYPE_FLOAT16, DataType.DATA_TYPE_FLOAT32, DataType.DATA_TYPE_FLOAT64}
)

_STATES: Final[Mapping[SessionState, pb.SessionState.ValueType]] = {
    SessionState.WAITING_FOR_CLIENTS: pb.SESSION_STATE_WAITING_FOR_CLIENTS,
    SessionState.ROUND_OPEN: pb.SESSION_STATE_TRAINING,
    SessionState.AGGREGATING: pb.SESSION_STATE_AGGREGATING,
    SessionState.COMPLETED: pb.SESSION_STATE_COMPLETED,
    SessionState.FAILED: pb.SESSION_STATE_FAILED,
}


def state_to_proto(state: SessionState) -> pb.SessionState.ValueType:
    """The proto's ``SessionState`` (``ROUND_OPEN`` is ``SESSION_STATE_TRAINING``)."""
    return _STATES[state]


def _seconds_to_duration(seconds: float) -> Duration:
    duration = Duration()
    whole = math.floor(seconds)
    duration.seconds = whole
    duration.nanos = round((seconds - whole) * 1e9)
    return duration


def config_to_proto(config: SessionConfig) -> pb.SessionConfig:
    """The proto ``SessionConfig`` (server-only fields, e.g. ``selection_seed``, are left out)."""
    message = pb.SessionConfig(
        aggregation=config.aggregation,
        exit_round=config.exit_round,
        min_participants=config.min_participants,
        client_fraction=config.client_fraction,
        target_metric=config.target_metric,
        target_metric_value=config.target_metric_value,
        target_mode=config.target_mode.value,
        proximal_mu=config.proximal_mu,
    )
    if config.aggregation_parameters:
        message.aggregation_parameters.update(dict(config.aggregation_parameters))
    if config.round_timeout is not None:
        message.round_timeout.CopyFrom(_seconds_to_duration(config.round_timeout))
    return message


def _target_mode(value: str, default: TargetMode) -> TargetMode:
    if not value:
        return default
    try:
        return TargetMode(value.lower())
    except ValueError:
        choices = ", ".join(repr(mode.value) for mode in TargetMode)
        raise SessionConfigError(f"target_mode must be one of {choices}, got {value!r}") from None


def config_from_proto(
    message: pb.SessionConfig, *, defaults: SessionConfig | None = None
) -> SessionConfig:
    """A :class:`SessionConfig` from the proto; proto3 zero values take ``defaults``' values.

    Raises ``SessionConfigError`` (INVALID_ARGUMENT) for a bad value.
    """
    base = defaults if defaults is not None else SessionConfig()
    parameters: dict[str, Any] = (
        json_format.MessageToDict(message.aggregation_parameters)
        if message.HasField("aggregation_parameters")
        else dict(base.aggregation_parameters)
    )
    timeout = (
        message.round_timeout.ToTimedelta().total_seconds()
        if message.HasField("round_timeout")
        else base.round_timeout
    )
    return SessionConfig(
        aggregation=message.aggregation or base.aggregation,
        aggregation_parameters=parameters,
        exit_round=message.exit_round or base.exit_round,
        min_participants=message.min_participants or base.min_participants,
        expected_clients=base.expected_clients,
        client_fraction=message.client_fraction or base.client_fraction,
        selection_seed=base.selection_seed,
        round_timeout=timeout,
        below_minimum=base.below_minimum,
        join_grace=base.join_grace,
        target_metric=message.target_metric or base.target_metric,
        target_metric_value=message.target_metric_value or base.target_metric_value,
        target_mode=_target_mode(message.target_mode, base.target_mode),
        proximal_mu=message.proximal_mu or base.proximal_mu,
    )


def config_conflict(existing: SessionConfig, requested: SessionConfig) -> str | None:
    """The first field where ``requested`` differs from a session's ``existing`` config."""
    for item in fields(SessionConfig):
        if getattr(existing, item.name) != getattr(requested, item.name):
            return item.name
    return None


def status_to_proto(status: SessionStatus, config: SessionConfig) -> pb.GetSessionStatusResponse:
    """``GetSessionStatusResponse`` from a core snapshot."""
    return pb.GetSessionStatusResponse(
        config=config_to_proto(config),
        state=state_to_proto(status.state),
        current_round=status.current_round,
        clients=[
            pb.ClientStatus(
                client_id=c.client_id,
                sample_count=c.sample_count,
                last_round=c.last_round,
                selected=c.selected,
            )
            for c in status.clients
        ],
        metrics=dict(status.metrics),
    )


def result_header(result: RoundResult, weights_uri: str = "") -> pb.PullGlobalWeightsResponse:
    """The header message of a ``PullGlobalWeights`` stream (``weights_uri``: by reference)."""
    return pb.PullGlobalWeightsResponse(
        header=pb.GlobalWeightsHeader(
            round=result.round,
            total_samples=result.total_samples,
            participants=list(result.participants),
            dropped_clients=list(result.dropped),
            exit=result.exit,
            metrics=dict(result.metrics),
            weights_uri=weights_uri,
        )
    )


def layer_name(index: int) -> str:
    """The tensor name of layer ``index`` in the global weights stream."""
    return f"layer.{index}"


def _what(index: int, name: str) -> str:
    return f"layer {index} ({name!r})" if name else f"layer {index}"


def _dtype_name(dtype: np.dtype[Any]) -> str:
    try:
        return data_type_name(from_numpy_dtype(dtype))
    except TensorError:
        return str(dtype)


def _check_dtype(
    client_id: str, what: str, dtype: np.dtype[Any], want: np.dtype[Any] | None
) -> None:
    if not np.issubdtype(dtype, np.floating) or dtype.itemsize > 8:
        raise MalformedUpdateError(
            f"client {client_id!r}: {what} has dtype {_dtype_name(dtype)}; "
            "updates must be float16, float32 or float64"
        )
    if want is not None and dtype != want:
        raise MalformedUpdateError(
            f"client {client_id!r}: {what} has dtype {_dtype_name(dtype)}, the global weights "
            f"have {_dtype_name(want)}"
        )


def check_manifest(client_id: str, manifest: TensorManifest, template: Template | None) -> None:
    """Refuse an update's manifest before any byte is received or allocated.

    Every layer must be floating point (float16/32/64); with a template (the session's global
    weights, else its first update), the layer count and every shape and dtype must match
    it. Layers are matched by position; names are not checked. Raises
    ``MalformedUpdateError`` (INVALID_ARGUMENT) naming the client and the layer.
    """
    if not manifest.tensors:
        raise MalformedUpdateError(f"client {client_id!r}: the update has no layers")
    if template is not None and len(manifest.tensors) != len(template):
        raise MalformedUpdateError(
            f"client {client_id!r}: the update has {len(manifest.tensors)} layers, the global "
            f"weights have {len(template)}"
        )
    for index, spec in enumerate(manifest.tensors):
        what = _what(index, spec.name)
        if spec.dtype not in _FLOAT_TYPES:
            raise MalformedUpdateError(
                f"client {client_id!r}: {what} has dtype {data_type_name(spec.dtype)}; "
                "updates must be float16, float32 or float64"
            )
        if template is not None:
            want_shape, want_dtype = template[index]
            got = tuple(int(d) for d in spec.shape)
            if got != tuple(want_shape):
                raise MalformedUpdateError(
                    f"client {client_id!r}: {what} has shape {got}, the global weights have "
                    f"{tuple(want_shape)}"
                )
            _check_dtype(client_id, what, to_numpy_dtype(spec.dtype), want_dtype)


def object_layer_index(client_id: str, name: str, count: int, seen: set[int]) -> int:
    """The layer index of tensor ``name`` of an update object holding ``count`` layers.

    An object (S3 transmitter) is keyed by name: every tensor must be named ``layer.<i>``
    (the names the SDK writes and ``PullGlobalWeights`` sends), ``0 <= i < count``, each
    once; they may come in any stored order. Raises ``MalformedUpdateError`` naming it.
    """
    match = _LAYER_NAME.fullmatch(name)
    if match is None or int(match.group(1)) >= count:
        raise MalformedUpdateError(
            f"client {client_id!r}: the update object holds a tensor named {name!r}; its "
            f"tensors must be named layer.0 to layer.{count - 1}"
        )
    index = int(match.group(1))
    if index in seen:
        raise MalformedUpdateError(
            f"client {client_id!r}: the update object holds {_what(index, name)} twice"
        )
    return index


def check_manifest_dtype(client_id: str, index: int, name: str, dtype: np.dtype[Any]) -> None:
    """Refuse a non-float tensor (no template to compare with), naming the layer."""
    _check_dtype(client_id, _what(index, name), dtype, None)


def check_object_tensor(
    client_id: str, name: str, array: np.ndarray[Any, Any], template: Template, seen: set[int]
) -> int:
    """:func:`object_layer_index`, and the tensor's shape and dtype checked against
    ``template`` (as :func:`check_manifest` does for a stream)."""
    index = object_layer_index(client_id, name, len(template), seen)
    what = _what(index, name)
    want_shape, want_dtype = template[index]
    if tuple(array.shape) != tuple(want_shape):
        raise MalformedUpdateError(
            f"client {client_id!r}: {what} has shape {tuple(array.shape)}, the global weights "
            f"have {tuple(want_shape)}"
        )
    _check_dtype(client_id, what, array.dtype, want_dtype)
    return index
