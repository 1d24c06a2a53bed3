"""The JointInferenceService kind: a small model at the edge backed by a big model in the cloud."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from sedna.resources._base import SednaObject, SpecModel, StatusModel
from sedna.resources._meta import (
    PrinterColumn,
    ResourceKind,
    active_column,
    failed_column,
    phase_column,
)
from sedna.resources.common import (
    Condition,
    HardExampleMining,
    HPASpec,
    Metric,
    ModelReference,
    PodTemplateSpec,
    WorkloadPhase,
)

__all__ = [
    "KIND_INFO",
    "CloudWorker",
    "EdgeWorker",
    "JointInferenceService",
    "JointInferenceServiceSpec",
    "JointInferenceServiceStatus",
]


class EdgeWorker(SpecModel):
    """The edge worker: infers with the small model and sends hard examples to the cloud."""

    model: ModelReference
    """The small model served at the edge."""
    hard_example_mining: HardExampleMining
    """Algorithm that decides which samples are hard and go to the cloud."""
    template: PodTemplateSpec
    """Pod template of the edge worker (set nodeName to pick the edge node)."""
    hpa: HPASpec | None = None
    """Autoscaling of the edge worker Deployment."""


class CloudWorker(SpecModel):
    """The cloud worker: infers hard examples with the big model."""

    model: ModelReference
    """The big model served in the cloud."""
    template: PodTemplateSpec
    """Pod template of the cloud worker."""
    hpa: HPASpec | None = None
    """Autoscaling of the cloud worker Deployment."""


class JointInferenceServiceSpec(SpecModel):
    """The edge and cloud workers of the service."""

    edge_worker: EdgeWorker
    """The edge worker."""
    cloud_worker: CloudWorker
    """The cloud worker."""


class JointInferenceServiceStatus(StatusModel):
    """Observed state of the service."""

    phase: WorkloadPhase | None = None
    """Pending, Running or Failed."""
    conditions: list[Condition] | None = None
    """Observations, one per type: Valid, ModelsReady, CloudReady, EdgeReady and Ready (True
    when both workers run; otherwise its reason and message say why)."""
    start_time: datetime | None = None
    """When the controller first acted on the service."""
    active: int | None = Field(default=None, ge=0)
    """Number of worker Deployments (cloud and edge) that have not failed."""
    failed: int | None = Field(default=None, ge=0)
    """Number of worker Deployments that failed."""
    metrics: list[Metric] | None = None
    """Counters reported by the edge worker (inferenceNumber, hardExampleNumber,
    uploadCloudRatio, cloudFallbackNumber)."""
    observed_generation: int | None = Field(default=None, ge=0)
    """metadata.generation the status was computed from."""


class JointInferenceService(SednaObject[JointInferenceServiceSpec, JointInferenceServiceStatus]):
    """A JointInferenceService object."""

    KIND = "JointInferenceService"


KIND_INFO = ResourceKind(
    kind="JointInferenceService",
    plural="jointinferenceservices",
    singular="jointinferenceservice",
    short_names=("ji",),
    categories=("sedna",),
    model=JointInferenceService,
    spec_model=JointInferenceServiceSpec,
    status_model=JointInferenceServiceStatus,
    printer_columns=(
        phase_column(),
        active_column("worker Deployments"),
        failed_column("worker Deployments"),
        PrinterColumn(
            "Inferences",
            "string",
            '.status.metrics[?(@.key=="inferenceNumber")].value',
            "Samples inferred at the edge",
        ),
        PrinterColumn(
            "Hard Examples",
            "string",
            '.status.metrics[?(@.key=="hardExampleNumber")].value',
            "Samples sent to the cloud as hard examples",
        ),
    ),
    description=(
        "JointInferenceService runs a small model on an edge node and a big model in the "
        "cloud; hard examples found at the edge are inferred again in the cloud."
    ),
)
