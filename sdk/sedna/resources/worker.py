"""The internal ``Worker`` kind: one worker process the GlobalManager asks a node to run.

In the embedded mode (``sedna up``) the GM's Local workload runtime turns each worker of a
feature resource into a ``Worker`` object and sends it to the node's LocalController over the
hub; the LC runs it as a process and reports :class:`WorkerPhase` changes back. On Kubernetes
the same :class:`WorkerSpec` becomes a Pod or Deployment instead.

``Worker`` lives in its own API group (``runtime.sedna.io/v1``): it is never written by users
and has no CRD.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "WORKER_API_VERSION",
    "WORKER_KIND",
    "EnvVar",
    "RestartPolicy",
    "WorkerOwner",
    "WorkerPhaseName",
    "WorkerSpec",
]

WORKER_API_VERSION = "runtime.sedna.io/v1"
WORKER_KIND = "Worker"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=True,
        extra="forbid",
    )


class RestartPolicy(StrEnum):
    """Kubernetes pod restart policy, applied by the LC to the process."""

    ALWAYS = "Always"
    ON_FAILURE = "OnFailure"
    NEVER = "Never"


class WorkerPhaseName(StrEnum):
    """Pod-style phase of a worker (mirrors ``sedna.api.common.v1.WorkerPhase``)."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class EnvVar(_Model):
    """One resolved environment variable (``valueFrom`` already resolved by the GM)."""

    name: str = Field(min_length=1)
    value: str = ""


class WorkerOwner(_Model):
    """The feature resource the worker belongs to."""

    api_version: str
    kind: str
    name: str
    namespace: str
    uid: str = ""


class WorkerSpec(_Model):
    """What a node runs for one worker.

    Attributes
    ----------
    owner
        The feature resource (e.g. a JointInferenceService).
    worker_type
        Upstream's worker type, lowercased: ``edge``, ``cloud``, ``train``, ``aggregation``...
    node_name
        Node that runs it.
    image
        The container image (informational in the embedded mode: processes run on the host).
    command, args
        The process to run; in the embedded mode ``command`` is required.
    env
        The full environment: the upstream worker contract plus the template's own ``env``.
    working_dir
        Working directory; the LC's per-worker directory when empty.
    restart_policy
        What the LC does when the process exits.
    labels
        Upstream's worker labels (``<kind>.sedna.io/name`` ...).
    template
        The original pod template (kept so a Kubernetes runtime can build the Pod from it).
    """

    owner: WorkerOwner
    worker_type: str
    node_name: str = ""
    image: str = ""
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    working_dir: str = ""
    restart_policy: RestartPolicy = RestartPolicy.ON_FAILURE
    labels: dict[str, str] = Field(default_factory=dict)
    template: dict[str, Any] = Field(default_factory=dict)

    def env_dict(self) -> dict[str, str]:
        """Return the environment as a mapping (later entries win, as in Kubernetes)."""
        return {var.name: var.value for var in self.env}
