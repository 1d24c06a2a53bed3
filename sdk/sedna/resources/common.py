"""Types shared by several Sedna kinds: references, triggers, templates, HPA and conditions.

Field names are the upstream ``sedna.io/v1alpha1`` JSON names (the Python attribute is the
snake_case form; the alias is what appears in YAML), so upstream manifests load unchanged.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import AfterValidator, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from sedna.resources._base import CelRule, OpaqueObject, SpecModel, StatusModel, field_error

__all__ = [
    "TIME_OF_DAY_PATTERN",
    "TRIGGER_OPERATORS",
    "Condition",
    "ConditionStatus",
    "Container",
    "DatasetReference",
    "DeploymentSpec",
    "HPASpec",
    "HardExampleMining",
    "JobSpec",
    "LabelSelector",
    "Metric",
    "ModelReference",
    "NonEmptyStr",
    "ParaSpec",
    "PodSpec",
    "PodTemplateSpec",
    "Stage",
    "StageCondition",
    "TimeOfDay",
    "Timer",
    "TrainingDataset",
    "Trigger",
    "TriggerCondition",
    "TriggerOperator",
    "WorkloadPhase",
]

TriggerOperator = Literal["gt", ">", "ge", ">=", "eq", "=", "==", "ne", "!=", "le", "<=", "lt", "<"]
"""Comparison operators the LocalController's trigger understands (upstream's set)."""

TRIGGER_OPERATORS: tuple[str, ...] = get_args(TriggerOperator)

ConditionStatus = Literal["True", "False", "Unknown"]
"""The status of a condition, as in every Kubernetes API."""

WorkloadPhase = Literal["Pending", "Running", "Succeeded", "Failed"]
"""The one-word summary of a job or service, kept in ``status.phase``."""

Stage = Literal["Train", "Eval", "Deploy"]
"""The stages of the incremental and lifelong learning state machines."""

# 24:00 is accepted as the end of the day: upstream's lifelong learning examples use
# `end: 24:00`, and the LocalController compares "HH:MM" strings, so it means "until midnight".
TIME_OF_DAY_PATTERN = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"
_TIME_OF_DAY_RE = re.compile(TIME_OF_DAY_PATTERN)


def _check_time_of_day(value: str) -> str:
    if not _TIME_OF_DAY_RE.match(value):
        message = (
            f'Invalid value: "{value}": must be a time of day in 24-hour "HH:MM" form, '
            "from 00:00 to 24:00"
        )
        raise PydanticCustomError("time_of_day", "{message}", {"message": message})
    return value


TimeOfDay = Annotated[
    str,
    AfterValidator(_check_time_of_day),
    WithJsonSchema({"type": "string", "pattern": TIME_OF_DAY_PATTERN}),
]
"""A time of day, ``"HH:MM"`` on a 24-hour clock (``"24:00"`` is the end of the day)."""

NonEmptyStr = Annotated[str, Field(min_length=1)]


# --- references and small value types -----------------------------------------------------------


class Metric(StatusModel):
    """A named value reported by a worker (both key and value are strings)."""

    key: str
    """Metric name."""
    value: str
    """Metric value, as a string."""


class ParaSpec(SpecModel):
    """A key/value parameter passed to a plug-in algorithm."""

    key: NonEmptyStr
    """Parameter name."""
    value: str
    """Parameter value, always a string (quote numbers in YAML)."""


class ModelReference(SpecModel):
    """A reference to a Model object in the same namespace."""

    name: NonEmptyStr
    """Name of the Model."""


class DatasetReference(SpecModel):
    """A reference to a Dataset object in the same namespace."""

    name: NonEmptyStr
    """Name of the Dataset."""


class TrainingDataset(SpecModel):
    """The Dataset a learning job trains on, and how new samples are split."""

    name: NonEmptyStr
    """Name of the Dataset."""
    train_prob: float = Field(ge=0, le=1)
    """Fraction of new samples used for training (the rest is used for evaluation), 0 to 1."""


class HardExampleMining(SpecModel):
    """The hard example mining algorithm run next to the inference worker."""

    name: NonEmptyStr
    """Registered name of the algorithm (for example IBT, CrossEntropy, Threshold, Random)."""
    parameters: list[ParaSpec] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["key"]},
    )
    """Parameters of the algorithm; each key at most once."""

    @model_validator(mode="after")
    def _unique_parameter_keys(self) -> Self:
        seen: set[str] = set()
        for index, parameter in enumerate(self.parameters or []):
            if parameter.key in seen:
                raise field_error(
                    f".parameters[{index}].key",
                    "duplicate",
                    f'Duplicate value: "{parameter.key}"',
                )
            seen.add(parameter.key)
        return self


class HPASpec(SpecModel):
    """Horizontal pod autoscaling for a worker Deployment (autoscaling/v2 fields)."""

    cel_rules = (
        CelRule(
            rule="!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
            message="minReplicas must be less than or equal to maxReplicas",
            check=lambda hpa: hpa.min_replicas is None or hpa.min_replicas <= hpa.max_replicas,
            field_path=".minReplicas",
        ),
    )

    min_replicas: int | None = Field(default=None, ge=1)
    """Lower limit for the number of replicas (the HPA defaults it to 1)."""
    max_replicas: int = Field(ge=1)
    """Upper limit for the number of replicas."""
    metrics: list[dict[str, Any]] | None = None
    """autoscaling/v2 MetricSpec entries, passed to the HorizontalPodAutoscaler as they are."""
    behavior: dict[str, Any] | None = None
    """autoscaling/v2 HorizontalPodAutoscalerBehavior, passed through as is."""


# --- triggers ---------------------------------------------------------------------------------


class Timer(SpecModel):
    """A daily time window."""

    start: TimeOfDay
    """Start of the window, "HH:MM"."""
    end: TimeOfDay
    """End of the window, "HH:MM" ("24:00" for midnight)."""


class TriggerCondition(SpecModel):
    """A comparison of a metric against a threshold."""

    operator: TriggerOperator
    """Comparison operator."""
    threshold: float
    """Value the metric is compared with."""
    metric: NonEmptyStr
    """Metric name, for example num_of_samples or precision_delta."""


class Trigger(SpecModel):
    """When the LocalController starts a stage: a condition, optionally inside a time window."""

    check_period_seconds: int | None = Field(default=None, ge=1)
    """How often the condition is checked, in seconds."""
    timer: Timer | None = None
    """Daily window outside which the trigger never fires."""
    condition: TriggerCondition
    """The condition that fires the trigger."""


# --- embedded Kubernetes objects --------------------------------------------------------------


class Container(OpaqueObject):
    """A container of a worker pod (core/v1 Container); fields other than name pass through."""

    name: NonEmptyStr
    """Name of the container."""


class PodSpec(OpaqueObject):
    """A worker pod spec (core/v1 PodSpec); fields other than containers pass through."""

    containers: list[Container] = Field(min_length=1)
    """The containers of the pod; at least one."""


class PodTemplateSpec(OpaqueObject):
    """Template of a worker pod (core/v1 PodTemplateSpec)."""

    metadata: dict[str, Any] | None = None
    """Labels and annotations given to the pod."""
    spec: PodSpec
    """Spec of the pod."""


class LabelSelector(OpaqueObject):
    """A label query over pods (meta/v1 LabelSelector)."""

    match_labels: dict[str, str] | None = None
    """Labels that must all be present with these values."""
    match_expressions: list[dict[str, Any]] | None = None
    """Set-based requirements (key, operator, values)."""


class DeploymentSpec(SpecModel):
    """The fields of an apps/v1 DeploymentSpec."""

    replicas: int | None = Field(default=None, ge=0)
    """Number of desired pods."""
    selector: LabelSelector
    """Label selector for the pods; must match the template's labels."""
    template: PodTemplateSpec
    """Template of the pods."""
    strategy: dict[str, Any] | None = None
    """How pods are replaced (apps/v1 DeploymentStrategy)."""
    min_ready_seconds: int | None = Field(default=None, ge=0)
    """Seconds a new pod must be ready before it counts as available."""
    revision_history_limit: int | None = Field(default=None, ge=0)
    """Number of old ReplicaSets kept for rollback."""
    paused: bool | None = None
    """Whether the rollout is paused."""
    progress_deadline_seconds: int | None = Field(default=None, ge=0)
    """Seconds before a stalled rollout is reported as failed."""


