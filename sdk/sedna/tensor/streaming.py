"""Chunked tensor streams: ``TensorFrame`` messages out of arrays, and back into arrays.

A stream is one ``TensorManifest`` (every tensor's name, dtype, shape, byte length and CRC-32,
the total and the chunk size) followed by ``TensorChunk`` frames carrying each tensor's
little-endian row-major bytes, tensor after tensor, in order, every chunk but a tensor's last
exactly ``chunk_size`` bytes long. Zero-size tensors send no chunk.

Memory is the point of this module. The sender slices the arrays it is given through
``memoryview`` and copies each chunk only to hand it to protobuf (or, through
:meth:`FramePlan.chunks` and :mod:`sedna.tensor.chunk_wire`, straight into the serialized
message); the receiver (:class:`TensorAssembler`) allocates every tensor once, at its final size,
and writes each chunk straight into it, from a protobuf ``TensorChunk`` or from a
:class:`~sedna.tensor.chunk_wire.RawChunk` viewing the received bytes. Besides the payload
itself, either side holds about one chunk at a time, so an aggregator holds about one model per
stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from sedna.api.common.v1.tensor_pb2 import (
    TensorChunk,
    TensorFrame,
    TensorManifest,
)
from sedna.tensor._wire import (
    NamedArrays,
    as_wire_array,
    check_bool_bytes,
    checked_nbytes,
    describe,
    describe_layout,
    iter_named,
    wire_dtype,
)
from sedna.tensor.chunk_wire import RawChunk
from sedna.tensor.crc import crc32
from sedna.tensor.errors import TensorError, TensorStreamError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_TENSORS",
    "DEFAULT_MAX_TOTAL_BYTES",
    "MAX_CHUNK_SIZE",
    "FramePlan",
    "StreamCursor",
    "TensorAssembler",
    "TensorLayout",
    "aiter_frames",
    "assemble",
    "assemble_sync",
    "check_manifest",
    "iter_frames",
    "plan_frames",
]

DEFAULT_CHUNK_SIZE: Final = 4 << 20
"""4 MiB: a sixteenth of the 64 MiB message limit of Sedna's channels and servers
(``max_*_message_bytes``), and large enough that the per-message costs (a gRPC read or write, an
event-loop turn, interceptors) stay a few percent of a 100 MB stream: 1 MiB chunks spent a
quarter of an aggregator's CPU on them. A peer whose message limit is gRPC's default 4 MiB
needs a smaller ``chunk_size``."""

MAX_CHUNK_SIZE: Final = (1 << 32) - 1
"""``TensorManifest.chunk_size`` is a uint32."""

DEFAULT_MAX_TOTAL_BYTES: Final = 1 << 30
"""1 GiB: a receiver refuses larger streams unless told otherwise."""

DEFAULT_MAX_TENSORS: Final = 65_536
"""A receiver refuses manifests listing more tensors unless told otherwise."""


# --------------------------------------------------------------------------------------------
# Sending


def iter_frames(
    tensors: NamedArrays, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Iterator[TensorFrame]:
    """Encode named arrays as a chunked ``TensorFrame`` stream.

    The arrays are checked, laid out and checksummed when this is called, so errors surface
    here rather than mid-stream; frames are then produced lazily, one chunk at a time.

    Parameters
    ----------
    tensors
        A mapping of names to arrays, or an iterable of ``(name, array)`` pairs (names may
        repeat or be empty in that form). Little-endian C-contiguous arrays are streamed from
        their own memory without a copy; others are converted to that layout once, up front.
        **Do not modify the arrays until the stream is consumed**: the manifest's CRC-32 is
        computed now, the chunks are read later.
    chunk_size
        Bytes per chunk, 1 to ``MAX_CHUNK_SIZE``. Keep it well under the channel's maximum
        message size.

    Returns
    -------
    Iterator of TensorFrame
        The manifest frame, then the chunk frames of every tensor in order. A chunk is copied
        out of its array only as it goes into its message: the protobuf runtime accepts nothing
        but ``bytes`` and copies those into the message, so each frame costs two chunk-sized
        copies, both freed with the frame.

    Raises
    ------
    TensorError
        If ``chunk_size`` is out of range, an item is not a ``(name, array)`` pair, or a dtype
        has no wire equivalent.
    """
    manifest, payloads = _plan(tensors, chunk_size)
    return _emit(manifest, payloads, chunk_size)


async def aiter_frames(
    tensors: NamedArrays, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> AsyncIterator[TensorFrame]:
    """Encode named arrays as an async ``TensorFrame`` stream, for ``grpc.aio``.

    Pass it as the request iterator of a client-streaming call, or return it from a
    server-streaming handler. Same arguments and frames as :func:`iter_frames`; the up-front
    layout and CRC-32 pass (tens of milliseconds for 100 MB) runs in a worker thread so the event
    loop is not blocked. Being an async generator, it raises argument errors on first iteration.

    Yields
    ------
    TensorFrame
        The manifest frame, then the chunk frames.
    """
    frames = await asyncio.to_thread(iter_frames, tensors, chunk_size=chunk_size)
    for frame in frames:
        yield frame


class FramePlan:
    """A stream's manifest (layout and CRC-32s) computed once, to send the same arrays often.

    :func:`iter_frames` checksums the arrays on every call; a server sending one set of
    weights to many clients builds a plan once (:func:`plan_frames`) and iterates
    :meth:`frames` per client, which only slices and copies chunks. The arrays must not
    change while the plan is used: its CRC-32s would no longer match.

    Attributes
    ----------
    manifest : TensorManifest
        The stream's first frame's manifest (do not modify it).
    chunk_size : int
        Bytes per chunk.
    """

    __slots__ = ("_payloads", "chunk_size", "manifest")

    def __init__(
        self, manifest: TensorManifest, payloads: list[memoryview], chunk_size: int
    ) -> None:
        self.manifest = manifest
        self.chunk_size = chunk_size
        self._payloads = payloads

    def frames(self) -> Iterator[TensorFrame]:
        """The stream's frames, as :func:`iter_frames` yields them."""
        return _emit(self.manifest, self._payloads, self.chunk_size)

    @property
    def payloads(self) -> tuple[memoryview, ...]:
        """Each tensor's bytes as sent (a byte view, manifest order), for a transport that
        sends them raw instead of in chunk messages."""
        return tuple(self._payloads)

    def chunks(self) -> Iterator[tuple[int, int, memoryview]]:
        """``(tensor_index, offset, data)`` of every chunk, in stream order, without copies.

        For a sender that fills its own message type's ``TensorChunk`` in place (one copy
        fewer than copying a :meth:`frames` frame into it).
        """
        size = self.chunk_size
        for index, payload in enumerate(self._payloads):
            for offset in range(0, payload.nbytes, size):
                yield index, offset, payload[offset : offset + size]


