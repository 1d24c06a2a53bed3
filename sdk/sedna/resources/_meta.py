"""Kind metadata: names, printer columns and the models of each ``sedna.io`` kind."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sedna.resources._base import API_VERSION, GROUP, SednaObject, SpecModel, StatusModel

__all__ = [
    "AGE_COLUMN",
    "PrinterColumn",
    "ResourceKind",
    "active_column",
    "failed_column",
    "phase_column",
    "succeeded_column",
]

ColumnType = Literal["string", "integer", "number", "boolean", "date"]


@dataclass(frozen=True)
class PrinterColumn:
    """A column that ``kubectl get`` (and ``sedna get``) prints for a kind.

    Parameters
    ----------
    name
        Column header (kubectl shows it upper-cased).
    type
        OpenAPI type of the value: string, integer, number, boolean or date.
    json_path
        Simple JSONPath into the object, e.g. ``.status.phase``.
    description
        What the column shows.
    priority
        0 for the default view, 1 and more for ``-o wide`` only.
    """

    name: str
    type: ColumnType
    json_path: str
    description: str
    priority: int = 0

    def to_crd(self) -> dict[str, Any]:
        """Return the ``additionalPrinterColumns`` entry."""
        column: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.json_path,
            "description": self.description,
        }
        if self.priority:
            column["priority"] = self.priority
        return column


AGE_COLUMN = PrinterColumn(
    "Age", "date", ".metadata.creationTimestamp", "Time since the object was created"
)


def phase_column() -> PrinterColumn:
    """Return the ``Phase`` column (``.status.phase``)."""
    return PrinterColumn("Phase", "string", ".status.phase", "Current phase of the object")


def active_column(what: str = "workers") -> PrinterColumn:
    """Return the ``Active`` column (``.status.active``)."""
    return PrinterColumn("Active", "integer", ".status.active", f"Number of running {what}")


def succeeded_column(what: str = "pods") -> PrinterColumn:
    """Return the ``Succeeded`` column (``.status.succeeded``)."""
    return PrinterColumn(
        "Succeeded", "integer", ".status.succeeded", f"Number of {what} that succeeded"
    )


def failed_column(what: str = "workers") -> PrinterColumn:
    """Return the ``Failed`` column (``.status.failed``)."""
    return PrinterColumn("Failed", "integer", ".status.failed", f"Number of {what} that failed")


@dataclass(frozen=True)
class ResourceKind:
    """Everything known about one ``sedna.io/v1alpha1`` kind.

    Parameters
    ----------
    kind
        The kind, e.g. ``JointInferenceService``.
    plural
        Resource name used in URLs and by kubectl, e.g. ``jointinferenceservices``.
    singular
        Lower-case singular name, e.g. ``jointinferenceservice``.
    short_names
        Abbreviations accepted by kubectl, e.g. ``("ji",)``.
    categories
        Groups this kind belongs to (``kubectl get sedna`` lists every kind in ``sedna``).
    model
        The pydantic model of a whole object.
    spec_model
        The pydantic model of ``spec``.
    status_model
        The pydantic model of ``status``.
    printer_columns
        Columns shown by ``kubectl get``, before the trailing Age column.
    description
        One-paragraph description, used as the CRD's schema description.
    """

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    categories: tuple[str, ...]
    model: type[SednaObject[Any, Any]]
    spec_model: type[SpecModel]
    status_model: type[StatusModel]
    printer_columns: tuple[PrinterColumn, ...]
    description: str

    @property
    def group(self) -> str:
        """API group, ``sedna.io``."""
        return GROUP

    @property
    def api_version(self) -> str:
        """``sedna.io/v1alpha1``."""
        return API_VERSION

    @property
    def list_kind(self) -> str:
        """Kind of the list type, e.g. ``DatasetList``."""
        return f"{self.kind}List"

    @property
    def crd_name(self) -> str:
        """Name of the CustomResourceDefinition, e.g. ``datasets.sedna.io``."""
        return f"{self.plural}.{GROUP}"

    @property
    def names(self) -> tuple[str, ...]:
        """Every name the kind can be looked up by, lower-case: kind, plural, singular, short."""
        names = (self.kind.lower(), self.plural, self.singular, *self.short_names)
        return tuple(dict.fromkeys(names))

    @property
    def all_printer_columns(self) -> tuple[PrinterColumn, ...]:
        """The printer columns including the trailing Age column."""
        return (*self.printer_columns, AGE_COLUMN)
