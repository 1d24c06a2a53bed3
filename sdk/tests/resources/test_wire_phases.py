"""Worker phases on the wire: WorkerPhaseName <-> the WorkerPhase enum."""

from __future__ import annotations

from sedna.api.common.v1 import types_pb2
from sedna.resources.wire import worker_phase_from_proto, worker_phase_to_proto
from sedna.resources.worker import WorkerPhaseName


def test_every_phase_round_trips() -> None:
    for phase in WorkerPhaseName:
        value = worker_phase_to_proto(phase)
        assert value != types_pb2.WORKER_PHASE_UNSPECIFIED
        assert types_pb2.WorkerPhase.Name(value) == f"WORKER_PHASE_{phase.name}"
        assert worker_phase_from_proto(value) is phase


def test_unspecified_has_no_phase() -> None:
    assert worker_phase_from_proto(types_pb2.WORKER_PHASE_UNSPECIFIED) is None