def plan_frames(
    tensors: NamedArrays,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    crc32s: Sequence[int] | None = None,
) -> FramePlan:
    """Lay out and checksum named arrays once, for streaming them many times.

    Parameters
    ----------
    tensors, chunk_size
        As for :func:`iter_frames`; the arrays must not change while the plan is in use.
    crc32s
        The tensors' CRC-32s when the caller has them already (computed while writing the
        bytes elsewhere, say): no pass over the arrays. One per tensor.

    Returns
    -------
    FramePlan
        The manifest and the arrays' byte views.

    Raises
    ------
    TensorError
        As :func:`iter_frames`.
    """
    manifest, payloads = _plan(tensors, chunk_size, crc32s)
    return FramePlan(manifest, payloads, chunk_size)


def _plan(
    tensors: NamedArrays, chunk_size: int, crc32s: Sequence[int] | None = None
) -> tuple[TensorManifest, list[memoryview]]:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TensorError(f"chunk_size must be an int, got {type(chunk_size).__name__}")
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise TensorError(f"chunk_size must be between 1 and {MAX_CHUNK_SIZE}, got {chunk_size}")
    manifest = TensorManifest(chunk_size=chunk_size)
    payloads: list[memoryview] = []
    total = 0
    named = list(iter_named(tensors))
    if crc32s is not None and len(crc32s) != len(named):
        raise TensorError(f"{len(crc32s)} CRC-32s for {len(named)} tensors")
    for index, (name, array) in enumerate(named):
        arr, data_type = as_wire_array(array, describe(name, index))
        # A flat uint8 view gives byte offsets and a plain "B" memoryview for any dtype
        # (bfloat16 and complex have buffer formats memoryview cannot slice by byte);
        # reshape first because a 0-d array cannot change its item size.
        payload = arr.reshape(-1).view(np.uint8).data
        spec = manifest.tensors.add()
        spec.name = name
        spec.dtype = data_type
        spec.shape.extend(arr.shape)
        spec.byte_length = payload.nbytes
        spec.crc32 = crc32(payload) if crc32s is None else crc32s[index]
        payloads.append(payload)
        total += payload.nbytes
    manifest.total_bytes = total
    return manifest, payloads


