"""Sedna: an edge-cloud synergy AI framework.

This package is the worker SDK (the upstream-compatible ``sedna.core``, ``sedna.algorithms`` ...
API) and the shared runtime every Sedna service is built on (``sedna.runtime``), the wire
contracts generated from ``proto/`` (``sedna.api``), the tensor codec (``sedna.tensor``) and the
resource models of the ``sedna.io/v1alpha1`` kinds (``sedna.resources``).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sedna")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
