"""Exceptions raised by the tensor codec and the chunked stream assembler."""

from __future__ import annotations

__all__ = ["TensorError", "TensorStreamError"]


class TensorError(ValueError):
    """A tensor cannot be encoded or decoded.

    Raised for unsupported or unknown element types, malformed shapes and contents whose size
    disagrees with dtype and shape. It subclasses :class:`ValueError` so callers that already
    treat bad input as a ``ValueError`` (gRPC handlers mapping it to ``INVALID_ARGUMENT``, say)
    need no special case.
    """


class TensorStreamError(TensorError):
    """A chunked tensor stream violates the protocol of ``TensorFrame``.

    Raised by :class:`~sedna.tensor.TensorAssembler` for frames out of order, sizes that
    disagree with the manifest, checksum mismatches, limits exceeded and truncated streams.
    """
