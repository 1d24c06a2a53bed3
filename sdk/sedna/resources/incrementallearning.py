"""The IncrementalLearningJob kind: retrain, evaluate and redeploy a model as new data arrives."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from sedna.resources._base import SednaObject, SpecModel, StatusModel
from sedna.resources._meta import PrinterColumn, ResourceKind, phase_column
from sedna.resources.common import (
    HardExampleMining,
    ModelReference,
    NonEmptyStr,
    PodTemplateSpec,
    StageCondition,
    TrainingDataset,
    Trigger,
    WorkloadPhase,
)

__all__ = [
    "KIND_INFO",
    "STAGE_COLUMNS",
    "DeployModel",
    "DeploySpec",
    "EvalSpec",
    "IncrementalLearningJob",
    "IncrementalLearningJobSpec",
    "IncrementalLearningJobStatus",
    "TrainSpec",
]


class TrainSpec(SpecModel):
    """The training stage: its worker and what starts it."""

    template: PodTemplateSpec
    """Pod template of the training worker."""
    trigger: Trigger
    """When a new training round starts."""


class EvalSpec(SpecModel):
    """The evaluation stage."""

    template: PodTemplateSpec
    """Pod template of the evaluation worker."""
    initial_eval_model: ModelReference | None = None
    """Model the new model is compared with in the first round (the deployed model if unset)."""


class DeployModel(SpecModel):
    """The model served by the inference worker, and how updates reach it."""

    name: NonEmptyStr
    """Name of the Model deployed at first."""
    hot_update_enabled: bool | None = None
    """Swap the model inside the running worker instead of restarting it (default false)."""
    poll_period_seconds: int = Field(default=60, ge=1)
    """How often the worker checks for a new model when hot update is on, in seconds."""


class DeploySpec(SpecModel):
    """The deploy stage: the inference worker and when a new model replaces the old one."""

    model: DeployModel
    """The deployed model."""
    trigger: Trigger
    """When an evaluated model is deployed (e.g. precision_delta > 0.1)."""
    hard_example_mining: HardExampleMining
    """Algorithm that picks the hard examples that become new training data."""
    template: PodTemplateSpec
    """Pod template of the inference worker."""


class IncrementalLearningJobSpec(SpecModel):
    """The stages of an incremental learning job."""

    dataset: TrainingDataset
    """Dataset new samples come from, and how they are split."""
    initial_model: ModelReference
    """Model the first training round starts from."""
    train_spec: TrainSpec
    """The training stage."""
    eval_spec: EvalSpec
    """The evaluation stage."""
    deploy_spec: DeploySpec
    """The deploy stage."""
    output_dir: NonEmptyStr
    """Where models and sample lists are written: a path on the nodes or an s3:// URL."""
    credential_name: str | None = None
    """Secret with the S3 credentials for outputDir."""


class IncrementalLearningJobStatus(StatusModel):
    """Observed state of the job."""

    phase: WorkloadPhase | None = None
    """Pending, Running, Succeeded or Failed."""
    conditions: list[StageCondition] | None = None
    """The state machine's history (types Waiting, Ready, Starting, Running, Completed,
    Failed, each with its stage); the last one is current."""
    start_time: datetime | None = None
    """When the controller first acted on the job."""
    completion_time: datetime | None = None
    """When the job finished."""
    observed_generation: int | None = Field(default=None, ge=0)
    """metadata.generation the status was computed from."""


class IncrementalLearningJob(SednaObject[IncrementalLearningJobSpec, IncrementalLearningJobStatus]):
    """An IncrementalLearningJob object."""

    KIND = "IncrementalLearningJob"


STAGE_COLUMNS = (
    PrinterColumn("Stage", "string", ".status.conditions[-1:].stage", "Current stage"),
    PrinterColumn("State", "string", ".status.conditions[-1:].type", "State of the stage"),
)
"""Stage and state of the last condition, shared by the incremental and lifelong kinds."""

KIND_INFO = ResourceKind(
    kind="IncrementalLearningJob",
    plural="incrementallearningjobs",
    singular="incrementallearningjob",
    short_names=("il",),
    categories=("sedna",),
    model=IncrementalLearningJob,
    spec_model=IncrementalLearningJobSpec,
    status_model=IncrementalLearningJobStatus,
    printer_columns=(
        phase_column(),
        *STAGE_COLUMNS,
        PrinterColumn("Dataset", "string", ".spec.dataset.name", "Dataset", priority=1),
    ),
    description=(
        "IncrementalLearningJob keeps a deployed model up to date: when enough new samples "
        "arrive it retrains, evaluates the new model and deploys it if it is better."
    ),
)
