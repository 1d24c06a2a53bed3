"""Settings of the GlobalManager (``SEDNA_GM_*`` environment variables)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from sedna.runtime import ServiceSettings

__all__ = ["DEFAULT_METRICS_PORT", "DEFAULT_PORT", "GMSettings", "RuntimeKind"]

DEFAULT_PORT = 9000
DEFAULT_METRICS_PORT = 9001


class RuntimeKind(StrEnum):
    """Where workers run."""

    LOCAL = "local"
    KUBERNETES = "kubernetes"


class GMSettings(ServiceSettings):
    """Settings of the GlobalManager: the shared service settings under ``SEDNA_GM_``."""

    model_config = SettingsConfigDict(env_prefix="SEDNA_GM_")

    port: int = Field(
        default=DEFAULT_PORT, ge=0, le=65535, description="gRPC port; 0 picks a free port."
    )
    metrics_port: int | None = Field(
        default=DEFAULT_METRICS_PORT,
        ge=0,
        le=65535,
        validate_default=True,
        description="/metrics port; 0 picks a free port, none disables the endpoint.",
    )
    store_url: str = Field(
        default="sqlite:///sedna-gm.db",
        min_length=1,
        description=(
            "Where resources live: sqlite:///PATH, postgresql://USER@HOST/DB, or kubernetes "
            "(the cluster's API server, sedna.io CRDs)."
        ),
    )
    hub_state_url: str = Field(
        default="",
        description="Database for the hub's per-node report positions; empty uses the store's "
        "database when it is SQL, else sqlite:///sedna-gm-hub.db.",
    )
    runtime: RuntimeKind = Field(
        default=RuntimeKind.LOCAL,
        description="Where workers run: local (processes started by each node's LC) or "
        "kubernetes (Pods, Deployments and Services).",
    )
    namespace: str = Field(
        default="", description="Only watch this namespace; empty watches every namespace."
    )
    kubeconfig: Path | None = Field(
        default=None, description="kubeconfig file for the kubernetes store/runtime."
    )
    in_cluster: bool = Field(
        default=False, description="Use the pod's service account (GM running in a cluster)."
    )
    node_token_file: Path | None = Field(
        default=None,
        description="YAML/JSON mapping of node name to token; when set, each LC must present "
        "its node's token.",
    )
    heartbeat_seconds: float = Field(
        default=5.0, gt=0, allow_inf_nan=False, description="Hub heartbeat interval."
    )
    lc_server: str = Field(
        default="http://localhost:9100",
        description="LC_SERVER given to workers (the LC's HTTP report API on their node).",
    )
    kb_server: str = Field(
        default="http://localhost:9020", description="KB_SERVER given to workers."
    )
    secrets_dir: Path | None = Field(
        default=None,
        description="Local runtime: directory of Kubernetes Secret manifests (YAML/JSON, as for "
        "kubectl apply) that credentialName refers to; read again on every lookup. The "
        "kubernetes runtime reads Secrets from the cluster instead.",
    )
    secret_refresh_seconds: float = Field(
        default=30.0,
        gt=0,
        allow_inf_nan=False,
        description="Seconds between reads of a Dataset's credentialName Secret: a changed "
        "Secret reaches the node, and a missing or invalid one is retried, within this time.",
    )
    workload_poll_seconds: float = Field(
        default=10.0,
        gt=0,
        allow_inf_nan=False,
        description="Seconds between checks of a feature resource's workers that no event "
        "reports: the kubernetes runtime's Deployments (the GM does not watch them), and "
        "workers waiting for a node or a Secret.",
    )
    leader_election: bool = Field(
        default=False,
        description="Run only while holding a coordination.k8s.io Lease (several replicas: one "
        "leads, the others wait NOT_SERVING). Uses --kubeconfig/--in-cluster for the API.",
    )
    leader_election_namespace: str = Field(
        default="",
        description="Namespace of the Lease; empty: --namespace, else $POD_NAMESPACE, else "
        "default.",
    )
    leader_election_lease_name: str = Field(
        default="sedna-gm", min_length=1, description="Name of the Lease."
    )
    leader_election_identity: str = Field(
        default="",
        description="This replica's identity in the Lease; empty: $POD_NAME, else the host "
        "name and a random suffix.",
    )
    leader_election_lease_seconds: float = Field(
        default=15.0,
        gt=0,
        allow_inf_nan=False,
        description="Seconds a standby waits for the leader's renewal before taking over.",
    )
    leader_election_renew_deadline_seconds: float = Field(
        default=10.0,
        gt=0,
        allow_inf_nan=False,
        description="Seconds the leader retries a failed renewal before it exits.",
    )
    leader_election_retry_seconds: float = Field(
        default=2.0,
        gt=0,
        allow_inf_nan=False,
        description="Seconds between attempts to acquire or renew the Lease.",
    )

    @model_validator(mode="after")
    def _check_leader_election_durations(self) -> Self:
        if not self.leader_election_renew_deadline_seconds > self.leader_election_retry_seconds:
            raise ValueError(
                "leader_election_renew_deadline_seconds="
                f"{self.leader_election_renew_deadline_seconds} must be greater than "
                f"leader_election_retry_seconds={self.leader_election_retry_seconds}"
            )
        if not self.leader_election_lease_seconds > self.leader_election_renew_deadline_seconds:
            raise ValueError(
                f"leader_election_lease_seconds={self.leader_election_lease_seconds} must be "
                "greater than leader_election_renew_deadline_seconds="
                f"{self.leader_election_renew_deadline_seconds}"
            )
        return self
