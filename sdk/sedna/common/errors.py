"""The base class of the errors the worker SDK raises on purpose.

Catching :class:`SednaError` catches every error the SDK reports about the job itself
(an unreachable cloud model, an unsupported operation, ...), not programming errors such as
``TypeError`` raised for wrong arguments.
"""

from __future__ import annotations

__all__ = ["SednaError"]


class SednaError(Exception):
    """Base class of the errors the Sedna worker SDK raises."""
