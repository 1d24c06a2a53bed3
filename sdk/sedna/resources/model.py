"""The Model kind: a trained model artifact that workers load or produce."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from sedna.resources._base import SednaObject, SpecModel, StatusModel
from sedna.resources._meta import PrinterColumn, ResourceKind, phase_column
from sedna.resources.common import Condition, Metric, NonEmptyStr
from sedna.resources.dataset import DataPhase

__all__ = ["KIND_INFO", "Model", "ModelSpec", "ModelStatus"]


class ModelSpec(SpecModel):
    """Where the model artifact lives and in which format."""

    url: NonEmptyStr
    """Location of the model: a path on the node or an s3:// URL."""
    format: NonEmptyStr
    """Format of the artifact, a free string such as pb, ckpt, pkl, pth or onnx."""
    device_soc_versions: list[str] | None = Field(default=None, alias="device_soc_versions")
    """Device SoC versions the model was built for (upstream spells this field in snake_case)."""
    credential_name: str | None = None
    """Secret with the S3 credentials, when url is an s3:// URL."""


class ModelStatus(StatusModel):
    """What the workers last reported about the model."""

    phase: DataPhase | None = None
    """Pending, Ready or Failed."""
    update_time: datetime | None = None
    """When the model was last updated."""
    metrics: list[Metric] | None = None
    """Metrics of the model, reported by the workers that trained or evaluated it."""
    conditions: list[Condition] | None = None
    """Observations of the model's state; the last one is current."""
    observed_generation: int | None = Field(default=None, ge=0)
    """metadata.generation the status was computed from."""


class Model(SednaObject[ModelSpec, ModelStatus]):
    """A Model object."""

    KIND = "Model"


KIND_INFO = ResourceKind(
    kind="Model",
    plural="models",
    singular="model",
    short_names=(),
    categories=("sedna",),
    model=Model,
    spec_model=ModelSpec,
    status_model=ModelStatus,
    printer_columns=(
        PrinterColumn("Format", "string", ".spec.format", "Format of the model"),
        phase_column(),
        PrinterColumn("URL", "string", ".spec.url", "Location of the model", priority=1),
    ),
    description="Model describes a model artifact that workers load, train or evaluate.",
)