def _emit(
    manifest: TensorManifest, payloads: list[memoryview], chunk_size: int
) -> Iterator[TensorFrame]:
    yield TensorFrame(manifest=manifest)
    for index, payload in enumerate(payloads):
        for offset in range(0, payload.nbytes, chunk_size):
            frame = TensorFrame()
            # Filled in place: TensorFrame(chunk=TensorChunk(...)) would deep-copy the data a
            # second time (measured 8x slower).
            chunk = frame.chunk
            chunk.tensor_index = index
            chunk.offset = offset
            chunk.data = payload[offset : offset + chunk_size].tobytes()
            yield frame


# --------------------------------------------------------------------------------------------
# Receiving


@dataclass(frozen=True, slots=True)
class TensorLayout:
    """One tensor of a checked manifest: what a receiver needs to take its bytes."""

    name: str
    what: str
    """The tensor as error messages name it (name and index)."""
    data_type: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    byte_length: int
    crc32: int


def check_manifest(
    manifest: TensorManifest, *, max_tensors: int, max_total_bytes: int
) -> tuple[list[TensorLayout], int]:
    """Check a stream's manifest against the wire rules and the limits, before any allocation.

    Returns
    -------
    tuple[list[TensorLayout], int]
        The tensors' layouts in manifest order and their total byte length.

    Raises
    ------
    TensorStreamError
        Naming the tensor and the field at fault.
    """
    count = len(manifest.tensors)
    if count > max_tensors:
        raise TensorStreamError(
            f"manifest lists {count} tensors, more than max_tensors={max_tensors}"
        )
    layouts: list[TensorLayout] = []
    total = 0
    for index, spec in enumerate(manifest.tensors):
        what = describe(spec.name, index)
        shape = tuple(int(d) for d in spec.shape)
        try:
            expected = checked_nbytes(spec.dtype, shape, what)
            dtype = wire_dtype(spec.dtype, what)
        except TensorError as exc:
            raise TensorStreamError(f"manifest: {exc}") from None
        if spec.byte_length != expected:
            raise TensorStreamError(
                f"manifest: {what}: byte_length is {spec.byte_length}, but "
                f"{describe_layout(spec.dtype, shape)} needs {expected} bytes"
            )
        total += expected
        # Checked as the sum grows so that the limit, not the claimed total_bytes, decides.
        if total > max_total_bytes:
            raise TensorStreamError(
                f"manifest: tensors add up to more than max_total_bytes="
                f"{max_total_bytes} (reached {total} bytes at {what})"
            )
        layouts.append(
            TensorLayout(spec.name, what, spec.dtype, shape, dtype, expected, spec.crc32)
        )
    if manifest.total_bytes != total:
        raise TensorStreamError(
            f"manifest: total_bytes is {manifest.total_bytes}, but the tensors' byte_length "
            f"add up to {total}"
        )
    if total and manifest.chunk_size == 0:
        raise TensorStreamError("manifest: chunk_size is 0 but there are bytes to send")
    return layouts, total


