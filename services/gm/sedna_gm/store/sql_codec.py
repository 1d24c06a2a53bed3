"""Conversions between :class:`ResourceObject` and the SQL store's JSON columns.

Objects are kept in their Kubernetes JSON form (``ResourceObject.to_dict``) so that a change-log
snapshot can be read back exactly; JSON is written canonically (sorted keys, no spaces) so that
two equal specs compare equal as text, which decides whether ``generation`` moves.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from sedna.resources.objects import OwnerRef, ResourceObject
from sedna_gm.store.errors import InvalidObjectError

__all__ = [
    "canonical_json",
    "metadata_columns",
    "object_from_dict",
    "object_from_row",
    "parse_json",
    "validate_identity",
]

# DNS-1123 subdomain (names) and label (namespaces), as the Kubernetes API server enforces.
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_KIND = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


def canonical_json(value: Any) -> str:
    """Serialize ``value`` deterministically (sorted keys, compact)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_json(text: str) -> Any:
    """Parse a JSON column."""
    return json.loads(text)


def validate_identity(kind: str, namespace: str, name: str) -> None:
    """Refuse identities the Kubernetes API would refuse, naming the field.

    Raises
    ------
    InvalidObjectError
        ``kind``, ``metadata.namespace`` or ``metadata.name`` is malformed.
    """
    if not _KIND.match(kind or ""):
        raise InvalidObjectError(f"invalid kind {kind!r}: expected a CamelCase name", "kind")
    if len(namespace) > 63 or not _LABEL.match(namespace):
        raise InvalidObjectError(
            f"invalid namespace {namespace!r}: expected a DNS-1123 label (lower-case "
            "alphanumerics and '-', at most 63 characters)",
            "metadata.namespace",
        )
    if len(name) > 253 or not _SUBDOMAIN.match(name):
        raise InvalidObjectError(
            f"invalid name {name!r}: expected a DNS-1123 subdomain (lower-case alphanumerics, "
            "'-' and '.', at most 253 characters)",
            "metadata.name",
        )


def metadata_columns(obj: ResourceObject) -> dict[str, Any]:
    """Return the metadata JSON stored in the ``metadata`` column (identity lives in columns)."""
    meta: dict[str, Any] = {
        "labels": dict(obj.labels),
        "annotations": dict(obj.annotations),
        "finalizers": list(obj.finalizers),
        "ownerReferences": [ref.to_dict() for ref in obj.owner_references],
    }
    if obj.creation_timestamp is not None:
        meta["creationTimestamp"] = _format_time(obj.creation_timestamp)
    if obj.deletion_timestamp is not None:
        meta["deletionTimestamp"] = _format_time(obj.deletion_timestamp)
    return meta


def object_from_row(row: Any) -> ResourceObject:
    """Build an object from a ``sedna_objects`` row."""
    meta = parse_json(row.metadata)
    return ResourceObject(
        kind=row.kind,
        name=row.name,
        namespace=row.namespace,
        api_version=row.api_version,
        uid=row.uid,
        resource_version=str(row.revision),
        generation=int(row.generation),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        creation_timestamp=_parse_time(meta.get("creationTimestamp")),
        deletion_timestamp=_parse_time(meta.get("deletionTimestamp")),
        finalizers=list(meta.get("finalizers") or []),
        owner_references=[OwnerRef.from_dict(r) for r in meta.get("ownerReferences") or []],
        spec=parse_json(row.spec),
        status=parse_json(row.status),
    )


def object_from_dict(data: dict[str, Any]) -> ResourceObject:
    """Inverse of :meth:`ResourceObject.to_dict`, server-managed fields included."""
    meta = data.get("metadata") or {}
    return ResourceObject(
        kind=str(data.get("kind", "")),
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        api_version=str(data.get("apiVersion", "")),
        uid=str(meta.get("uid", "")),
        resource_version=str(meta.get("resourceVersion", "")),
        generation=int(meta.get("generation", 0)),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        creation_timestamp=_parse_time(meta.get("creationTimestamp")),
        deletion_timestamp=_parse_time(meta.get("deletionTimestamp")),
        finalizers=list(meta.get("finalizers") or []),
        owner_references=[OwnerRef.from_dict(r) for r in meta.get("ownerReferences") or []],
        spec=dict(data.get("spec") or {}),
        status=dict(data.get("status") or {}),
    )


def _format_time(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value)).astimezone(UTC)
