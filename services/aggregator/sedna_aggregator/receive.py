"""Receive an update's ``TensorFrame`` stream chunk by chunk.

:class:`sedna.tensor.TensorAssembler` allocates every tensor of a stream when the manifest
arrives and hands them over at the end: an update then costs a whole model per stream. The
aggregator adds each chunk into the round as soon as it arrives, so :class:`LayerReceiver`
hands each chunk over as a *part* of its tensor: a flat array viewing the chunk's bytes (no
copy, no buffer). A tensor's last part is handed over only once the tensor's CRC-32 matched,
so a corrupted tensor fails before it is complete (the parts already added are backed out
with the update). A tensor whose chunks do not hold whole elements (a ``chunk_size`` that is
not a multiple of its item size) is assembled in a buffer and handed over as one part.
The protocol rules and messages are the assembler's (manifest sizes and limits before
anything is allocated; chunks in order, full-sized but for a tensor's last, no gap, no
overlap, nothing past the end; CRC-32 per tensor; truncation).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sedna.api.common.v1.tensor_pb2 import TensorChunk, TensorFrame, TensorManifest
from sedna.tensor import TensorStreamError
from sedna.tensor._wire import describe
from sedna.tensor.chunk_wire import RawChunk
from sedna.tensor.crc import crc32
from sedna.tensor.streaming import check_manifest

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
    receiver stays failed (the current buffer is released).
    """

    def __init__(self, *, max_total_bytes: int, max_tensors: int) -> None:
        self._max_total_bytes = max_total_bytes
        self._max_tensors = max_tensors
        self._manifest: TensorManifest | None = None
        self._layouts: list[tuple[str, tuple[int, ...], np.dtype[Any], int, int]] = []
        self._chunk_size = 0
        self._total = 0
        self._current = 0
        self._offset = 0
        self._crc = 0
        self._buffer: np.ndarray[Any, Any] | None = None
        self._view: memoryview | None = None
        self._received = 0
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
        return self._received

    @property
    def layout(self) -> list[tuple[str, tuple[int, ...], np.dtype[Any]]]:
        """``(name, shape, dtype)`` of every tensor of the manifest."""
        return [(name, shape, dtype) for name, shape, dtype, _n, _crc in self._layouts]

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
                ready, self._ready = self._ready, []
                return ready
            kind = frame.WhichOneof("frame")
            if kind == "chunk":
                self._on_chunk(frame.chunk)
            elif kind == "manifest":
                self._on_manifest(frame.manifest)
            else:
                raise TensorStreamError(
                    "frame carries neither a manifest nor a chunk (empty frame, or a kind of "
                    "frame from a newer peer)"
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
        if self._manifest is None:
            raise TensorStreamError("truncated stream: no manifest received")
        if self._current < len(self._layouts):
            name, _shape, _dtype, length, _crc = self._layouts[self._current]
            missing = length - self._offset
            raise TensorStreamError(
                f"truncated stream: {describe(name, self._current)} is missing {missing} of "
                f"its {length} bytes; {self._total - self._received} of {self._total} bytes "
                f"missing in all ({len(self._layouts) - self._current} of "
                f"{len(self._layouts)} tensors incomplete)"
            )

    # ------------------------------------------------------------------ internals

    def _on_manifest(self, manifest: TensorManifest) -> None:
        if self._manifest is not None:
            raise TensorStreamError("second manifest: a stream carries exactly one, first")
        checked, total = check_manifest(
            manifest, max_tensors=self._max_tensors, max_total_bytes=self._max_total_bytes
        )
        layouts = [(t.name, t.shape, t.dtype, t.byte_length, t.crc32) for t in checked]
        self._manifest = manifest
        self._layouts = layouts
        self._chunk_size = manifest.chunk_size
        self._total = total
        self._advance()

    def _on_chunk(self, chunk: TensorChunk | RawChunk) -> None:
        if self._manifest is None:
            raise TensorStreamError("chunk before the manifest: a stream starts with its manifest")
        layouts = self._layouts
        if self._current == len(layouts):
            raise TensorStreamError(
                f"frame after the stream completed (all {self._total} bytes of "
                f"{len(layouts)} tensors already received)"
            )
        index = chunk.tensor_index
        if index >= len(layouts):
            raise TensorStreamError(
                f"chunk tensor_index {index} is out of range: the manifest lists "
                f"{len(layouts)} tensors"
            )
        name, _shape, _dtype, length, expected_crc = layouts[self._current]
        what = describe(name, self._current)
        if index != self._current:
            other = describe(layouts[index][0], index)
            state = "already complete" if index < self._current else "not started"
            raise TensorStreamError(
                f"chunk for {other} ({state}) while {what} is incomplete at byte "
                f"{self._offset} of {length}: chunks must follow manifest order"
            )
        offset = chunk.offset
        if offset != self._offset:
            problem = (
                "duplicate or overlapping chunk"
                if offset < self._offset
                else f"gap of {offset - self._offset} bytes"
            )
            raise TensorStreamError(
                f"{what}: {problem}: chunk at offset {offset}, but bytes "
                f"[0, {self._offset}) arrived and the next one expected is {self._offset}"
            )
        data = chunk.data  # read once: every access of a protobuf's field makes new bytes
        size = len(data)
        end = offset + size
        if size > self._chunk_size:
            raise TensorStreamError(
                f"{what}: chunk of {size} bytes at offset {offset} is larger than the "
                f"manifest's chunk_size {self._chunk_size}"
            )
        if end > length:
            raise TensorStreamError(
                f"{what}: data past the tensor's end: chunk covers bytes [{offset}, {end}) "
                f"of a {length}-byte tensor"
            )
        if size < self._chunk_size and end != length:
            raise TensorStreamError(
                f"{what}: short chunk of {size} bytes at offset {offset}: only a tensor's "
                f"last chunk may be shorter than chunk_size {self._chunk_size}, and this one "
                f"ends at {end} of {length} bytes"
            )
        part = self._take(data, offset, what)
        self._crc = crc32(data, self._crc)
        self._offset = end
        self._received += size
        if end < length:
            if part is not None:
                self._ready.append((self._current, name, self._start, part))
                self._start += part.size
            return
        if self._crc != expected_crc:
            raise TensorStreamError(
                f"{what}: CRC-32 mismatch: the manifest says {expected_crc:#010x}, the "
                f"{length} bytes received hash to {self._crc:#010x}"
            )
        if part is None:
            assert self._buffer is not None
            part = self._buffer.reshape(-1)
            self._buffer = None
            self._view = None
        self._ready.append((self._current, name, self._start, part))
        self._current += 1
        self._advance()

    def _take(
        self, data: bytes | memoryview, offset: int, what: str
    ) -> np.ndarray[Any, Any] | None:
        """The chunk as a part (a view of it), or None once copied into the tensor's buffer
        (chunks that do not hold whole elements)."""
        _name, shape, dtype, _length, _crc = self._layouts[self._current]
        if self._chunk_size % dtype.itemsize == 0:
            return np.frombuffer(data, dtype=dtype)
        if self._buffer is None or self._view is None:
            # Allocated at the tensor's first chunk: one tensor's buffer at a time.
            try:
                self._buffer = np.empty(shape, dtype=dtype)
            except (ValueError, MemoryError) as exc:
                raise TensorStreamError(f"{what}: cannot allocate shape {shape}: {exc}") from None
            self._view = self._buffer.reshape(-1).view(np.uint8).data
        self._view[offset : offset + len(data)] = data
        return None

    def _advance(self) -> None:
        """Move past tensors with no bytes (they are complete as announced)."""
        layouts = self._layouts
        while self._current < len(layouts) and layouts[self._current][3] == 0:
            name, _shape, dtype, _length, expected_crc = layouts[self._current]
            if expected_crc != 0:
                raise TensorStreamError(
                    f"{describe(name, self._current)}: CRC-32 mismatch: the manifest says "
                    f"{expected_crc:#010x}, the 0 bytes received hash to 0x00000000"
                )
            self._ready.append((self._current, name, 0, np.empty(0, dtype=dtype)))
            self._current += 1
        self._offset = 0
        self._crc = 0
        self._start = 0

    def _fail(self, reason: str) -> None:
        self._failure = reason
        self._buffer = None
        self._view = None
        self._ready = []