class StreamCursor:
    """A receiver's place in a stream whose manifest checked out, and the rules its chunks
    follow: chunks in manifest order, every one but a tensor's last exactly ``chunk_size``
    bytes, no gap, no overlap, nothing past a tensor's end, each tensor's CRC-32 as announced.

    It holds no tensor bytes: :class:`TensorAssembler` copies each accepted chunk into place,
    and a receiver that consumes chunks as they come (the aggregator's) hands them on.

    Parameters
    ----------
    layouts
        The manifest's tensors, as :func:`check_manifest` returns them.
    chunk_size
        The manifest's ``chunk_size``.
    total_bytes
        The manifest's total, as :func:`check_manifest` returns it.
    """

    def __init__(
        self, layouts: Sequence[TensorLayout], *, chunk_size: int, total_bytes: int
    ) -> None:
        self.layouts: Final = tuple(layouts)
        self.chunk_size: Final = chunk_size
        self.total_bytes: Final = total_bytes
        # Index of the tensor whose bytes come next (== len(layouts) once complete), how many
        # of its bytes arrived, and their running CRC: chunks arrive in order, so one cursor
        # and one incremental checksum are the whole state.
        self.current = 0
        self.offset = 0
        self.received = 0
        self._crc = 0

    @property
    def done(self) -> bool:
        """Whether every tensor's bytes arrived and checked out."""
        return self.current == len(self.layouts)

    def skip_empty(self) -> list[int]:
        """Move past the tensors with no bytes from the current one on; their indices.

        Raises
        ------
        TensorStreamError
            If the manifest gives such a tensor a CRC-32 other than 0.
        """
        skipped: list[int] = []
        layouts = self.layouts
        while self.current < len(layouts) and layouts[self.current].byte_length == 0:
            self._check_crc(layouts[self.current], 0)
            skipped.append(self.current)
            self.current += 1
        return skipped

    def accept(
        self, index: int, offset: int, data: bytes | memoryview
    ) -> tuple[TensorLayout, bytes | memoryview, bool]:
        """Check the next chunk against the rules and take it into the count and checksum.

        Parameters
        ----------
        index, offset, data
            The chunk's ``tensor_index``, ``offset`` and bytes.

        Returns
        -------
        tuple[TensorLayout, bytes | memoryview, bool]
            The chunk's tensor (the current one: ``index`` is checked against it), its bytes
            (a view of other memory is cast to bytes, not copied) and whether it completed
            the tensor, whose CRC-32 then matched. The cursor is then on the next tensor;
            call :meth:`skip_empty` to pass tensors with no bytes.

        Raises
        ------
        TensorStreamError
            Naming the tensor and the rule broken.
        """
        layouts = self.layouts
        if self.current == len(layouts):
            raise TensorStreamError(
                f"frame after the stream completed (all {self.total_bytes} bytes of "
                f"{len(layouts)} tensors already received)"
            )
        if index >= len(layouts):
            raise TensorStreamError(
                f"chunk tensor_index {index} is out of range: the manifest lists "
                f"{len(layouts)} tensors"
            )
        layout = layouts[self.current]
        if index != self.current:
            state = "already complete" if index < self.current else "not started"
            raise TensorStreamError(
                f"chunk for {layouts[index].what} ({state}) while {layout.what} is incomplete "
                f"at byte {self.offset} of {layout.byte_length}: chunks must follow manifest "
                "order"
            )
        if offset != self.offset:
            if offset < self.offset:
                problem = "duplicate or overlapping chunk"
            else:
                problem = f"gap of {offset - self.offset} bytes"
            raise TensorStreamError(
                f"{layout.what}: {problem}: chunk at offset {offset}, but bytes "
                f"[0, {self.offset}) arrived and the next one expected is {self.offset}"
            )
        if isinstance(data, memoryview) and (data.ndim != 1 or data.format != "B"):
            # A view of typed or shaped memory: bytes are what is counted and copied (a cast,
            # not a copy; slice assignment into a byte buffer needs the same format).
            data = data.cast("B")
        size = len(data)
        end = offset + size
        if size > self.chunk_size:
            raise TensorStreamError(
                f"{layout.what}: chunk of {size} bytes at offset {offset} is larger than the "
                f"manifest's chunk_size {self.chunk_size}"
            )
        if end > layout.byte_length:
            raise TensorStreamError(
                f"{layout.what}: data past the tensor's end: chunk covers bytes "
                f"[{offset}, {end}) of a {layout.byte_length}-byte tensor"
            )
        if size < self.chunk_size and end != layout.byte_length:
            # The manifest promises full chunks but for each tensor's last; holding senders to
            # it also stops a peer from trickling bytes in tiny (or empty) messages.
            raise TensorStreamError(
                f"{layout.what}: short chunk of {size} bytes at offset {offset}: only a "
                f"tensor's last chunk may be shorter than chunk_size {self.chunk_size}, and "
                f"this one ends at {end} of {layout.byte_length} bytes"
            )
        self._crc = crc32(data, self._crc)
        self.offset = end
        self.received += size
        completes = end == layout.byte_length
        if completes:
            self._check_crc(layout, self._crc)
            self.current += 1
            self.offset = 0
            self._crc = 0
        return layout, data, completes

    def check_complete(self) -> None:
        """Check that every tensor arrived.

        Raises
        ------
        TensorStreamError
            Saying which tensor and how many bytes are missing.
        """
        if self.done:
            return
        layout = self.layouts[self.current]
        missing = layout.byte_length - self.offset
        raise TensorStreamError(
            f"truncated stream: {layout.what} is missing {missing} of its "
            f"{layout.byte_length} bytes; {self.total_bytes - self.received} of "
            f"{self.total_bytes} bytes missing in all "
            f"({len(self.layouts) - self.current} of {len(self.layouts)} tensors incomplete)"
        )

    @staticmethod
    def _check_crc(layout: TensorLayout, crc: int) -> None:
        if crc != layout.crc32:
            raise TensorStreamError(
                f"{layout.what}: CRC-32 mismatch: the manifest says {layout.crc32:#010x}, the "
                f"{layout.byte_length} bytes received hash to {crc:#010x}"
            )


