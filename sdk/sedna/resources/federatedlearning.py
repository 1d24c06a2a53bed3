"""The FederatedLearningJob kind: trainers on the edge, one aggregator in the cloud."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from sedna.resources._base import CelRule, SednaObject, SpecModel, StatusModel
from sedna.resources._meta import (
    PrinterColumn,
    ResourceKind,
    active_column,
    failed_column,
    phase_column,
    succeeded_column,
)
from sedna.resources.common import (
    Condition,
    DatasetReference,
    ModelReference,
    NonEmptyStr,
    PodTemplateSpec,
    WorkloadPhase,
)

__all__ = [
    "KIND_INFO",
    "AggregationWorker",
    "FederatedLearningJob",
    "FederatedLearningJobSpec",
    "FederatedLearningJobStatus",
    "S3Transmitter",
    "SampleCount",
    "TrainingWorker",
    "Transmitter",
    "WSTransmitter",
]


class AggregationWorker(SpecModel):
    """The aggregation worker, which merges the trainers' weights each round."""

    model: ModelReference
    """The Model the aggregated weights are written to."""
    template: PodTemplateSpec
    """Pod template of the aggregation worker."""


class TrainingWorker(SpecModel):
    """One training worker, training on its local dataset."""

    dataset: DatasetReference
    """The Dataset this worker trains on (its node is where the worker runs)."""
    template: PodTemplateSpec
    """Pod template of the training worker."""


class S3Transmitter(SpecModel):
    """Exchange weights through an S3 bucket."""

    agg_data_path: NonEmptyStr
    """s3:// URL of the folder where weights are exchanged."""
    credential_name: str | None = None
    """Secret with the S3 credentials."""


class WSTransmitter(SpecModel):
    """Exchange weights over the aggregator's websocket (no settings)."""


class Transmitter(SpecModel):
    """How weights travel between trainers and aggregator."""

    # Upstream's own MistNet example sets both ws and s3 (and upstream then uses s3), so a
    # rule of "exactly one" would reject a manifest that works upstream: only an empty
    # transmitter is an error, and `sedna validate` warns when both are set.
    cel_rules = (
        CelRule(
            rule="has(self.s3) || has(self.ws)",
            message="transmitter must set s3 or ws",
            check=lambda transmitter: transmitter.s3 is not None or transmitter.ws is not None,
            reason="FieldValueRequired",
        ),
    )

    ws: WSTransmitter | None = None
    """Use the aggregator's websocket (the default when no transmitter is given)."""
    s3: S3Transmitter | None = None
    """Use an S3 bucket; takes precedence over ws when both are set."""


class FederatedLearningJobSpec(SpecModel):
    """The workers of a federated learning job."""

    aggregation_worker: AggregationWorker
    """The aggregation worker."""
    training_workers: list[TrainingWorker] = Field(min_length=1)
    """The training workers, one per participating dataset."""
    pretrained_model: ModelReference | None = None
    """Model the training starts from."""
    transmitter: Transmitter | None = None
    """How weights travel; websocket when not set."""

    def lint(self) -> list[tuple[str, str]]:
        """Warn when both transmitters are set, because only s3 is used then."""
        if self.transmitter and self.transmitter.s3 and self.transmitter.ws:
            return [("transmitter", "both s3 and ws are set; s3 is used (as upstream does)")]
        return []


class SampleCount(StatusModel):
    """How many samples one node's training worker last reported training on."""

    node_name: str
    """The node the training worker runs on."""
    worker_name: str | None = None
    """The training worker that reported the count."""
    sample_count: int = Field(ge=0)
    """Samples in the worker's last reported round."""


class FederatedLearningJobStatus(StatusModel):
    """Observed state of the job."""

    phase: WorkloadPhase | None = None
    """Pending, Running, Succeeded or Failed."""
    conditions: list[Condition] | None = None
    """Observations (types Training, Complete, Failed); the last one is current."""
    start_time: datetime | None = None
    """When the controller first acted on the job."""
    completion_time: datetime | None = None
    """When the job finished."""
    active: int | None = Field(default=None, ge=0)
    """Number of worker pods running."""
    succeeded: int | None = Field(default=None, ge=0)
    """Number of worker pods that succeeded."""
    failed: int | None = Field(default=None, ge=0)
    """Number of worker pods that failed."""
    current_round: int | None = Field(default=None, ge=0)
    """Last aggregation round reported by the workers."""
    sample_counts: list[SampleCount] | None = None
    """Each node's last reported sample count, one entry per node, sorted by node name."""
    observed_generation: int | None = Field(default=None, ge=0)
    """metadata.generation the status was computed from."""


class FederatedLearningJob(SednaObject[FederatedLearningJobSpec, FederatedLearningJobStatus]):
    """A FederatedLearningJob object."""

    KIND = "FederatedLearningJob"


KIND_INFO = ResourceKind(
    kind="FederatedLearningJob",
    plural="federatedlearningjobs",
    singular="federatedlearningjob",
    short_names=("fl",),
    categories=("sedna",),
    model=FederatedLearningJob,
    spec_model=FederatedLearningJobSpec,
    status_model=FederatedLearningJobStatus,
    printer_columns=(
        phase_column(),
        PrinterColumn("Round", "integer", ".status.currentRound", "Last aggregation round"),
        active_column("worker pods"),
        succeeded_column("worker pods"),
        failed_column("worker pods"),
    ),
    description=(
        "FederatedLearningJob trains one model from data that stays on the edge nodes: "
        "training workers send weights to an aggregation worker each round."
    ),
)
