"""Conversion between Kubernetes JSON objects and :class:`ResourceObject` (the only place).

Every field the Kubernetes adapter reads from or writes to the API server goes through
:func:`to_k8s` and :func:`from_k8s`, so timestamps, owner references, finalizers, labels and
annotations are translated the same way for create, update, list and watch.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from sedna.resources.objects import DEFAULT_NAMESPACE, OwnerRef, ResourceObject

__all__ = ["K8sConversionError", "format_timestamp", "from_k8s", "parse_timestamp", "to_k8s"]


class K8sConversionError(ValueError):
    """The API server sent something that is not a Kubernetes object of the expected form."""


def parse_timestamp(value: Any, field: str) -> datetime | None:
    """Parse an RFC 3339 timestamp as the API server writes it (``2024-05-01T10:00:00Z``).

    Parameters
    ----------
    value
        The JSON value; ``None`` or ``""`` means unset.
    field
        Field path, named in the error.

    Returns
    -------
    datetime or None
        Timezone-aware (UTC when the text has ``Z``).

    Raises
    ------
    K8sConversionError
        The value is not an RFC 3339 timestamp.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise K8sConversionError(f"{field}: expected an RFC 3339 timestamp, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise K8sConversionError(f"{field}: invalid RFC 3339 timestamp {value!r}") from exc
    # A naive value would compare wrongly with aware ones; the API server always means UTC.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def format_timestamp(value: datetime) -> str:
    """Format a datetime the way the API server does (UTC, ``Z`` suffix)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def to_k8s(obj: ResourceObject) -> dict[str, Any]:
    """Return the Kubernetes JSON body for ``obj`` (what create/replace send).

    Server-managed fields (``uid``, ``generation``, timestamps) are left out on purpose: the
    API server owns them and ignores or rejects client values. ``resourceVersion`` is sent
    when set, because it is the optimistic-concurrency precondition of a replace.
    """
    meta: dict[str, Any] = {"name": obj.name, "namespace": obj.namespace or DEFAULT_NAMESPACE}
    if obj.resource_version:
        meta["resourceVersion"] = obj.resource_version
    if obj.uid:
        meta["uid"] = obj.uid
    if obj.labels:
        meta["labels"] = dict(obj.labels)
    if obj.annotations:
        meta["annotations"] = dict(obj.annotations)
    if obj.finalizers:
        meta["finalizers"] = list(obj.finalizers)
    if obj.owner_references:
        meta["ownerReferences"] = [ref.to_dict() for ref in obj.owner_references]
    body: dict[str, Any] = {
        "apiVersion": obj.api_version,
        "kind": obj.kind,
        "metadata": meta,
        "spec": copy.deepcopy(obj.spec),
    }
    if obj.status:
        body["status"] = copy.deepcopy(obj.status)
    return body


def _str_map(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise K8sConversionError(f"{field}: expected a map of strings, got {type(value).__name__}")
    return {str(k): str(v) for k, v in value.items()}


def _dict(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise K8sConversionError(f"{field}: expected an object, got {type(value).__name__}")
    return copy.deepcopy(value)


def from_k8s(data: Any) -> ResourceObject:
    """Build a :class:`ResourceObject` from a Kubernetes JSON object.

    Parameters
    ----------
    data
        The decoded JSON of one object (``apiVersion``, ``kind``, ``metadata``, ``spec``,
        ``status``).

    Returns
    -------
    ResourceObject
        With every server-managed field filled from ``metadata``.

    Raises
    ------
    K8sConversionError
        ``data`` is not an object, lacks ``metadata.name`` or has malformed fields.
    """
    if not isinstance(data, dict):
        raise K8sConversionError(f"expected a Kubernetes object, got {type(data).__name__}")
    meta = data.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        raise K8sConversionError("metadata.name: missing in the object the API server returned")
    generation = meta.get("generation") or 0
    if not isinstance(generation, int):
        raise K8sConversionError(f"metadata.generation: expected an integer, got {generation!r}")
    refs = meta.get("ownerReferences") or []
    if not isinstance(refs, list):
        raise K8sConversionError("metadata.ownerReferences: expected a list")
    finalizers = meta.get("finalizers") or []
    if not isinstance(finalizers, list):
        raise K8sConversionError("metadata.finalizers: expected a list")
    return ResourceObject(
        kind=str(data.get("kind", "")),
        name=str(meta["name"]),
        namespace=str(meta.get("namespace") or DEFAULT_NAMESPACE),
        api_version=str(data.get("apiVersion", "")),
        uid=str(meta.get("uid") or ""),
        resource_version=str(meta.get("resourceVersion") or ""),
        generation=generation,
        labels=_str_map(meta.get("labels"), "metadata.labels"),
        annotations=_str_map(meta.get("annotations"), "metadata.annotations"),
        creation_timestamp=parse_timestamp(
            meta.get("creationTimestamp"), "metadata.creationTimestamp"
        ),
        deletion_timestamp=parse_timestamp(
            meta.get("deletionTimestamp"), "metadata.deletionTimestamp"
        ),
        finalizers=[str(f) for f in finalizers],
        owner_references=[OwnerRef.from_dict(ref) for ref in refs if isinstance(ref, dict)],
        spec=_dict(data.get("spec"), "spec"),
        status=_dict(data.get("status"), "status"),
    )