def _reusable(into: Sequence[np.ndarray[Any, Any]], layouts: Sequence[TensorLayout]) -> set[int]:
    """Positions whose ``into`` array can take the tensor in place.

    Same shape and dtype, native byte order, C-contiguous, writable, and not overlapping the
    memory of another array taken (two tensors written into one buffer would corrupt both).
    """
    taken: list[tuple[int, int, int]] = []  # (first byte address, end address, position)
    for index, layout in enumerate(layouts[: len(into)]):
        array = into[index]
        if (
            isinstance(array, np.ndarray)
            and array.shape == layout.shape
            and array.dtype == layout.dtype
            and array.dtype.isnative
            and array.flags.c_contiguous
            and array.flags.writeable
        ):
            start = int(array.__array_interface__["data"][0])
            taken.append((start, start + array.nbytes, index))
    taken.sort()
    refused: set[int] = set()
    end = -1
    for start, stop, index in taken:
        if start < end and stop > start:  # overlaps an array before it in memory
            refused.add(index)
        end = max(end, stop)
    return {index for _start, _stop, index in taken} - refused


class TensorAssembler:
    """Reassemble a ``TensorFrame`` stream into arrays, checking every rule of the protocol.

    Feed it the frames in the order they arrive; when :attr:`complete`, :meth:`result` returns
    the tensors. Each tensor is allocated once, at its final size, when the manifest arrives,
    and every chunk is copied straight into place, so the arrays returned are the receive
    buffers themselves (writable, little-endian, C order) and memory stays at about one payload
    plus one chunk. The chunk rules are :class:`StreamCursor`'s.

    A chunk may also come as a :class:`~sedna.tensor.chunk_wire.RawChunk` (read from the wire
    by :func:`~sedna.tensor.chunk_wire.decode_chunk`, without protobuf's copies), to
    :meth:`feed` or :meth:`feed_chunk`: it is checked exactly as a chunk frame.

    Any violation raises :class:`TensorStreamError` naming the tensor and the sizes involved,
    and leaves the assembler failed: later calls raise again and the buffers are released.

    Parameters
    ----------
    max_total_bytes
        Largest ``total_bytes`` accepted. Checked against the manifest before any allocation.
    max_tensors
        Largest number of tensors a manifest may list.
    into
        Arrays to receive into, by manifest position: a tensor whose array here has its shape
        and dtype (C-contiguous, writable, native byte order) is written into that array
        instead of a new one, so a caller that pulls every round reuses its buffers (a new
        100 MB array costs the kernel ~25,000 zeroed pages). Any other tensor gets a new
        array. Should the stream fail, the arrays it was written into hold part of it.

    Examples
    --------
    >>> assembler = TensorAssembler()
    >>> for frame in iter_frames({"w": np.ones(3, np.float32)}):
    ...     _ = assembler.feed(frame)
    >>> assembler.as_dict()["w"]
    array([1., 1., 1.], dtype=float32)
    """

    def __init__(
        self,
        *,
        max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
        max_tensors: int = DEFAULT_MAX_TENSORS,
        into: Sequence[np.ndarray[Any, Any]] | None = None,
    ) -> None:
        if max_total_bytes < 0:
            raise ValueError(f"max_total_bytes must be >= 0, got {max_total_bytes}")
        if max_tensors < 0:
            raise ValueError(f"max_tensors must be >= 0, got {max_tensors}")
        self._into = list(into) if into is not None else []
        self._max_total_bytes = max_total_bytes
        self._max_tensors = max_tensors
        self._manifest: TensorManifest | None = None
        self._cursor: StreamCursor | None = None
        # Each tensor's array and its flat byte view (chunks are copied into slices of it).
        self._arrays: list[np.ndarray[Any, Any]] = []
        self._buffers: list[memoryview] = []
        self._failure: str | None = None

    # -- state --------------------------------------------------------------------------------

    @property
    def manifest(self) -> TensorManifest | None:
        """The stream's manifest, once received."""
        return self._manifest

    @property
    def complete(self) -> bool:
        """Whether the manifest and every byte it announced have arrived and checked out."""
        return self._failure is None and self._cursor is not None and self._cursor.done

    @property
    def bytes_received(self) -> int:
        """Payload bytes received so far, over all tensors."""
        return 0 if self._cursor is None else self._cursor.received

    @property
    def total_bytes(self) -> int | None:
        """Payload bytes the manifest announced, or ``None`` before it arrives."""
        return None if self._cursor is None else self._cursor.total_bytes

    # -- input --------------------------------------------------------------------------------

    def feed(self, frame: TensorFrame | RawChunk) -> bool:
        """Take the next frame of the stream.

        Parameters
        ----------
        frame
            The next ``TensorFrame``: first the manifest, then chunks in order. A chunk may be
            a :class:`~sedna.tensor.chunk_wire.RawChunk` instead of a chunk frame (as
            :meth:`feed_chunk`).

        Returns
        -------
        bool
            Whether the stream is now complete.

        Raises
        ------
        TensorStreamError
            If the frame breaks the protocol or the manifest (see the class docstring); the
            assembler is failed from then on.
        """
        if isinstance(frame, RawChunk):
            return self.feed_chunk(frame)
        kind = frame.WhichOneof("frame")
        if kind == "chunk":
            return self.feed_chunk(frame.chunk)
        self._check_not_failed()
        try:
            if kind == "manifest":
                self._on_manifest(frame.manifest)
            else:
                raise TensorStreamError(
                    "frame carries neither a manifest nor a chunk (empty frame, or a kind of "
                    "frame from a newer peer)"
                )
        except TensorStreamError as exc:
            self._fail(str(exc))
            raise
        return self.complete

    def feed_chunk(self, chunk: TensorChunk | RawChunk) -> bool:
        """Take the next chunk of the stream, as a message or as read from the wire.

        The same as feeding a ``TensorFrame`` that carries ``chunk``: the same checks, the same
        errors. A :class:`~sedna.tensor.chunk_wire.RawChunk`'s bytes are checksummed and copied
        into place straight from its view, so the received message is the only other copy.

        Parameters
        ----------
        chunk
            The next ``TensorChunk`` or ``RawChunk``, after the manifest, in order.

        Returns
        -------
        bool
            Whether the stream is now complete.

        Raises
        ------
        TensorStreamError
            If the chunk breaks the protocol (see the class docstring); the assembler is failed
            from then on.
        """
        self._check_not_failed()
        try:
            self._on_chunk(chunk.tensor_index, chunk.offset, chunk.data)
        except TensorStreamError as exc:
            self._fail(str(exc))
            raise
        return self.complete

    def receive_in_place(self, read: Callable[[memoryview], object]) -> None:
        """Take every remaining chunk by having ``read`` write it straight into its array.

        For a transport whose tensor bytes come raw, without chunk messages (the aggregator's
        bulk port): after the manifest was fed, ``read(view)`` is called for each chunk in
        stream order (``chunk_size`` bytes, a tensor's last chunk shorter) and must fill
        ``view``, a slice of the tensor's array, completely, or raise. Each chunk is then
        checked as :meth:`feed_chunk` checks one (CRC-32 per tensor), without being copied.

        Raises
        ------
        TensorStreamError
            No manifest yet, or a tensor's bytes do not match its CRC-32; the assembler is
            failed from then on. What ``read`` raises fails it too and propagates.
        """
        self._check_not_failed()
        cursor = self._cursor
        if cursor is None:
            raise TensorStreamError("chunk before the manifest: a stream starts with its manifest")
        try:
            while not cursor.done:
                index, offset = cursor.current, cursor.offset
                size = min(cursor.chunk_size, cursor.layouts[index].byte_length - offset)
                view = self._buffers[index][offset : offset + size]
                read(view)
                layout, _data, completes = cursor.accept(index, offset, view)
                if completes:
                    self._check_bools(index, layout)
                    self._skip_empty(cursor)
        except TensorStreamError as exc:
            self._fail(str(exc))
            raise
        except BaseException as exc:
            self._fail(f"receiving failed: {exc!r}")
            raise

    def _on_manifest(self, manifest: TensorManifest) -> None:
        if self._manifest is not None:
            raise TensorStreamError("second manifest: a stream carries exactly one, first")
        layouts, total = check_manifest(
            manifest, max_tensors=self._max_tensors, max_total_bytes=self._max_total_bytes
        )
        # Allocate only once the whole manifest checked out and fits the limits.
        arrays: list[np.ndarray[Any, Any]] = []
        reused = _reusable(self._into, layouts)
        for index, layout in enumerate(layouts):
            if index in reused:
                arrays.append(self._into[index])
                continue
            try:
                arrays.append(np.empty(layout.shape, dtype=layout.dtype))
            except (ValueError, MemoryError) as exc:
                raise TensorStreamError(
                    f"manifest: {layout.what}: cannot allocate shape {layout.shape}: {exc}"
                ) from None
        self._manifest = manifest
        self._arrays = arrays
        self._buffers = [array.reshape(-1).view(np.uint8).data for array in arrays]
        self._cursor = StreamCursor(layouts, chunk_size=manifest.chunk_size, total_bytes=total)
        self._skip_empty(self._cursor)

    def _on_chunk(self, index: int, offset: int, data: bytes | memoryview) -> None:
        cursor = self._cursor
        if cursor is None:
            raise TensorStreamError("chunk before the manifest: a stream starts with its manifest")
        layout, data, completes = cursor.accept(index, offset, data)
        self._buffers[index][offset : offset + len(data)] = data
        if completes:
            self._check_bools(index, layout)
            self._skip_empty(cursor)

    def _skip_empty(self, cursor: StreamCursor) -> None:
        for index in cursor.skip_empty():
            self._check_bools(index, cursor.layouts[index])

    def _check_bools(self, index: int, layout: TensorLayout) -> None:
        array = self._arrays[index]
        if array.dtype == np.bool_:
            try:
                check_bool_bytes(array, layout.what)
            except TensorError as exc:
                raise TensorStreamError(str(exc)) from None

    # -- output -------------------------------------------------------------------------------

    def result(self) -> list[tuple[str, np.ndarray[Any, Any]]]:
        """Return the reassembled tensors as ``(name, array)`` pairs, in manifest order.

        Returns
        -------
        list of (str, numpy.ndarray)
            Writable arrays that are the receive buffers themselves (no copy); calling again
            returns the same arrays.

        Raises
        ------
        TensorStreamError
            If the stream failed earlier, or is truncated: no manifest yet, or bytes missing
            (the message says which tensor and how many bytes).
        """
        self._check_not_failed()
        if self._cursor is None:
            raise TensorStreamError("truncated stream: no manifest received")
        self._cursor.check_complete()
        return [
            (layout.name, array)
            for layout, array in zip(self._cursor.layouts, self._arrays, strict=True)
        ]

    def as_dict(self) -> dict[str, np.ndarray[Any, Any]]:
        """Return the reassembled tensors keyed by name.

        Returns
        -------
        dict of str to numpy.ndarray
            As :meth:`result`, in manifest order.

        Raises
        ------
        TensorStreamError
            As :meth:`result`.
        TensorError
            If two tensors share a name; use :meth:`result` for such streams.
        """
        tensors = self.result()
        named = dict(tensors)
        if len(named) != len(tensors):
            seen: set[str] = set()
            duplicate = ""
            for name, _ in tensors:
                if name in seen:
                    duplicate = name
                    break
                seen.add(name)
            raise TensorError(
                f"duplicate tensor name {duplicate!r}: the stream cannot be keyed by name, "
                "use result()"
            )
        return named

    # -- failure ------------------------------------------------------------------------------

    def _fail(self, reason: str) -> None:
        self._failure = reason
        # Drop the buffers now: a failed stream should not pin a model's worth of memory until
        # the assembler itself is collected.
        self._arrays = []
        self._buffers = []

    def _check_not_failed(self) -> None:
        if self._failure is not None:
            raise TensorStreamError(f"stream already rejected: {self._failure}")


