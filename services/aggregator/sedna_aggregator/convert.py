"""Proto ↔ round-core conversion for the aggregation servicer (no gRPC calls, no state).

Everything that knows both ``aggregation_service.proto`` and :mod:`sedna_aggregator.core`
lives here: configs, states, statuses, round results, and the checks of an update's tensor
manifest against the session's global weights (so a wrong layer is refused before its bytes
are received or allocated).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any, Final

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration

from sedna.api.aggregator.v1 import aggregation_service_pb2 as pb
from sedna.api.common.v1.tensor_pb2 import DataType, TensorManifest
from sedna.tensor import data_type_name
from sedna_aggregator.core import (
    MalformedUpdateError,
    RoundResult,
    SessionConfig,
    SessionConfigError,
    SessionState,
    SessionStatus,
    TargetMode,
)
from sedna_aggregator.core.model import Array

__all__ = [
    "check_manifest",
    "config_conflict",
    "config_from_proto",
    "config_to_proto",
    "layer_name",
    "result_header",
    "state_to_proto",
    "status_to_proto",
]

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


def result_header(result: RoundResult) -> pb.PullGlobalWeightsResponse:
    """The header message of a ``PullGlobalWeights`` stream."""
    return pb.PullGlobalWeightsResponse(
        header=pb.GlobalWeightsHeader(
            round=result.round,
            total_samples=result.total_samples,
            participants=list(result.participants),
            dropped_clients=list(result.dropped),
            exit=result.exit,
            metrics=dict(result.metrics),
        )
    )


def layer_name(index: int) -> str:
    """The tensor name of layer ``index`` in the global weights stream."""
    return f"layer.{index}"


def _what(index: int, name: str) -> str:
    return f"layer {index} ({name!r})" if name else f"layer {index}"


def check_manifest(
    client_id: str, manifest: TensorManifest, global_weights: Sequence[Array] | None
) -> None:
    """Refuse an update's manifest before any byte is received or allocated.

    Every layer must be floating point (float16/32/64); with global weights, the layer count
    and every shape must match them. Raises ``MalformedUpdateError`` (INVALID_ARGUMENT) naming
    the client and the layer.
    """
    if not manifest.tensors:
        raise MalformedUpdateError(f"client {client_id!r}: the update has no layers")
    if global_weights is not None and len(manifest.tensors) != len(global_weights):
        raise MalformedUpdateError(
            f"client {client_id!r}: the update has {len(manifest.tensors)} layers, the global "
            f"weights have {len(global_weights)}"
        )
    for index, spec in enumerate(manifest.tensors):
        what = _what(index, spec.name)
        if spec.dtype not in _FLOAT_TYPES:
            raise MalformedUpdateError(
                f"client {client_id!r}: {what} has dtype {data_type_name(spec.dtype)}; "
                "updates must be float16, float32 or float64"
            )
        if global_weights is not None:
            want = tuple(global_weights[index].shape)
            got = tuple(int(d) for d in spec.shape)
            if got != want:
                raise MalformedUpdateError(
                    f"client {client_id!r}: {what} has shape {got}, the global weights have {want}"
                )
