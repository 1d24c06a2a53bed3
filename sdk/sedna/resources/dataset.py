"""The Dataset kind: a sample collection on one node, watched by that node's LocalController."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from sedna.resources._base import SednaObject, SpecModel, StatusModel
from sedna.resources._meta import PrinterColumn, ResourceKind, phase_column
from sedna.resources.common import Condition, NonEmptyStr

__all__ = ["KIND_INFO", "DataPhase", "Dataset", "DatasetFormat", "DatasetSpec", "DatasetStatus"]

DatasetFormat = Literal["txt", "csv", "dir"]
"""txt and csv are index files (one sample per line); dir is a directory of samples."""

DataPhase = Literal["Pending", "Ready", "Failed"]
"""Pending until the node reports on the data, then Ready, or Failed if it cannot be read."""


class DatasetSpec(SpecModel):
    """Where the dataset lives and which node's LocalController watches it."""

    url: NonEmptyStr
    """Location of the dataset: a path on the node or an s3:// URL."""
    format: DatasetFormat
    """txt or csv for an index file with one sample per line, dir for a directory."""
    node_name: NonEmptyStr
    """Node that holds the data; its LocalController counts the samples."""
    credential_name: str | None = None
    """Secret with the S3 credentials, when url is an s3:// URL."""


class DatasetStatus(StatusModel):
    """What the LocalController last reported about the dataset."""

    phase: DataPhase | None = None
    """Pending, Ready or Failed."""
    number_of_samples: int | None = Field(default=None, ge=0)
    """Number of samples found in the dataset."""
    update_time: datetime | None = None
    """When the sample count was last updated."""
    conditions: list[Condition] | None = None
    """Observations of the dataset's state; the last one is current."""
    observed_generation: int | None = Field(default=None, ge=0)
    """metadata.generation the status was computed from."""


class Dataset(SednaObject[DatasetSpec, DatasetStatus]):
    """A Dataset object."""

    KIND = "Dataset"


KIND_INFO = ResourceKind(
    kind="Dataset",
    plural="datasets",
    singular="dataset",
    # No short name: "ds" is kubectl's name for daemonsets.
    short_names=(),
    categories=("sedna",),
    model=Dataset,
    spec_model=DatasetSpec,
    status_model=DatasetStatus,
    printer_columns=(
        PrinterColumn("Node", "string", ".spec.nodeName", "Node that holds the data"),
        PrinterColumn("Format", "string", ".spec.format", "Format of the dataset"),
        PrinterColumn("Samples", "integer", ".status.numberOfSamples", "Number of samples"),
        phase_column(),
        PrinterColumn("URL", "string", ".spec.url", "Location of the dataset", priority=1),
    ),
    description=(
        "Dataset describes a collection of samples stored on one node (or in S3) that "
        "learning jobs train and evaluate on."
    ),
)
