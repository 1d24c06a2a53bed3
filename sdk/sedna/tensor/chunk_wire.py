"""Tensor chunks on the wire without protobuf's copies.

A weights stream is mostly ``TensorChunk`` messages of a few MiB, each wrapped in a
``TensorFrame`` inside a stream message (``PushUpdateRequest``, ``PullGlobalWeightsResponse``).
Through protobuf a chunk's bytes are copied four times on the way out (out of the array, into
the message, into the frame message, into the serialized string) and three times on the way
in. That is most of the CPU an aggregator and its trainers spend per round. This module
writes and reads exactly those messages by hand, with protobuf's wire format:

- :func:`encode_chunk` returns the serialized stream message: a few header bytes and the
  chunk's data, copied once. The header is padded (``TensorChunk.padding``, written before
  the data) so that the data starts 16-byte aligned in the message: a ``bytes`` object's
  contents are 16-byte aligned, so the receiver's view of the data is an aligned array
  (numpy's and BLAS's unaligned paths took twice as long for the aggregator's finiteness
  check and sums). Without padding (``align=1``) it is byte for byte what
  ``SerializeToString`` gives;
- :func:`decode_chunk` returns a :class:`RawChunk` whose ``data`` is a view of the received
  bytes (no copy), or None for any other message, which the caller parses with protobuf.

:func:`serializer` and :func:`deserializer` wrap them as the ``request_serializer`` /
``response_deserializer`` (or server-side equivalents) of a gRPC method, so a peer that uses
plain protobuf sees no difference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from google.protobuf.message import Message

__all__ = [
    "DATA_ALIGNMENT",
    "STREAM_FRAME_FIELD",
    "RawChunk",
    "decode_chunk",
    "deserializer",
    "encode_chunk",
    "serializer",
]

STREAM_FRAME_FIELD: Final = 2
"""Field number of the ``TensorFrame`` in the stream messages that carry weights."""

_LEN: Final = 2  # wire type of length-delimited fields
_VARINT: Final = 0
_FRAME_CHUNK_FIELD: Final = 2  # TensorFrame.chunk
_CHUNK_INDEX: Final = (1 << 3) | _VARINT  # TensorChunk.tensor_index (uint32)
_CHUNK_OFFSET: Final = (2 << 3) | _VARINT  # TensorChunk.offset (uint64)
_CHUNK_DATA: Final = (3 << 3) | _LEN  # TensorChunk.data (bytes)
_CHUNK_PADDING: Final = (4 << 3) | _LEN  # TensorChunk.padding (bytes, ignored)
DATA_ALIGNMENT: Final = 16
"""Where :func:`encode_chunk` starts a chunk's data in the message (a multiple of it)."""
_MAX_UINT32: Final = (1 << 32) - 1
_MAX_UINT64: Final = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class RawChunk:
    """A ``TensorChunk`` read straight from a received message.

    Attributes
    ----------
    tensor_index : int
        Index of the tensor in the stream's manifest.
    offset : int
        Byte offset of ``data`` in the tensor.
    data : memoryview
        The chunk's bytes: a read-only view of the received message (kept alive by it).
    """

    tensor_index: int
    offset: int
    data: memoryview


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def encode_chunk(
    tensor_index: int,
    offset: int,
    data: bytes | bytearray | memoryview,
    *,
    frame_field: int = STREAM_FRAME_FIELD,
    align: int = DATA_ALIGNMENT,
) -> bytes:
    """Serialize a stream message that carries one chunk.

    Parameters
    ----------
    tensor_index, offset
        The chunk's tensor (manifest index, < 2**32) and byte offset in it (< 2**64).
    data
        The chunk's bytes; any contiguous buffer (a ``memoryview`` of an array: copied once,
        here).
    frame_field
        Field number of the ``TensorFrame`` in the stream message.
    align
        The data starts at a multiple of this many bytes into the message (a ``padding``
        field before it, at least 2 bytes, less than ``align + 3``); 1: no padding.

    Returns
    -------
    bytes
        The serialized ``{frame_field: TensorFrame(chunk=TensorChunk(tensor_index, offset,
        data, padding))}``: with ``align=1`` (or a header that is aligned as it is), exactly
        what ``SerializeToString`` gives without ``padding``.

    Raises
    ------
    ValueError
        If ``tensor_index`` or ``offset`` is out of its field's range.
    """
    if not 0 <= tensor_index <= _MAX_UINT32:
        raise ValueError(f"tensor_index {tensor_index} is not a uint32")
    if not 0 <= offset <= _MAX_UINT64:
        raise ValueError(f"offset {offset} is not a uint64")
    if not 1 <= align <= _MAX_ALIGN:
        raise ValueError(f"align must be in [1, {_MAX_ALIGN}], not {align}")
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    size = len(view)
    scalars = bytearray()
    if tensor_index:
        scalars += bytes((_CHUNK_INDEX,)) + _varint(tensor_index)
    if offset:
        scalars += bytes((_CHUNK_OFFSET,)) + _varint(offset)
    data_key = bytes((_CHUNK_DATA,)) + _varint(size) if size else b""
    header = _header(frame_field, bytes(scalars), b"", data_key, size)
    if size and len(header) % align:
        # The padding field's own bytes move the lengths before it: grow it until the data
        # lands on the boundary (a varint grows at most once or twice on the way).
        pad = -(len(header) + 2) % align
        while True:
            padding = bytes((_CHUNK_PADDING,)) + _varint(pad) + bytes(pad)
            header = _header(frame_field, bytes(scalars), padding, data_key, size)
            if len(header) % align == 0:
                break
            pad += -len(header) % align
    return b"".join((header, view)) if size else header


