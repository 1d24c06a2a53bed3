"""The safetensors format, written and read as a stream: one object holds one set of tensors.

Layout (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length ``N``,
``N`` bytes of JSON (``{"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [b, e]},
..., "__metadata__": {"k": "v"}}``, padded with spaces), then the tensors' raw little-endian
bytes, ``data_offsets`` relative to the end of the header.

Both sides of the S3 transmitter use this module: the trainer's
:class:`~sedna.algorithms.transmitter.S3Transmitter` and the aggregator's object adapter.

* :func:`encode` / :class:`EncodedTensors` write the tensors in the order given (the
  ``safetensors`` package sorts them by dtype and name instead, which would scramble the
  layers of a model), streaming each tensor's bytes without copying the set into one buffer.
* :class:`SafetensorsReader` reads the header from the first bytes, checks it before
  anything else is read (a JSON object of known dtypes, sizes that match the shapes, offsets
  that tile the data section exactly, a total within ``max_bytes``), then reads one tensor at
  a time, so memory stays at the largest tensor however big the object is. Every problem is
  a :class:`SafetensorsError` naming the object, the tensor and what is wrong. Nothing is
  ever unpickled: the format has no code in it.

Objects written by the ``safetensors`` package (``safetensors.numpy.save``) read fine; the
tensors come in data-offset order.
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import math
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "EncodedTensors",
    "SafetensorsError",
    "SafetensorsHeader",
    "SafetensorsReader",
    "TensorEntry",
    "decode",
    "encode",
    "named_tensors",
    "supported_dtypes",
]

Array = npt.NDArray[Any]

DEFAULT_MAX_HEADER_BYTES: Final = 100 << 20
"""The ``safetensors`` package's own limit on the JSON header (100 MB)."""
_LENGTH: Final = struct.Struct("<Q")
_METADATA_KEY: Final = "__metadata__"
_ENTRY_FIELDS: Final = frozenset({"dtype", "shape", "data_offsets"})
_READ_CHUNK: Final = 1 << 20
_NO_LIMIT: Final = 1 << 62

