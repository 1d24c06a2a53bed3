"""Base classes shared by every Sedna resource model.

Three flavours of model exist, differing only in how strict they are:

* :class:`SpecModel` for what users write: unknown fields are rejected and values are not
  coerced (``"0.9"`` is not a number), so an offline check agrees with the API server.
* :class:`OpaqueObject` for embedded Kubernetes objects (pod templates and the like): the few
  fields Sedna relies on are checked, everything else is kept as is.
* :class:`StatusModel` for what controllers write: lenient, because status comes back from the
  API server as JSON written by older or newer controllers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "CelRule",
    "ObjectMeta",
    "OpaqueObject",
    "SednaModel",
    "SednaObject",
    "SpecModel",
    "StatusModel",
    "field_error",
]

GROUP = "sedna.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_RE = re.compile(rf"^{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$")
_DNS1123_LABEL_RE = re.compile(rf"^{_DNS1123_LABEL}$")


def field_error(field_path: str, error_type: str, message: str) -> PydanticCustomError:
    """Build a model-level validation error that points at a field below the model.

    Pydantic reports errors raised by a model validator at the model's own location. The
    ``field_path`` (kubectl style, relative to the model, e.g. ``.minReplicas`` or
    ``.parameters[1].key``) travels in the error context and :mod:`sedna.resources.validation`
    appends it, so the user sees the field at fault rather than its parent.

    Parameters
    ----------
    field_path
        Path of the offending field relative to the model, starting with ``.`` (or empty).
    error_type
        Machine-readable error type (``missing``, ``cel_rule``, ``duplicate`` ...).
    message
        Human-readable message.

    Returns
    -------
    PydanticCustomError
        The error to raise from the validator.
    """
    return PydanticCustomError(
        error_type, "{message}", {"message": message, "field_path": field_path}
    )


@dataclass(frozen=True)
class CelRule:
    """A validation rule enforced both by the API server (CEL) and by the pydantic model.

    The CEL text goes into the CRD as an ``x-kubernetes-validations`` entry on the schema of the
    model that declares it; ``check`` is the same rule in Python, run by the model's validator,
    so ``sedna validate`` and the API server accept and reject the same objects. The tests
    evaluate every rule with cel-python on good and bad objects and compare with ``check``.

    Parameters
    ----------
    rule
        CEL expression over ``self`` (the object this model describes).
    message
        Message shown when the rule fails.
    check
        Python predicate over the validated model instance; ``True`` means valid.
    field_path
        Field the failure is reported on (``.minReplicas``), relative to the model.
    reason
        Kubernetes cause reason (``FieldValueInvalid``, ``FieldValueForbidden`` ...).
    """

    rule: str
    message: str
    check: Callable[[Any], bool] = field(compare=False, repr=False)
    field_path: str = ""
    reason: str = "FieldValueInvalid"

    def to_schema(self) -> dict[str, str]:
        """Return the ``x-kubernetes-validations`` entry for this rule."""
        entry = {"rule": self.rule, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        entry["reason"] = self.reason
        return entry


def _schema_extra(schema: dict[str, Any], cls: type[Any]) -> None:
    rules: tuple[CelRule, ...] = getattr(cls, "cel_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [rule.to_schema() for rule in rules]


class SednaModel(BaseModel):
    """Common configuration: camelCase wire names, docstrings as schema descriptions."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=True,
        use_attribute_docstrings=True,
        json_schema_extra=_schema_extra,
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()
    """Cross-field rules of this model, shared with the CRD (see :class:`CelRule`)."""

    @model_validator(mode="after")
    def _enforce_cel_rules(self) -> Self:
        for rule in type(self).cel_rules:
            if not rule.check(self):
                raise field_error(rule.field_path, "cel_rule", rule.message)
        return self


class SpecModel(SednaModel):
    """Base of user-written objects: unknown fields and type coercion are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)

    def lint(self) -> list[tuple[str, str]]:
        """Return advisory findings that do not make the object invalid.

        Returns
        -------
        list of (str, str)
            ``(field path relative to this model, message)`` pairs; empty by default.
        """
        return []


class OpaqueObject(SednaModel):
    """Base of embedded Kubernetes objects: declared fields are checked, others kept as is."""

    model_config = ConfigDict(extra="allow", strict=True)


class StatusModel(SednaModel):
    """Base of controller-written status: lenient, ignores fields it does not know."""

    model_config = ConfigDict(extra="ignore", strict=False)


class ObjectMeta(SednaModel):
    """The standard object metadata, with the checks the API server applies to a new object."""

    model_config = ConfigDict(extra="forbid", strict=False)

    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    finalizers: list[str] | None = None
    owner_references: list[dict[str, Any]] | None = None
    # Server-populated fields: accepted so that `kubectl get -o yaml` output validates too.
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    self_link: str | None = None
    managed_fields: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _check_names(self) -> Self:
        if self.name is None:
            if not self.generate_name:
                raise field_error(".name", "missing", "Required value: name or generateName")
        elif len(self.name) > 253 or not _DNS1123_SUBDOMAIN_RE.match(self.name):
            raise field_error(
                ".name",
                "dns_subdomain",
                f'Invalid value: "{self.name}": a lowercase RFC 1123 subdomain must consist of '
                "lower case alphanumeric characters, '-' or '.', must start and end with an "
                "alphanumeric character and be at most 253 characters long",
            )
        if self.namespace is not None and (
            len(self.namespace) > 63 or not _DNS1123_LABEL_RE.match(self.namespace)
        ):
            raise field_error(
                ".namespace",
                "dns_label",
                f'Invalid value: "{self.namespace}": a lowercase RFC 1123 label must consist of '
                "lower case alphanumeric characters or '-', must start and end with an "
                "alphanumeric character and be at most 63 characters long",
            )
        return self


SpecT = TypeVar("SpecT", bound=SpecModel)
StatusT = TypeVar("StatusT", bound=StatusModel)


class SednaObject(SednaModel, Generic[SpecT, StatusT]):
    """A whole ``sedna.io/v1alpha1`` object: type meta, metadata, spec and status."""

    # Docstring extraction reads the source of the class statement, which fails for the
    # parametrised generic classes pydantic creates; the CRD builds this level by hand anyway.
    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=False)

    KIND: ClassVar[str] = ""
    """The ``kind`` this class stands for; set by each subclass."""

    api_version: str = API_VERSION
    kind: str = ""
    metadata: ObjectMeta
    spec: SpecT
    status: StatusT | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_kind(cls, data: Any) -> Any:
        # Objects built in Python may leave out the type meta; fill it from the class.
        if isinstance(data, dict) and "kind" not in data and cls.KIND:
            return {**data, "kind": cls.KIND}
        return data

    @model_validator(mode="after")
    def _check_type_meta(self) -> Self:
        if self.api_version != API_VERSION:
            raise field_error(
                ".apiVersion",
                "api_version",
                f'Unsupported value: "{self.api_version}": supported values: "{API_VERSION}"',
            )
        if self.KIND and self.kind != self.KIND:
            raise field_error(
                ".kind", "kind", f'Unsupported value: "{self.kind}": expected "{self.KIND}"'
            )
        return self