class JobSpec(SpecModel):
    """The fields of a batch/v1 JobSpec (Sedna runs a single pod from the template)."""

    parallelism: int | None = Field(default=None, ge=0)
    """Maximum number of pods running at once."""
    completions: int | None = Field(default=None, ge=0)
    """Number of successful pods wanted."""
    active_deadline_seconds: int | None = Field(default=None, ge=0)
    """Time limit for the job, in seconds."""
    pod_failure_policy: dict[str, Any] | None = None
    """How pod failures count (batch/v1 PodFailurePolicy)."""
    success_policy: dict[str, Any] | None = None
    """When the job counts as succeeded (batch/v1 SuccessPolicy)."""
    backoff_limit: int | None = Field(default=None, ge=0)
    """Retries before the job is marked failed."""
    backoff_limit_per_index: int | None = Field(default=None, ge=0)
    """Retries per index of an indexed job."""
    max_failed_indexes: int | None = Field(default=None, ge=0)
    """Failed indexes tolerated by an indexed job."""
    selector: LabelSelector | None = None
    """Label selector for the pods."""
    manual_selector: bool | None = None
    """Whether the selector is managed by hand."""
    template: PodTemplateSpec
    """Template of the pod."""
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    """Seconds after which a finished job is deleted."""
    completion_mode: str | None = None
    """NonIndexed or Indexed."""
    suspend: bool | None = None
    """Whether the job is suspended."""
    pod_replacement_policy: str | None = None
    """When failed pods are replaced."""
    managed_by: str | None = None
    """Controller that manages the job."""


# --- status -----------------------------------------------------------------------------------


class Condition(StatusModel):
    """One observation of the object's state (conditions are appended; the last one is current).

    The standard Kubernetes condition fields plus upstream Sedna's lastHeartbeatTime,
    lastProbeTime and data.
    """

    type: str
    """Type of the condition (the values depend on the kind)."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str | None = None
    """One-word CamelCase reason for the last transition."""
    message: str | None = None
    """Human-readable details."""
    last_transition_time: datetime | None = None
    """When the condition last changed status."""
    observed_generation: int | None = Field(default=None, ge=0)
    """metadata.generation the condition was computed from."""
    last_heartbeat_time: datetime | None = None
    """When the condition was last refreshed."""
    last_probe_time: datetime | None = None
    """When the condition was last probed."""
    data: str | None = None
    """JSON document with the inputs and outputs of the step this condition reports."""


class StageCondition(Condition):
    """A condition of the incremental/lifelong learning state machine, tagged with its stage."""

    stage: Stage
    """Train, Eval or Deploy."""