# safetensors dtype names → little-endian numpy dtypes (BF16 needs ml_dtypes, see below).
_NATIVE: Final[dict[str, np.dtype[Any]]] = {
    "BOOL": np.dtype("|b1"),
    "U8": np.dtype("|u1"),
    "I8": np.dtype("|i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "F16": np.dtype("<f2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
    "C64": np.dtype("<c8"),
}
_BY_KIND_AND_SIZE: Final[dict[tuple[str, int], str]] = {
    (dtype.kind, dtype.itemsize): name for name, dtype in _NATIVE.items()
}


class SafetensorsError(ValueError):
    """An object is not a valid tensor set, or tensors cannot be written as one.

    The message names the object (``source``), the tensor and the problem.
    """


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@functools.cache
def _bfloat16() -> np.dtype[Any] | None:
    # By name, so that neither mypy nor importing this module needs ml_dtypes.
    try:
        dtype: np.dtype[Any] = np.dtype(importlib.import_module("ml_dtypes").bfloat16)
    except ImportError:
        return None
    return dtype


def supported_dtypes() -> tuple[str, ...]:
    """The safetensors dtype names this build reads and writes (``BF16`` with ml_dtypes)."""
    names = list(_NATIVE)
    if _bfloat16() is not None:
        names.append("BF16")
    return tuple(names)


def _dtype_of(name: str, where: str) -> np.dtype[Any]:
    dtype = _NATIVE.get(name)
    if dtype is not None:
        return dtype
    if name == "BF16":
        bfloat16 = _bfloat16()
        if bfloat16 is None:
            raise SafetensorsError(f"{where}: dtype BF16 needs the ml_dtypes package")
        return bfloat16
    raise SafetensorsError(
        f"{where}: unknown dtype {name!r}; known: {', '.join(supported_dtypes())}"
    )


def _dtype_name(dtype: np.dtype[Any], where: str) -> str:
    bfloat16 = _bfloat16()
    if bfloat16 is not None and dtype == bfloat16:
        return "BF16"
    name = _BY_KIND_AND_SIZE.get((dtype.kind, dtype.itemsize))
    if name is None or dtype.hasobject:
        raise SafetensorsError(
            f"{where}: dtype {dtype} has no safetensors form; use one of "
            f"{', '.join(supported_dtypes())}"
        )
    return name


# ------------------------------------------------------------------------------ the header


@dataclass(frozen=True, slots=True)
class TensorEntry:
    """One tensor of a header: where its bytes are in the data section."""

    name: str
    dtype_name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor."""
        return self.end - self.begin


@dataclass(frozen=True, slots=True)
class SafetensorsHeader:
    """A checked header: its tensors in data order and its ``__metadata__``."""

    entries: tuple[TensorEntry, ...]
    metadata: Mapping[str, str] = field(default_factory=dict)
    header_bytes: int = 0

    @property
    def data_bytes(self) -> int:
        """Bytes of the data section (all tensors)."""
        return self.entries[-1].end if self.entries else 0

    @property
    def total_bytes(self) -> int:
        """Bytes of the whole object: length prefix, header and data."""
        return _LENGTH.size + self.header_bytes + self.data_bytes


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SafetensorsError(f"the header names {key!r} twice")
        out[key] = value
    return out


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry(name: str, raw: object, source: str) -> TensorEntry:
    where = f"{source}: tensor {name!r}"
    if not isinstance(raw, dict):
        raise SafetensorsError(
            f"{where}: the header entry is a {type(raw).__name__}, not an object"
        )
    keys = set(raw)
    if keys != _ENTRY_FIELDS:
        missing, extra = sorted(_ENTRY_FIELDS - keys), sorted(keys - _ENTRY_FIELDS)
        raise SafetensorsError(
            f"{where}: the header entry needs exactly dtype, shape and data_offsets"
            + (f" (missing {missing})" if missing else "")
            + (f" (unexpected {extra})" if extra else "")
        )
    dtype_name = raw["dtype"]
    if not isinstance(dtype_name, str):
        raise SafetensorsError(f"{where}: dtype is a {type(dtype_name).__name__}, not a string")
    dtype = _dtype_of(dtype_name, where)
    shape = raw["shape"]
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise SafetensorsError(f"{where}: shape {shape!r} is not a list of integers >= 0")
    offsets = raw["data_offsets"]
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_int(o) and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise SafetensorsError(
            f"{where}: data_offsets {offsets!r} is not [begin, end] with 0 <= begin <= end"
        )
    begin, end = int(offsets[0]), int(offsets[1])
    expected = math.prod(shape) * dtype.itemsize
    if end - begin != expected:
        raise SafetensorsError(
            f"{where}: data_offsets [{begin}, {end}] hold {end - begin} bytes but dtype "
            f"{dtype_name} x shape {tuple(shape)} needs {expected}"
        )
    return TensorEntry(name, dtype_name, dtype, tuple(int(d) for d in shape), begin, end)


def parse_header(
    text: bytes, *, source: str = "object", max_bytes: int | None = None
) -> SafetensorsHeader:
    """Check the JSON header ``text`` (the bytes after the length prefix).

    Parameters
    ----------
    text
        The header's bytes.
    source
        What the header belongs to, for messages (e.g. the object's URI).
    max_bytes
        Largest whole object accepted (prefix, header and data); None: no limit.

    Raises
    ------
    SafetensorsError
        Not a JSON object of tensor entries; an unknown dtype; a size that does not match its
        shape; offsets that leave gaps, overlap or do not start at 0; or the total over
        ``max_bytes``. The message names the tensor.
    """
    try:
        parsed = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except SafetensorsError as err:
        raise SafetensorsError(f"{source}: {err}") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise SafetensorsError(f"{source}: the header is not valid JSON: {err}") from None
    if not isinstance(parsed, dict):
        raise SafetensorsError(
            f"{source}: the header is a JSON {type(parsed).__name__}, not an object"
        )
    metadata_raw = parsed.pop(_METADATA_KEY, {})
    if not isinstance(metadata_raw, dict) or not all(
        isinstance(v, str) for v in metadata_raw.values()
    ):
        raise SafetensorsError(f"{source}: __metadata__ must map strings to strings")
    entries = sorted(
        (_entry(name, raw, source) for name, raw in parsed.items()),
        key=lambda e: (e.begin, e.end),
    )
    position = 0
    for entry in entries:
        if entry.begin != position:
            problem = "overlaps the previous tensor" if entry.begin < position else "leaves a gap"
            raise SafetensorsError(
                f"{source}: tensor {entry.name!r} starts at byte {entry.begin} of the data but "
                f"the tensors before it end at {position}: it {problem} (offsets must be "
                "contiguous from 0)"
            )
        position = entry.end
    header = SafetensorsHeader(tuple(entries), dict(metadata_raw), len(text))
    if max_bytes is not None and header.total_bytes > max_bytes:
        raise SafetensorsError(
            f"{source}: the object holds {header.total_bytes} bytes, over the limit of {max_bytes}"
        )
    return header


# ------------------------------------------------------------------------------ reading


def _read_into(stream: _Readable, buffer: memoryview) -> int:
    """Fill ``buffer`` from ``stream``; the bytes read (fewer only at the end of the stream)."""
    readinto: Callable[[memoryview], int | None] | None = getattr(stream, "readinto", None)
    filled = 0
    while filled < len(buffer):
        if readinto is not None:
            got = readinto(buffer[filled : filled + _READ_CHUNK * 16])
            if not got:
                break
            filled += got
        else:
            chunk = stream.read(min(len(buffer) - filled, _READ_CHUNK * 16))
            if not chunk:
                break
            buffer[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
    return filled


class SafetensorsReader:
    """Reads a tensor set from a byte stream, one tensor at a time.

    The header is read and checked on construction; :meth:`read_next` (or iteration) then
    returns ``(name, array)`` in data order, each array in its own buffer (writable), and
    checks at the end that nothing follows the last tensor.

    Parameters
    ----------
    stream
        Anything with ``read(n)`` (``readinto`` is used when present): a file, an HTTP body.
    max_bytes
        Largest object accepted (prefix, header and data together).
    source
        The object's name in messages (e.g. its URI).
    object_size
        The object's size when known (an S3 ``stat``): checked against the header before any
        tensor is read, so a truncated or padded object fails early.
    max_header_bytes
        Largest JSON header accepted (also bounded by ``max_bytes``).

    Raises
    ------
    SafetensorsError
        On construction for a bad header; from :meth:`read_next` for a short or over-long
        object or a bool tensor holding bytes other than 0 and 1.
    """

    def __init__(
        self,
        stream: _Readable,
        *,
        max_bytes: int,
        source: str = "object",
        object_size: int | None = None,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, not {max_bytes}")
        self.source = source
        self._stream = stream
        prefix = bytearray(_LENGTH.size)
        got = _read_into(stream, memoryview(prefix))
        if got < _LENGTH.size:
            raise SafetensorsError(
                f"{source}: {got} bytes is too short for a safetensors object (it starts with an "
                "8-byte header length)"
            )
        (length,) = _LENGTH.unpack(prefix)
        limit = min(max_header_bytes, max_bytes - _LENGTH.size)
        if length == 0 or length > limit:
            raise SafetensorsError(
                f"{source}: the header length prefix says {length} bytes; expected 1 to {limit} "
                "(not a safetensors object?)"
            )
        if object_size is not None and _LENGTH.size + length > object_size:
            raise SafetensorsError(
                f"{source}: the header length prefix says {length} bytes but the object has "
                f"only {object_size} (not a safetensors object?)"
            )
        text = bytearray(length)
        got = _read_into(stream, memoryview(text))
        if got < length:
            raise SafetensorsError(
                f"{source}: truncated: the header needs {length} bytes, the object ended "
                f"after {got}"
            )
        self.header = parse_header(bytes(text), source=source, max_bytes=max_bytes)
        if object_size is not None and object_size != self.header.total_bytes:
            raise SafetensorsError(
                f"{source}: the header describes {self.header.total_bytes} bytes but the "
                f"object has {object_size} ("
                + ("truncated" if object_size < self.header.total_bytes else "trailing data")
                + ")"
            )
        self._next = 0
        self._done = False

    def read_next(self) -> tuple[str, Array] | None:
        """The next tensor, or None after the last one (the end of the object is checked)."""
        if self._next >= len(self.header.entries):
            if not self._done:
                self._done = True
                extra = self._stream.read(1)
                if extra:
                    raise SafetensorsError(
                        f"{self.source}: the object has more bytes after its last tensor than "
                        "the header describes"
                    )
            return None
        entry = self.header.entries[self._next]
        self._next += 1
        buffer = bytearray(entry.nbytes)
        got = _read_into(self._stream, memoryview(buffer))
        if got < entry.nbytes:
            raise SafetensorsError(
                f"{self.source}: truncated: tensor {entry.name!r} needs {entry.nbytes} bytes, "
                f"the object ended after {got}"
            )
        array = np.frombuffer(buffer, dtype=entry.dtype).reshape(entry.shape)
        if entry.dtype_name == "BOOL" and array.size and int(array.view(np.uint8).max()) > 1:
            raise SafetensorsError(
                f"{self.source}: tensor {entry.name!r}: BOOL data holds bytes other than 0 and 1"
            )
        return entry.name, array

    def __iter__(self) -> Iterator[tuple[str, Array]]:
        while True:
            item = self.read_next()
            if item is None:
                return
            yield item
            # Dropped before the next tensor is allocated: a consumer that lets go of each
            # tensor holds one at a time, not two.
            del item


def decode(
    data: bytes, *, max_bytes: int | None = None, source: str = "object"
) -> list[tuple[str, Array]]:
    """All tensors of an in-memory object, in data order (tests and small objects).

    Raises
    ------
    SafetensorsError
        As :class:`SafetensorsReader`.
    """
    reader = SafetensorsReader(
        io.BytesIO(data),
        max_bytes=max_bytes if max_bytes is not None else _NO_LIMIT,
        source=source,
        object_size=len(data),
    )
    return list(reader)


# ------------------------------------------------------------------------------ writing


def named_tensors(
    tensors: Mapping[str, npt.ArrayLike] | Iterable[tuple[str, npt.ArrayLike]] | Sequence[Any],
) -> list[tuple[str, Array]]:
    """Normalise a tensor set to ``[(name, array)]``, keeping its order.

    Accepts a mapping of names, ``(name, array)`` pairs, or a plain sequence of arrays (named
    ``layer.0``, ``layer.1`` ... as the gRPC transport names them).

    Raises
    ------
    SafetensorsError
        Empty or repeated names.
    """
    if isinstance(tensors, Mapping):
        pairs = [(str(k), v) for k, v in tensors.items()]
    else:
        items = list(tensors)
        if items and all(
            isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
            for item in items
        ):
            pairs = [(name, value) for name, value in items]
        else:
            pairs = [(f"layer.{i}", value) for i, value in enumerate(items)]
    seen: set[str] = set()
    out: list[tuple[str, Array]] = []
    for name, value in pairs:
        if not name or name == _METADATA_KEY:
            raise SafetensorsError(f"tensor name {name!r} is not allowed")
        if name in seen:
            raise SafetensorsError(f"tensor name {name!r} appears twice")
        seen.add(name)
        out.append((name, np.asarray(value)))
    return out


class EncodedTensors(io.RawIOBase):
    """A tensor set as a readable safetensors byte stream of known :attr:`length`.

    The header is built up front; each tensor's bytes are served from the array itself
    (little-endian, C order; a copy only for arrays that are not), so uploading an object
    never holds the whole set twice. Read it once, from the start.
    """

    def __init__(
        self,
        tensors: Mapping[str, npt.ArrayLike] | Iterable[tuple[str, npt.ArrayLike]] | Sequence[Any],
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        pairs = named_tensors(tensors)
        header: dict[str, Any] = {}
        if metadata:
            header[_METADATA_KEY] = {str(k): str(v) for k, v in metadata.items()}
        views: list[memoryview] = []
        offset = 0
        for name, array in pairs:
            dtype_name = _dtype_name(array.dtype, f"tensor {name!r}")
            wire = _dtype_of(dtype_name, f"tensor {name!r}")
            data = np.asarray(array, dtype=wire, order="C")  # keeps 0-d shapes
            nbytes = int(data.nbytes)
            header[name] = {
                "dtype": dtype_name,
                "shape": [int(d) for d in data.shape],
                "data_offsets": [offset, offset + nbytes],
            }
            offset += nbytes
            views.append(data.reshape(-1).view(np.uint8).data if nbytes else memoryview(b""))
        text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
        text += b" " * (-len(text) % 8)  # as safetensors: the data section 8-byte aligned
        self._parts: list[memoryview] = [memoryview(_LENGTH.pack(len(text)) + text), *views]
        self.names = [name for name, _ in pairs]
        self.length = len(self._parts[0]) + offset
        self._part = 0
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(target) and self._part < len(self._parts):
            part = self._parts[self._part]
            n = min(len(target) - filled, len(part) - self._offset)
            target[filled : filled + n] = part[self._offset : self._offset + n]
            filled += n
            self._offset += n
            if self._offset >= len(part):
                self._part += 1
                self._offset = 0
        return filled


def encode(
    tensors: Mapping[str, npt.ArrayLike] | Iterable[tuple[str, npt.ArrayLike]] | Sequence[Any],
    *,
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """The safetensors bytes of ``tensors`` in the order given (small sets and tests).

    Raises
    ------
    SafetensorsError
        A dtype with no safetensors form (object, strings...), or a bad name.
    """
    return EncodedTensors(tensors, metadata=metadata).read()
