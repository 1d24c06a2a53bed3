"""Standard Kubernetes conditions in a status dict (``status.conditions``, one per type).

``lastTransitionTime`` changes only when a condition's status changes, so it tells when the
object last *became* ready or not; reason, message and observedGeneration are refreshed in
place. Timestamps are RFC 3339 strings in UTC with second precision, as the API server writes.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "ConditionStatus",
    "find_condition",
    "is_condition_true",
    "remove_condition",
    "rfc3339",
    "set_condition",
    "utcnow",
]

ConditionStatus = Literal["True", "False", "Unknown"]
_STATUSES = ("True", "False", "Unknown")


def utcnow() -> datetime:
    """The current time in UTC, truncated to seconds."""
    return datetime.now(UTC).replace(microsecond=0)


def rfc3339(value: datetime) -> str:
    """Format ``value`` (naive means UTC) as ``2024-01-02T03:04:05Z``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def find_condition(status: MutableMapping[str, Any], type_: str) -> dict[str, Any] | None:
    """The condition of ``type_`` in ``status``, or None."""
    for condition in status.get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == type_:
            return condition
    return None


def is_condition_true(status: MutableMapping[str, Any], type_: str) -> bool:
    """True when the condition of ``type_`` exists with status ``"True"``."""
    condition = find_condition(status, type_)
    return condition is not None and condition.get("status") == "True"


def set_condition(
    status: MutableMapping[str, Any],
    type_: str,
    condition_status: ConditionStatus,
    reason: str,
    message: str = "",
    *,
    observed_generation: int | None = None,
    now: datetime | None = None,
) -> bool:
    """Set the condition of ``type_`` in ``status`` (in place).

    Parameters
    ----------
    status
        The object's status dict; ``conditions`` is created when missing.
    type_
        Condition type, e.g. ``"Ready"``.
    condition_status
        ``"True"``, ``"False"`` or ``"Unknown"``.
    reason
        One-word CamelCase reason.
    message
        Human-readable details.
    observed_generation
        ``metadata.generation`` the condition was computed from.
    now
        Transition time to use (default: now).

    Returns
    -------
    bool
        True when anything changed (the caller can skip a no-op write).

    Raises
    ------
    ValueError
        ``condition_status`` is not True/False/Unknown, or ``type_`` is empty.
    """
    if condition_status not in _STATUSES:
        raise ValueError(
            f"condition {type_!r}: status must be one of {', '.join(_STATUSES)}, "
            f"got {condition_status!r}"
        )
    if not type_:
        raise ValueError("condition type must not be empty")
    conditions = status.get("conditions")
    if not isinstance(conditions, list):
        conditions = []
        status["conditions"] = conditions
    wanted: dict[str, Any] = {"type": type_, "status": condition_status, "reason": reason}
    if message:
        wanted["message"] = message
    if observed_generation is not None:
        wanted["observedGeneration"] = observed_generation
    existing = find_condition(status, type_)
    if existing is None:
        wanted["lastTransitionTime"] = rfc3339(now or utcnow())
        conditions.append(wanted)
        return True
    if existing.get("status") != condition_status:
        wanted["lastTransitionTime"] = rfc3339(now or utcnow())
    else:
        wanted["lastTransitionTime"] = existing.get("lastTransitionTime") or rfc3339(
            now or utcnow()
        )
    # Keep upstream-only fields (lastHeartbeatTime, data...) other writers may have set.
    merged = {
        **{k: v for k, v in existing.items() if k not in ("message", "observedGeneration")},
        **wanted,
    }
    if merged == existing:
        return False
    existing.clear()
    existing.update(merged)
    return True


def remove_condition(status: MutableMapping[str, Any], type_: str) -> bool:
    """Remove the condition of ``type_``; True when one was removed."""
    conditions = status.get("conditions") or []
    kept = [c for c in conditions if not (isinstance(c, dict) and c.get("type") == type_)]
    if len(kept) == len(conditions):
        return False
    status["conditions"] = kept
    return True
