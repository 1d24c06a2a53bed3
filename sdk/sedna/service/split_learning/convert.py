"""Proto ↔ split-learning session conversion (no gRPC calls, no state).

Everything that knows both the ``aggregator.v1`` messages and
:mod:`sedna.service.split_learning.session` lives here: configs, states, statuses, published
models, and the check of an upload's tensor manifest (so a malformed batch is refused before
its bytes are received or allocated).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
from google.protobuf import json_format

from sedna.api.aggregator.v1 import aggregation_service_pb2 as pb
from sedna.api.common.v1.tensor_pb2 import TensorManifest
from sedna.service.split_learning.errors import BatchRejectedError, ConfigMismatchError
from sedna.service.split_learning.session import (
    FEATURES,
    LABELS,
    RoundResult,
    SessionStatus,
    SplitConfig,
    SplitState,
)
from sedna.tensor import TensorError, to_numpy_dtype

__all__ = [
    "AGGREGATION_NAME",
    "check_join_config",
    "config_to_proto",
    "layer_name",
    "manifest_layout",
    "result_header",
    "state_to_proto",
    "status_to_proto",
]

AGGREGATION_NAME: Final = "MistNet"
"""The ``SessionConfig.aggregation`` of a split-learning session."""

_STATES: Final[Mapping[SplitState, pb.SessionState.ValueType]] = {
    SplitState.WAITING_FOR_CLIENTS: pb.SESSION_STATE_WAITING_FOR_CLIENTS,
    SplitState.ROUND_OPEN: pb.SESSION_STATE_TRAINING,
    SplitState.TRAINING: pb.SESSION_STATE_AGGREGATING,
    SplitState.COMPLETED: pb.SESSION_STATE_COMPLETED,
    SplitState.FAILED: pb.SESSION_STATE_FAILED,
}

Layout = tuple[np.dtype[Any], tuple[int, ...]]


def state_to_proto(state: SplitState) -> pb.SessionState.ValueType:
    """The proto's ``SessionState`` (cloud training is ``SESSION_STATE_AGGREGATING``)."""
    return _STATES[state]


def config_to_proto(config: SplitConfig) -> pb.SessionConfig:
    """``SessionConfig``: ``aggregation="MistNet"`` with ``cut_layer`` and ``epsilon``."""
    message = pb.SessionConfig(
        aggregation=AGGREGATION_NAME,
        exit_round=config.exit_round,
        min_participants=config.min_clients,
        client_fraction=1.0,
    )
    message.aggregation_parameters.update(
        {"cut_layer": config.cut_layer, "epsilon": config.epsilon}
    )
    if config.round_timeout is not None:
        message.round_timeout.FromTimedelta(datetime.timedelta(seconds=config.round_timeout))
    return message


def check_join_config(config: SplitConfig, requested: pb.SessionConfig) -> None:
    """Refuse a join whose expected configuration differs from the session's.

    Zero/unset fields of ``requested`` accept the session's value.

    Raises
    ------
    ConfigMismatchError
        Naming the first differing field and both values.
    """

    def mismatch(name: str, got: object, want: object) -> ConfigMismatchError:
        return ConfigMismatchError(
            f"the session runs with {name}={want!r}, the client expects {got!r}"
        )

    if requested.aggregation and requested.aggregation.lower() != AGGREGATION_NAME.lower():
        raise mismatch("aggregation", requested.aggregation, AGGREGATION_NAME)
    if requested.HasField("aggregation_parameters"):
        params = json_format.MessageToDict(requested.aggregation_parameters)
        if "cut_layer" in params and float(params["cut_layer"]) != config.cut_layer:
            raise mismatch("cut_layer", params["cut_layer"], config.cut_layer)
        if "epsilon" in params and not math.isclose(
            float(params["epsilon"]), config.epsilon, rel_tol=1e-9
        ):
            raise mismatch("epsilon", params["epsilon"], config.epsilon)
    if requested.exit_round and requested.exit_round != config.exit_round:
        raise mismatch("exit_round", requested.exit_round, config.exit_round)
    if requested.min_participants and requested.min_participants != config.min_clients:
        raise mismatch("min_participants", requested.min_participants, config.min_clients)


def manifest_layout(client_id: str, manifest: TensorManifest) -> tuple[Layout, Layout]:
    """``((features dtype, shape), (labels dtype, shape))`` from an upload's manifest.

    Raises
    ------
    BatchRejectedError
        Not exactly one tensor named ``features`` and one named ``labels``, or a dtype with no
        numpy equivalent; the message names the client and the tensor.
    """
    found: dict[str, Layout] = {}
    for spec in manifest.tensors:
        if spec.name not in (FEATURES, LABELS):
            raise BatchRejectedError(
                f"client {client_id!r}: unexpected tensor {spec.name!r}; an upload carries "
                f"exactly {FEATURES!r} and {LABELS!r}"
            )
        if spec.name in found:
            raise BatchRejectedError(f"client {client_id!r}: tensor {spec.name!r} sent twice")
        try:
            dtype = to_numpy_dtype(spec.dtype)
        except TensorError as err:
            raise BatchRejectedError(f"client {client_id!r}: tensor {spec.name!r}: {err}") from None
        found[spec.name] = (dtype, tuple(int(d) for d in spec.shape))
    for name in (FEATURES, LABELS):
        if name not in found:
            raise BatchRejectedError(f"client {client_id!r}: the upload has no {name!r} tensor")
    return found[FEATURES], found[LABELS]


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
    """Tensor name of weights entry ``index`` (as ``sedna-aggregator`` names layers)."""
    return f"layer.{index}"


def status_to_proto(status: SessionStatus, config: SplitConfig) -> pb.GetSessionStatusResponse:
    """``GetSessionStatusResponse`` from a session snapshot."""
    return pb.GetSessionStatusResponse(
        config=config_to_proto(config),
        state=state_to_proto(status.state),
        current_round=status.current_round,
        clients=[
            pb.ClientStatus(
                client_id=c.client_id,
                sample_count=c.sample_count,
                last_round=c.last_round,
                selected=True,
            )
            for c in status.clients
        ],
        metrics=dict(status.metrics),
    )