_MAX_ALIGN: Final = 4096
"""Largest ``align`` accepted (a page)."""


def _header(frame_field: int, scalars: bytes, padding: bytes, data_key: bytes, size: int) -> bytes:
    """Everything of a chunk message before its data."""
    chunk_length = len(scalars) + len(padding) + len(data_key) + size
    chunk = _tag(_FRAME_CHUNK_FIELD, _LEN) + _varint(chunk_length)
    frame_length = len(chunk) + chunk_length
    return b"".join(
        (_tag(frame_field, _LEN), _varint(frame_length), chunk, scalars, padding, data_key)
    )


def _read_varint(raw: bytes, position: int, end: int) -> tuple[int, int] | None:
    """``(value, next position)``, or None when the varint is cut or longer than 10 bytes."""
    value = 0
    shift = 0
    while position < end and shift < 70:
        byte = raw[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
    return None


def _read_length(raw: bytes, position: int, end: int) -> tuple[int, int] | None:
    """A length-delimited field's ``(start, stop)``, or None if it does not fit in ``end``."""
    read = _read_varint(raw, position, end)
    if read is None:
        return None
    length, start = read
    stop = start + length
    return (start, stop) if stop <= end else None


def decode_chunk(raw: bytes, *, frame_field: int = STREAM_FRAME_FIELD) -> RawChunk | None:
    """Read a stream message that carries exactly one chunk, without copying its data.

    Parameters
    ----------
    raw
        A serialized stream message.
    frame_field
        Field number of the ``TensorFrame`` in the stream message.

    Returns
    -------
    RawChunk or None
        The chunk; None for anything else (a header, a manifest, an empty message, fields
        repeated or unknown, a malformed message): parse those with protobuf, which applies
        its own rules and errors.
    """
    end = len(raw)
    read = _read_varint(raw, 0, end)
    if read is None or read[0] != (frame_field << 3) | _LEN:
        return None
    frame = _read_length(raw, read[1], end)
    if frame is None or frame[1] != end:
        return None
    read = _read_varint(raw, frame[0], end)
    if read is None or read[0] != (_FRAME_CHUNK_FIELD << 3) | _LEN:
        return None
    chunk = _read_length(raw, read[1], end)
    if chunk is None or chunk[1] != end:
        return None
    position = chunk[0]
    index = offset = None
    data: memoryview | None = None
    while position < end:
        read = _read_varint(raw, position, end)
        if read is None:
            return None
        tag, position = read
        if tag == _CHUNK_DATA and data is None:
            span = _read_length(raw, position, end)
            if span is None:
                return None
            data = memoryview(raw)[span[0] : span[1]]
            position = span[1]
        elif tag == _CHUNK_PADDING:
            span = _read_length(raw, position, end)
            if span is None:
                return None
            position = span[1]  # ignored
        elif tag in (_CHUNK_INDEX, _CHUNK_OFFSET):
            read = _read_varint(raw, position, end)
            if read is None:
                return None
            value, position = read
            if tag == _CHUNK_INDEX:
                if index is not None or value > _MAX_UINT32:
                    return None  # repeated, or protobuf's truncation rules apply
                index = value
            else:
                if offset is not None or value > _MAX_UINT64:
                    return None
                offset = value
        else:
            return None
    return RawChunk(index or 0, offset or 0, data if data is not None else memoryview(b""))


_M = TypeVar("_M", bound=Message)


def serializer(message: Message | bytes) -> bytes:
    """A gRPC serializer for stream messages: bytes from :func:`encode_chunk` pass as they
    are, protobuf messages are serialized."""
    if isinstance(message, bytes):
        return message
    return message.SerializeToString()


def deserializer(
    message_type: type[_M], *, frame_field: int = STREAM_FRAME_FIELD
) -> Callable[[bytes], _M | RawChunk]:
    """A gRPC deserializer for a stream message type: chunks come back as :class:`RawChunk`
    (a view of the received bytes), every other message as ``message_type``."""

    def deserialize(raw: bytes) -> _M | RawChunk:
        chunk = decode_chunk(raw, frame_field=frame_field)
        if chunk is not None:
            return chunk
        return message_type.FromString(raw)

    return deserialize