# --------------------------------------------------------------------------------------------
# One-call receivers


def assemble_sync(
    frames: Iterable[TensorFrame | RawChunk],
    *,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_tensors: int = DEFAULT_MAX_TENSORS,
) -> list[tuple[str, np.ndarray[Any, Any]]]:
    """Reassemble a whole ``TensorFrame`` stream, e.g. a sync gRPC ``request_iterator``.

    Parameters
    ----------
    frames
        The stream, manifest first (a chunk may come as a ``RawChunk``, as to ``feed``).
    max_total_bytes, max_tensors
        Limits, as for :class:`TensorAssembler`.

    Returns
    -------
    list of (str, numpy.ndarray)
        As :meth:`TensorAssembler.result`.

    Raises
    ------
    TensorStreamError
        If the stream breaks the protocol, has frames after its end, or ends early.
    """
    assembler = TensorAssembler(max_total_bytes=max_total_bytes, max_tensors=max_tensors)
    for frame in frames:
        assembler.feed(frame)
    return assembler.result()


async def assemble(
    frames: AsyncIterable[TensorFrame | RawChunk],
    *,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_tensors: int = DEFAULT_MAX_TENSORS,
) -> list[tuple[str, np.ndarray[Any, Any]]]:
    """Reassemble a whole async ``TensorFrame`` stream, e.g. a ``grpc.aio`` request iterator.

    Parameters
    ----------
    frames
        The stream, manifest first (a chunk may come as a ``RawChunk``, as to ``feed``).
    max_total_bytes, max_tensors
        Limits, as for :class:`TensorAssembler`.

    Returns
    -------
    list of (str, numpy.ndarray)
        As :meth:`TensorAssembler.result`.

    Raises
    ------
    TensorStreamError
        If the stream breaks the protocol, has frames after its end, or ends early.
    """
    assembler = TensorAssembler(max_total_bytes=max_total_bytes, max_tensors=max_tensors)
    async for frame in frames:
        # Each feed is one chunk-sized memcpy and CRC (well under a millisecond at 1 MiB), so it
        # runs on the loop; a thread hop per chunk would cost more than it saves.
        assembler.feed(frame)
    return assembler.result()
