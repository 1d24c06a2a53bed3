"""Leader election for GM replicas: a lease, its elector and the task that runs the leader.

The core (:mod:`sedna_gm.leader.core`) knows no transport; :mod:`sedna_gm.leader.kubernetes`
stores the lease as a ``coordination.k8s.io/v1`` Lease (imported on demand: the kubernetes
client is only needed in cluster mode).
"""

from sedna_gm.leader.core import (
    ElectionConfig,
    LeaderElector,
    LeaseConflictError,
    LeaseError,
    LeasePort,
    LeaseRecord,
)
from sedna_gm.leader.runner import Leadership

__all__ = [
    "ElectionConfig",
    "LeaderElector",
    "Leadership",
    "LeaseConflictError",
    "LeaseError",
    "LeasePort",
    "LeaseRecord",
]
