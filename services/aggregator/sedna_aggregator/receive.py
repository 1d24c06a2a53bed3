"""Receive an update's ``TensorFrame`` stream chunk by chunk.

:class:`sedna.tensor.TensorAssembler` allocates every tensor of a stream when the manifest
arrives and hands them over at the end: an update then costs a whole model per stream. The
aggregator adds each chunk into the round as soon as it arrives, so :class:`LayerReceiver`
hands each chunk over as a *part* of its tensor: a flat array viewing the chunk's bytes (no
copy, no buffer). A tensor's last part is handed over only once the tensor's CRC-32 matched,
so a corrupted tensor fails before it is complete (the parts already added are backed out
with the update). A tensor whose chunks do not hold whole elements (a ``chunk_size`` that is
not a multiple of its item size) is assembled in a buffer and handed over as one part.
The protocol rules and messages are the assembler's, from the same code:
:func:`sedna.tensor.check_manifest` (sizes and limits before anything is allocated) and
:class:`sedna.tensor.StreamCursor` (chunks in order, full-sized but for a tensor's last, no
gap, no overlap, nothing past the end; CRC-32 per tensor; truncation).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sedna.api.common.v1.tensor_pb2 import TensorChunk, TensorFrame, TensorManifest
from sedna.tensor import StreamCursor, TensorLayout, TensorStreamError, check_manifest
from sedna.tensor.chunk_wire import RawChunk

__all__ = ["LayerReceiver", "ReceivedPart"]

ReceivedPart = tuple[int, str, int, np.ndarray[Any, Any]]
"""``(index, name, start, part)``: elements ``[start, start + part.size)`` (flat) of a tensor;
a tensor's last part comes after its CRC-32 matched."""


class LayerReceiver:
    """One update's tensor stream, chunk by chunk.

    Parameters
    ----------
    max_total_bytes
        Largest ``total_bytes`` of a manifest (checked before anything is allocated).
    max_tensors
        Most tensors a manifest may list.

    Any violation raises :class:`~sedna.tensor.TensorStreamError` naming the tensor, and the
    receiver stays failed (the current buffer is released). The chunk rules are
    :class:`sedna.tensor.streaming.StreamCursor`'s, as for the assembler.
    """

    def __init__(self, *, max_total_bytes: int, max_tensors: int) -> None:
        self._max_total_bytes = max_total_bytes
        self._max_tensors = max_tensors
        self._manifest: TensorManifest | None = None
        self._cursor: StreamCursor | None = None
        # A tensor whose chunks do not hold whole elements is assembled here, one at a time.
        self._buffer: np.ndarray[Any, Any] | None = None
        self._view: memoryview | None = None
        self._ready: list[ReceivedPart] = []
        self._start = 0  # the current tensor's next element (parts)
        self._failure: str | None = None

    @property
    def manifest(self) -> TensorManifest | None:
        """The manifest, once received."""
        return self._manifest

    @property
    def bytes_received(self) -> int:
        """Payload bytes received so far."""
        return 0 if self._cursor is None else self._cursor.received

    @property
    def layout(self) -> list[tuple[str, tuple[int, ...], np.dtype[Any]]]:
        """``(name, shape, dtype)`` of every tensor of the manifest."""
        layouts = () if self._cursor is None else self._cursor.layouts
        return [(t.name, t.shape, t.dtype) for t in layouts]

    def feed(self, frame: TensorFrame | RawChunk) -> list[ReceivedPart]:
        """Take the next frame; return the parts it delivered (usually one).

        Zero-size tensors come as an empty part, right after the manifest or the tensor
        before them.

        Raises
        ------
        TensorStreamError
            If the frame breaks the protocol; the receiver is failed from then on.
        """
        if self._failure is not None:
            raise TensorStreamError(f"stream already rejected: {self._failure}")
        try:
            if isinstance(frame, RawChunk):  # a chunk read without protobuf (chunk_wire)
                self._on_chunk(frame)
            else:
                kind = frame.WhichOneof("frame")
                if kind == "chunk":
                    self._on_chunk(frame.chunk)
                elif kind == "manifest":
                    self._on_manifest(frame.manifest)
                else:
                    raise TensorStreamError(
                        "frame carries neither a manifest nor a chunk (empty frame, or a kind "
                        "of frame from a newer peer)"
                    )
        except TensorStreamError as exc:
            self._fail(str(exc))
            raise
        ready, self._ready = self._ready, []
        return ready

    def finish(self) -> None:
        """Check that every tensor arrived.

        Raises
        ------
        TensorStreamError
            If the stream failed, has no manifest, or is truncated (the message says which
            tensor and how many bytes are missing).
        """
        if self._failure is not None:
            raise TensorStreamError(f"stream already rejected: {self._failure}")
        if self._cursor is None:
            raise TensorStreamError("truncated stream: no manifest received")
        self._cursor.check_complete()

    # ------------------------------------------------------------------ internals

    def _on_manifest(self, manifest: TensorManifest) -> None:
        if self._manifest is not None:
            raise TensorStreamError("second manifest: a stream carries exactly one, first")
        layouts, total = check_manifest(
            manifest, max_tensors=self._max_tensors, max_total_bytes=self._max_total_bytes
        )
        self._manifest = manifest
        self._cursor = StreamCursor(layouts, chunk_size=manifest.chunk_size, total_bytes=total)
        self._skip_empty(self._cursor)

    def _on_chunk(self, chunk: TensorChunk | RawChunk) -> None:
        cursor = self._cursor
        if cursor is None:
            raise TensorStreamError("chunk before the manifest: a stream starts with its manifest")
        index, offset = chunk.tensor_index, chunk.offset
        data = chunk.data  # read once: every access of a protobuf's field makes new bytes
        layout, data, completes = cursor.accept(index, offset, data)
        if cursor.chunk_size % layout.dtype.itemsize == 0:
            part: np.ndarray[Any, Any] = np.frombuffer(data, dtype=layout.dtype)
        else:
            self._copy_into_buffer(layout, offset, data)
            if not completes:
                return
            assert self._buffer is not None
            part, self._buffer, self._view = self._buffer.reshape(-1), None, None
        self._ready.append((index, layout.name, self._start, part))
        self._start += part.size
        if completes:
            self._start = 0
            self._skip_empty(cursor)

    def _copy_into_buffer(
        self, layout: TensorLayout, offset: int, data: bytes | memoryview
    ) -> None:
        """Copy a chunk that does not hold whole elements into its tensor's buffer."""
        if self._buffer is None or self._view is None:
            # Allocated at the tensor's first chunk: one tensor's buffer at a time.
            try:
                self._buffer = np.empty(layout.shape, dtype=layout.dtype)
            except (ValueError, MemoryError) as exc:
                raise TensorStreamError(
                    f"{layout.what}: cannot allocate shape {layout.shape}: {exc}"
                ) from None
            self._view = self._buffer.reshape(-1).view(np.uint8).data
        self._view[offset : offset + len(data)] = data

    def _skip_empty(self, cursor: StreamCursor) -> None:
        """Hand over the tensors with no bytes as empty parts (they are complete as announced)."""
        for index in cursor.skip_empty():
            layout = cursor.layouts[index]
            self._ready.append((index, layout.name, 0, np.empty(0, dtype=layout.dtype)))

    def _fail(self, reason: str) -> None:
        self._failure = reason
        self._buffer = None
        self._view = None
        self._ready = []
