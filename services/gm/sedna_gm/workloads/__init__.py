"""How the GM runs workers: the WorkloadRuntime port, its adapters and shared helpers.

- :mod:`.port`: :class:`WorkloadRuntime`, :class:`WorkerStatus`, :class:`ServiceEndpoint`;
- :mod:`.builder` and :mod:`.storage`: WorkerSpec from a pod template, upstream names,
  labels, the worker environment contract, host paths and S3 credentials;
- :mod:`.lifecycle`: create/roll/recreate/delete decisions and the workers summary;
- :mod:`.kubernetes` and :mod:`.local`: the adapters (imported explicitly, so the local mode
  does not need the Kubernetes client).
"""

from sedna_gm.workloads.builder import (
    BuiltWorker,
    WorkerEnvSettings,
    build_worker,
    common_env,
    deployment_name,
    label_prefix,
    owner_of,
    owner_selector,
    service_name,
    worker_labels,
    worker_name,
)
from sedna_gm.workloads.lifecycle import (
    ActionKind,
    DesiredWorker,
    RestartRules,
    RestartTracker,
    WorkerAction,
    WorkerPlan,
    WorkersSummary,
    apply_plan,
    plan_workers,
)
from sedna_gm.workloads.port import (
    RuntimeMode,
    ServiceEndpoint,
    WorkerStatus,
    WorkloadError,
    WorkloadRuntime,
    spec_hash,
)
from sedna_gm.workloads.storage import (
    S3Secret,
    SecretNotFoundError,
    SecretSource,
    StaticSecretSource,
    StoragePlan,
)

__all__ = [
    "ActionKind",
    "BuiltWorker",
    "DesiredWorker",
    "RestartRules",
    "RestartTracker",
    "RuntimeMode",
    "S3Secret",
    "SecretNotFoundError",
    "SecretSource",
    "ServiceEndpoint",
    "StaticSecretSource",
    "StoragePlan",
    "WorkerAction",
    "WorkerEnvSettings",
    "WorkerPlan",
    "WorkerStatus",
    "WorkersSummary",
    "WorkloadError",
    "WorkloadRuntime",
    "apply_plan",
    "build_worker",
    "common_env",
    "deployment_name",
    "label_prefix",
    "owner_of",
    "owner_selector",
    "plan_workers",
    "service_name",
    "spec_hash",
    "worker_labels",
    "worker_name",
]
