"""Errors of the resource API core that are the caller's fault (gRPC INVALID_ARGUMENT)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["FieldViolation", "ManifestInvalidError", "RequestError"]


@dataclass(frozen=True)
class FieldViolation:
    """One offending field of a request or manifest.

    Parameters
    ----------
    field
        kubectl-style path (``spec.trainingWorkers[1].dataset``), or a request field name
        (``kind``, ``page_token``); empty for the request as a whole.
    description
        What is wrong with it.
    """

    field: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description}" if self.field else self.description


class RequestError(ValueError):
    """The request is unusable as sent (unknown kind, missing name, bad page token...).

    Parameters
    ----------
    message
        One line saying what is wrong.
    violations
        The offending fields; the servicer sends them to the client.
    """

    def __init__(self, message: str, violations: Iterable[FieldViolation] = ()) -> None:
        super().__init__(message)
        self.violations: tuple[FieldViolation, ...] = tuple(violations)

    @classmethod
    def for_field(cls, field: str, description: str) -> RequestError:
        """Build an error about one field, its message being ``field: description``."""
        violation = FieldViolation(field, description)
        return cls(str(violation), (violation,))


class ManifestInvalidError(RequestError):
    """A manifest failed validation; ``violations`` lists every field at fault.

    Parameters
    ----------
    label
        ``Kind namespace/name`` of the manifest, as far as it could be read.
    violations
        Every problem found, each with its field path.
    """

    def __init__(self, label: str, violations: Iterable[FieldViolation]) -> None:
        found = tuple(violations)
        details = "; ".join(str(v) for v in found) or "invalid"
        super().__init__(f"{label} is invalid: {details}", found)
        self.label = label
