"""The lease port over the Kubernetes API: one ``coordination.k8s.io/v1`` Lease.

The official client is synchronous: every call runs in a worker thread. A 409 is a lost race
(:class:`~sedna_gm.leader.core.LeaseConflictError`), a 404 on read is "no lease yet"; any
other API or connection error is a :class:`~sedna_gm.leader.core.LeaseError` whose message
names the lease.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from sedna_gm.leader.core import LeaseConflictError, LeaseError, LeaseRecord

__all__ = ["KubernetesLeasePort"]

_T = TypeVar("_T")


def _time(value: Any) -> datetime.datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
    return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _micro_time(value: datetime.datetime | None) -> str | None:
    # MicroTime on the wire: RFC 3339 with microseconds.
    if value is None:
        return None
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubernetesLeasePort:
    """A named Lease in a namespace, read and written through ``CoordinationV1Api``.

    Parameters
    ----------
    api_client
        The GM's API client (owned by the caller).
    namespace, name
        Where the Lease is.
    """

    def __init__(self, api_client: k8s_client.ApiClient, namespace: str, name: str) -> None:
        self._api = k8s_client.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.name = name

    def __repr__(self) -> str:
        return f"KubernetesLeasePort({self.namespace}/{self.name})"

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        try:
            return await asyncio.to_thread(fn, *args)
        except ApiException as exc:
            what = f"lease {self.namespace}/{self.name}"
            if exc.status == 409:
                raise LeaseConflictError(f"{what}: {exc.reason}") from exc
            raise LeaseError(f"{what}: HTTP {exc.status} {exc.reason}") from exc
        except (HTTPError, OSError) as exc:
            raise LeaseError(f"lease {self.namespace}/{self.name}: {exc}") from exc

    def _record(self, lease: Any) -> LeaseRecord:
        spec = lease.spec or k8s_client.V1LeaseSpec()
        return LeaseRecord(
            holder=spec.holder_identity or "",
            lease_duration_seconds=int(spec.lease_duration_seconds or 0),
            acquire_time=_time(spec.acquire_time),
            renew_time=_time(spec.renew_time),
            transitions=int(spec.lease_transitions or 0),
            resource_version=lease.metadata.resource_version,
        )

    def _body(self, record: LeaseRecord) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if record.resource_version is not None:
            metadata["resourceVersion"] = record.resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": record.holder,
                "leaseDurationSeconds": record.lease_duration_seconds,
                "acquireTime": _micro_time(record.acquire_time),
                "renewTime": _micro_time(record.renew_time),
                "leaseTransitions": record.transitions,
            },
        }

    async def get(self) -> LeaseRecord | None:
        """The Lease, or None when it does not exist."""
        try:
            lease = await self._call(self._api.read_namespaced_lease, self.name, self.namespace)
        except LeaseError as exc:
            cause = exc.__cause__
            if isinstance(cause, ApiException) and cause.status == 404:
                return None
            raise
        return self._record(lease)

    async def create(self, record: LeaseRecord) -> LeaseRecord:
        """Create the Lease (409 AlreadyExists: a conflict)."""
        body = self._body(dataclasses.replace(record, resource_version=None))
        lease = await self._call(self._api.create_namespaced_lease, self.namespace, body)
        return self._record(lease)

    async def replace(self, record: LeaseRecord) -> LeaseRecord:
        """Replace the Lease at ``record.resource_version`` (409 Conflict when it moved on)."""
        if record.resource_version is None:
            raise LeaseError(f"lease {self.namespace}/{self.name}: replace without a version")
        lease = await self._call(
            self._api.replace_namespaced_lease, self.name, self.namespace, self._body(record)
        )
        return self._record(lease)
