"""Conversion between :class:`ResourceObject` and the ``sedna.api.common.v1.Resource`` message.

Spec and status travel as JSON bytes (``spec_json``/``status_json``) so the wire contract does
not change when a kind gains a field; metadata travels as typed fields. Worker phases travel as
the ``WorkerPhase`` enum.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from sedna.api.common.v1 import resource_pb2, types_pb2
from sedna.resources.objects import ObjectKey, OwnerRef, ResourceObject
from sedna.resources.worker import WorkerPhaseName

__all__ = [
    "WireFormatError",
    "key_from_reference",
    "reference_from_object",
    "resource_from_proto",
    "resource_to_proto",
    "worker_phase_from_proto",
    "worker_phase_to_proto",
]

_WORKER_PHASES: dict[WorkerPhaseName, types_pb2.WorkerPhase.ValueType] = {
    WorkerPhaseName.PENDING: types_pb2.WORKER_PHASE_PENDING,
    WorkerPhaseName.RUNNING: types_pb2.WORKER_PHASE_RUNNING,
    WorkerPhaseName.SUCCEEDED: types_pb2.WORKER_PHASE_SUCCEEDED,
    WorkerPhaseName.FAILED: types_pb2.WORKER_PHASE_FAILED,
}
_WORKER_PHASE_NAMES = {value: name for name, value in _WORKER_PHASES.items()}


class WireFormatError(ValueError):
    """A Resource message carries something that cannot be decoded (bad JSON, wrong type)."""


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def _datetime(message: Any, field_name: str) -> datetime | None:
    if not message.HasField(field_name):
        return None
    stamp: Timestamp = getattr(message, field_name)
    return stamp.ToDatetime(tzinfo=UTC)


def _decode_json(data: bytes, what: str) -> dict[str, Any]:
    if not data:
        return {}
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireFormatError(f"{what}: not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise WireFormatError(f"{what}: must be a JSON object, got {type(value).__name__}")
    return value


def _encode_json(value: dict[str, Any]) -> bytes:
    if not value:
        return b""
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def resource_to_proto(obj: ResourceObject) -> resource_pb2.Resource:
    """Encode an object as a ``Resource`` message."""
    meta = resource_pb2.ObjectMeta(
        name=obj.name,
        namespace=obj.namespace,
        uid=obj.uid,
        resource_version=obj.resource_version,
        generation=obj.generation,
        labels=obj.labels,
        annotations=obj.annotations,
        creation_timestamp=_timestamp(obj.creation_timestamp),
        deletion_timestamp=_timestamp(obj.deletion_timestamp),
        finalizers=obj.finalizers,
        owner_references=[
            resource_pb2.OwnerReference(
                api_version=ref.api_version,
                kind=ref.kind,
                name=ref.name,
                uid=ref.uid,
                controller=ref.controller,
            )
            for ref in obj.owner_references
        ],
    )
    return resource_pb2.Resource(
        api_version=obj.api_version,
        kind=obj.kind,
        metadata=meta,
        spec_json=_encode_json(obj.spec),
        status_json=_encode_json(obj.status),
    )


def resource_from_proto(message: resource_pb2.Resource) -> ResourceObject:
    """Decode a ``Resource`` message.

    Raises
    ------
    WireFormatError
        ``spec_json`` or ``status_json`` is not a JSON object.
    """
    meta = message.metadata
    return ResourceObject(
        kind=message.kind,
        name=meta.name,
        namespace=meta.namespace or "default",
        api_version=message.api_version,
        uid=meta.uid,
        resource_version=meta.resource_version,
        generation=meta.generation,
        labels=dict(meta.labels),
        annotations=dict(meta.annotations),
        creation_timestamp=_datetime(meta, "creation_timestamp"),
        deletion_timestamp=_datetime(meta, "deletion_timestamp"),
        finalizers=list(meta.finalizers),
        owner_references=[
            OwnerRef(
                api_version=ref.api_version,
                kind=ref.kind,
                name=ref.name,
                uid=ref.uid,
                controller=ref.controller,
            )
            for ref in meta.owner_references
        ],
        spec=_decode_json(message.spec_json, "spec_json"),
        status=_decode_json(message.status_json, "status_json"),
    )


def reference_from_object(obj: ResourceObject) -> types_pb2.ObjectReference:
    """Return an ``ObjectReference`` naming ``obj``."""
    return types_pb2.ObjectReference(
        api_version=obj.api_version,
        kind=obj.kind,
        namespace=obj.namespace,
        name=obj.name,
        uid=obj.uid,
    )


def key_from_reference(reference: types_pb2.ObjectReference) -> ObjectKey:
    """Return the :class:`ObjectKey` an ``ObjectReference`` names."""
    return ObjectKey(reference.kind, reference.namespace or "default", reference.name)


def worker_phase_to_proto(phase: WorkerPhaseName) -> types_pb2.WorkerPhase.ValueType:
    """Return the ``WorkerPhase`` enum value of ``phase``."""
    return _WORKER_PHASES[phase]


def worker_phase_from_proto(value: types_pb2.WorkerPhase.ValueType) -> WorkerPhaseName | None:
    """Return the phase a ``WorkerPhase`` value names; None for ``WORKER_PHASE_UNSPECIFIED``."""
    return _WORKER_PHASE_NAMES.get(value)
