"""Stored resource objects: the form every store, the resource API and the CLI pass around.

A :class:`ResourceObject` is a Sedna object as a store holds it: server-set metadata
(``uid``, ``resourceVersion``, ``generation``, timestamps, finalizers) plus the spec and status
as plain JSON-compatible dicts. The pydantic kind models (:mod:`sedna.resources`) validate and
give typed access to ``spec``; controllers call :meth:`ResourceObject.typed` for that.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sedna.resources._base import API_VERSION

__all__ = ["DEFAULT_NAMESPACE", "ObjectKey", "OwnerRef", "ResourceObject"]

DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True, order=True)
class ObjectKey:
    """Identity of an object: kind, namespace and name."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


@dataclass(frozen=True)
class OwnerRef:
    """A Kubernetes owner reference (``metadata.ownerReferences[]``)."""

    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Return the Kubernetes JSON form."""
        data: dict[str, Any] = {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
        }
        if self.controller:
            data["controller"] = True
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OwnerRef:
        """Build from the Kubernetes JSON form."""
        return cls(
            api_version=str(data.get("apiVersion", "")),
            kind=str(data.get("kind", "")),
            name=str(data.get("name", "")),
            uid=str(data.get("uid", "")),
            controller=bool(data.get("controller", False)),
        )


@dataclass
class ResourceObject:
    """One stored object with server-managed metadata and JSON spec/status.

    Attributes
    ----------
    kind, namespace, name
        Identity; ``namespace`` defaults to ``"default"`` as on Kubernetes.
    api_version
        ``sedna.io/v1alpha1`` for Sedna kinds.
    uid
        Set by the store on create; empty before.
    resource_version
        Opaque string set by the store on every write; writes that carry a stale one fail
        with a conflict.
    generation
        Set to 1 on create and incremented by the store whenever ``spec`` changes.
    spec, status
        JSON-compatible dicts (camelCase keys, as in YAML).
    """

    kind: str
    name: str
    namespace: str = DEFAULT_NAMESPACE
    api_version: str = API_VERSION
    uid: str = ""
    resource_version: str = ""
    generation: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    finalizers: list[str] = field(default_factory=list)
    owner_references: list[OwnerRef] = field(default_factory=list)
    spec: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> ObjectKey:
        """The object's identity."""
        return ObjectKey(self.kind, self.namespace, self.name)

    def clone(self) -> ResourceObject:
        """Return a deep copy (stores hand out copies so callers cannot mutate their state)."""
        return copy.deepcopy(self)

    def metadata_dict(self) -> dict[str, Any]:
        """Return ``metadata`` in Kubernetes JSON form (empty fields left out)."""
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self.uid:
            meta["uid"] = self.uid
        if self.resource_version:
            meta["resourceVersion"] = self.resource_version
        if self.generation:
            meta["generation"] = self.generation
        if self.labels:
            meta["labels"] = dict(self.labels)
        if self.annotations:
            meta["annotations"] = dict(self.annotations)
        if self.creation_timestamp is not None:
            meta["creationTimestamp"] = _rfc3339(self.creation_timestamp)
        if self.deletion_timestamp is not None:
            meta["deletionTimestamp"] = _rfc3339(self.deletion_timestamp)
        if self.finalizers:
            meta["finalizers"] = list(self.finalizers)
        if self.owner_references:
            meta["ownerReferences"] = [ref.to_dict() for ref in self.owner_references]
        return meta

    def to_dict(self) -> dict[str, Any]:
        """Return the whole object as Kubernetes JSON (what ``-o yaml`` prints)."""
        data: dict[str, Any] = {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": self.metadata_dict(),
            "spec": copy.deepcopy(self.spec),
        }
        if self.status:
            data["status"] = copy.deepcopy(self.status)
        return data

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> ResourceObject:
        """Build from a user manifest (server-managed metadata is ignored).

        Parameters
        ----------
        manifest
            ``apiVersion``, ``kind``, ``metadata`` (``name``, optional ``namespace``,
            ``labels``, ``annotations``, ``finalizers``, ``ownerReferences``) and ``spec``.
            The caller validates it first (:func:`sedna.resources.validate_object`).

        Returns
        -------
        ResourceObject
            The object with empty server-managed fields.
        """
        meta = manifest.get("metadata") or {}
        return cls(
            kind=str(manifest.get("kind", "")),
            name=str(meta.get("name", "")),
            namespace=str(meta.get("namespace") or DEFAULT_NAMESPACE),
            api_version=str(manifest.get("apiVersion", API_VERSION)),
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
            finalizers=list(meta.get("finalizers") or []),
            owner_references=[OwnerRef.from_dict(r) for r in meta.get("ownerReferences") or []],
            spec=copy.deepcopy(manifest.get("spec") or {}),
        )

    def typed(self) -> Any:
        """Return the pydantic model of this object's kind (validates the spec).

        Returns
        -------
        SednaObject
            e.g. a :class:`sedna.resources.Dataset`.

        Raises
        ------
        KeyError
            The kind is not a Sedna kind.
        pydantic.ValidationError
            The stored spec does not validate (it was written by something that skipped
            validation).
        """
        from sedna.resources.registry import get_kind  # noqa: PLC0415 - registry imports models

        return get_kind(self.kind).model.model_validate(self.to_dict(), strict=False)


def _rfc3339(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
