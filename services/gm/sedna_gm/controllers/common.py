"""Pieces shared by the resource controllers: finalizer, validation, placement records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from sedna.resources.objects import ResourceObject

__all__ = [
    "CLEANUP_FINALIZER",
    "Placement",
    "add_finalizer",
    "remove_finalizer",
    "validate_spec",
]

CLEANUP_FINALIZER = "sedna.io/cleanup"
"""Held by every object a controller places on nodes, until it is removed from them."""


@dataclass(frozen=True)
class Placement:
    """What was last sent to a node for one object: resent when any of these changes."""

    node_name: str
    uid: str
    generation: int


def add_finalizer(obj: ResourceObject, finalizer: str = CLEANUP_FINALIZER) -> None:
    """Mutation: add ``finalizer`` when missing."""
    if finalizer not in obj.finalizers:
        obj.finalizers.append(finalizer)


def remove_finalizer(obj: ResourceObject, finalizer: str = CLEANUP_FINALIZER) -> None:
    """Mutation: remove ``finalizer`` when present."""
    obj.finalizers = [f for f in obj.finalizers if f != finalizer]


def validate_spec(obj: ResourceObject) -> tuple[Any, str]:
    """Validate ``obj`` against its kind's model.

    Returns
    -------
    tuple
        ``(typed object, "")`` when valid, ``(None, message)`` otherwise; the message names
        every offending field, e.g. ``spec.url: Field required``.
    """
    try:
        return obj.typed(), ""
    except ValidationError as exc:
        parts = []
        for error in exc.errors():
            path = ".".join(str(p) for p in error["loc"]) or "<object>"
            parts.append(f"{path}: {error['msg']}")
        return None, "; ".join(parts)
    except KeyError:
        return None, f"kind {obj.kind!r} is not a Sedna kind"
