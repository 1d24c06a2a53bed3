"""Parameter parsing shared by the aggregation algorithms.

Parameters may arrive as numbers or as the strings a controller injects; they are converted
and range-checked here, with a ``ValueError`` naming the parameter.
"""

from __future__ import annotations

import math

__all__ = ["param_float", "param_int"]


def param_float(
    value: object,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``float(value)`` within the given bounds (closed unless ``*_open``)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (number < low or (low_open and number == low)):
        bound = ">" if low_open else ">="
        raise ValueError(f"{name} must be {bound} {low}, got {value!r}")
    if high is not None and (number > high or (high_open and number == high)):
        bound = "<" if high_open else "<="
        raise ValueError(f"{name} must be {bound} {high}, got {value!r}")
    return number


def param_int(value: object, name: str, *, low: int | None = None) -> int:
    """An integer (an ``int`` or a string of one) no smaller than ``low``."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    if number is None:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if low is not None and number < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    return number
