"""The registry of ``sedna.io/v1alpha1`` kinds, searchable by any of their names."""

from __future__ import annotations

import difflib

from sedna.resources import (
    dataset,
    federatedlearning,
    incrementallearning,
    jointinference,
    lifelonglearning,
    model,
    multiedge,
)
from sedna.resources._meta import ResourceKind

__all__ = ["KINDS", "UnknownKindError", "all_kinds", "find_kind", "get_kind"]

KINDS: tuple[ResourceKind, ...] = (
    dataset.KIND_INFO,
    model.KIND_INFO,
    jointinference.KIND_INFO,
    federatedlearning.KIND_INFO,
    incrementallearning.KIND_INFO,
    lifelonglearning.KIND_INFO,
    multiedge.OBJECT_SEARCH_KIND,
    multiedge.OBJECT_TRACKING_KIND,
    multiedge.REID_KIND,
    multiedge.VIDEO_ANALYTICS_KIND,
    multiedge.FEATURE_EXTRACTION_KIND,
)
"""Every kind, in a stable order (data first, then the features)."""

_BY_NAME: dict[str, ResourceKind] = {name: info for info in KINDS for name in info.names}
# A name used twice would make lookups ambiguous; fail at import rather than at `sedna get`.
if len(_BY_NAME) != sum(len(info.names) for info in KINDS):
    raise RuntimeError("two Sedna kinds share a name")


class UnknownKindError(KeyError):
    """Raised by :func:`get_kind` for a name that matches no kind.

    Parameters
    ----------
    name
        The name that was looked up.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.suggestions = difflib.get_close_matches(name.lower(), _BY_NAME, n=3)
        super().__init__(name)

    def __str__(self) -> str:
        hint = f" (did you mean {', '.join(self.suggestions)}?)" if self.suggestions else ""
        return f'unknown Sedna kind "{self.name}"{hint}'


def all_kinds() -> tuple[ResourceKind, ...]:
    """Return every Sedna kind.

    Returns
    -------
    tuple of ResourceKind
        The eleven kinds, in a stable order.
    """
    return KINDS


def find_kind(name: str) -> ResourceKind | None:
    """Look a kind up by kind, plural, singular or short name, ignoring case.

    Parameters
    ----------
    name
        For example ``JointInferenceService``, ``jointinferenceservices``, ``ji``; a
        ``<plural>.sedna.io`` form is accepted too.

    Returns
    -------
    ResourceKind or None
        The kind, or ``None`` when nothing matches.
    """
    key = name.strip().lower()
    key = key.removesuffix(".sedna.io")
    return _BY_NAME.get(key)


def get_kind(name: str) -> ResourceKind:
    """Look a kind up like :func:`find_kind`, raising when nothing matches.

    Parameters
    ----------
    name
        Kind, plural, singular or short name.

    Returns
    -------
    ResourceKind
        The kind.

    Raises
    ------
    UnknownKindError
        When no kind has that name; the error carries close matches as suggestions.
    """
    info = find_kind(name)
    if info is None:
        raise UnknownKindError(name)
    return info
