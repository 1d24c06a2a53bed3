"""The LifelongLearningJob kind: multi-task learning with a knowledge base of models."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from sedna.resources._base import SednaObject, SpecModel, StatusModel
from sedna.resources._meta import PrinterColumn, ResourceKind, phase_column
from sedna.resources.common import (
    NonEmptyStr,
    PodTemplateSpec,
    StageCondition,
    TrainingDataset,
    WorkloadPhase,
)
from sedna.resources.incrementallearning import STAGE_COLUMNS, TrainSpec

__all__ = [
    "KIND_INFO",
    "KnowledgeBaseAIClasses",
    "KnowledgeBaseAIModel",
    "KnowledgeBaseAIModels",
    "KnowledgeBaseSamples",
    "KnowledgeBaseStatus",
    "LLDeploySpec",
    "LLEvalSpec",
    "LifelongLearningJob",
    "LifelongLearningJobSpec",
    "LifelongLearningJobStatus",
]


class LLEvalSpec(SpecModel):
    """The evaluation stage."""

    template: PodTemplateSpec
    """Pod template of the evaluation worker."""


class LLDeploySpec(SpecModel):
    """The deploy stage (the inference worker loads the knowledge base index)."""

    template: PodTemplateSpec
    """Pod template of the inference worker."""


class LifelongLearningJobSpec(SpecModel):
    """The stages of a lifelong learning job."""

    dataset: TrainingDataset
    """Dataset new samples come from, and how they are split."""
    train_spec: TrainSpec
    """The training stage."""
    eval_spec: LLEvalSpec
    """The evaluation stage."""
    deploy_spec: LLDeploySpec
    """The deploy stage."""
    output_dir: NonEmptyStr
    """Where the knowledge base and sample lists are written: a node path or an s3:// URL."""
    credential_name: str | None = None
    """Secret with the S3 credentials for outputDir."""


class KnowledgeBaseAIModel(StatusModel):
    """One task model in the knowledge base."""

    model_id: str | None = Field(default=None, alias="modelID")
    """Task the model belongs to."""
    average_precision: float | None = None
    """First metric of the model."""
    number_of_train_samples: int | None = Field(default=None, ge=0)
    """Samples the model was trained on."""


class KnowledgeBaseAIModels(StatusModel):
    """The task models in the knowledge base."""

    number_of_ai_models: int | None = Field(default=None, ge=0, alias="numberOfAIModels")
    """Number of models."""
    list_of_ai_models: list[KnowledgeBaseAIModel] | None = Field(
        default=None, alias="listOfAIModels"
    )
    """The models."""


class KnowledgeBaseAIClasses(StatusModel):
    """The classes known to the knowledge base."""

    number_of_ai_classes: int | None = Field(default=None, ge=0, alias="numberOfAIClasses")
    """Number of classes."""
    list_of_ai_classes: list[str] | None = Field(default=None, alias="listOfAIClasses")
    """The classes."""


class KnowledgeBaseSamples(StatusModel):
    """Unseen-task samples collected by the inference worker."""

    number_of_labeled_unseen_sample: int | None = Field(default=None, ge=0)
    """Unseen samples that have been labelled."""
    number_of_unseen_sample: int | None = Field(default=None, ge=0)
    """Unseen samples collected."""


class KnowledgeBaseStatus(StatusModel):
    """Summary of the knowledge base built by the job."""

    ai_models: KnowledgeBaseAIModels | None = Field(default=None, alias="AIModels")
    """The task models."""
    ai_classes: KnowledgeBaseAIClasses | None = Field(default=None, alias="AIClasses")
    """The known classes."""
    samples: KnowledgeBaseSamples | None = None
    """Unseen-task samples."""


class LifelongLearningJobStatus(StatusModel):
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
    knowledge_base: KnowledgeBaseStatus | None = None
    """Summary of the knowledge base."""
    observed_generation: int | None = Field(default=None, ge=0)
    """metadata.generation the status was computed from."""


class LifelongLearningJob(SednaObject[LifelongLearningJobSpec, LifelongLearningJobStatus]):
    """A LifelongLearningJob object."""

    KIND = "LifelongLearningJob"


KIND_INFO = ResourceKind(
    kind="LifelongLearningJob",
    plural="lifelonglearningjobs",
    singular="lifelonglearningjob",
    short_names=("ll",),
    categories=("sedna",),
    model=LifelongLearningJob,
    spec_model=LifelongLearningJobSpec,
    status_model=LifelongLearningJobStatus,
    printer_columns=(
        phase_column(),
        *STAGE_COLUMNS,
        PrinterColumn(
            "Models",
            "integer",
            ".status.knowledgeBase.AIModels.numberOfAIModels",
            "Task models in the knowledge base",
            priority=1,
        ),
        PrinterColumn("Dataset", "string", ".spec.dataset.name", "Dataset", priority=1),
    ),
    description=(
        "LifelongLearningJob learns task after task at the edge, keeping a knowledge base of "
        "task models in the cloud and detecting samples of unseen tasks."
    ),
)
