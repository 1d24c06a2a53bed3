"""``WeightsFile``: a round's global weights in an unlinked file instead of the heap.

Between two rounds the aggregator holds the last aggregate (served to every client that
pulls it, and the base of the next round) and, as soon as the next round's first update
arrives, that round's running sums: two models in memory. The aggregate is only read from
then on, so it is written once to an unlinked temporary file and the heap copy is let go:
its bytes live in the kernel's page cache (clean once written back, reclaimable under
pressure) instead of the process's memory, and the aggregator's peak stays near one model
plus buffers whatever the number of clients.

The arrays handed out are read-only views of a shared mapping of the file. Pages a reader
touches are mapped into the process (and counted in its resident size) until
:meth:`WeightsFile.release` drops them again; a pull releases each chunk after copying it
into its message, so a pull costs a chunk, not a model. Each tensor starts at a page
boundary, so a tensor's pages can be released without touching a neighbour's.
"""

from __future__ import annotations

import mmap
import os
import tempfile
import threading
from collections.abc import Sequence
from typing import Any, BinaryIO, Final

import numpy as np

from sedna.tensor.crc import crc32
from sedna_aggregator.core.model import Array

__all__ = ["WeightsFile"]

_PAGE: Final = mmap.PAGESIZE
_COPY_BLOCK: Final = 8 << 20
"""Bytes written (and checksummed) per step: the source is read once, in cache-sized parts."""


def _aligned(offset: int) -> int:
    return -(-offset // _PAGE) * _PAGE


class WeightsFile:
    """Read-only weights in an unlinked temporary file, mapped on demand.

    Build one with :meth:`write` (blocking: run it in a worker thread).

    Attributes
    ----------
    arrays : list of ndarray
        One read-only array per layer, viewing the file's mapping.
    crc32s : tuple of int
        CRC-32 of each layer's bytes (computed while writing, so serving needs no pass).
    nbytes : int
        Bytes of all layers.
    """

    def __init__(
        self,
        file: Any,
        mapping: mmap.mmap | None,
        offsets: list[int],
        arrays: list[Array],
        crc32s: tuple[int, ...],
    ) -> None:
        self._file = file
        self._mapping = mapping
        self._offsets = offsets
        self._lock = threading.Lock()
        self.arrays = arrays
        self.crc32s = crc32s
        self.nbytes = sum(int(a.nbytes) for a in arrays)

    @classmethod
    def write(cls, layers: Sequence[Array], directory: str | None = None) -> WeightsFile:
        """Copy ``layers`` into a new unlinked file in ``directory`` (None: the system's
        temporary directory) and map it.

        Raises
        ------
        OSError
            If the file cannot be created or written (disk full, read-only directory).
        """
        offsets: list[int] = []
        end = 0
        for layer in layers:
            offsets.append(end)
            end = _aligned(end + int(layer.nbytes))
        # Closed by close(), or when the WeightsFile is collected.
        file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115
        try:
            crcs: list[int] = []
            for offset, layer in zip(offsets, layers, strict=True):
                data = np.ascontiguousarray(layer).reshape(-1).view(np.uint8).data
                crc = 0
                file.seek(offset)
                for start in range(0, data.nbytes, _COPY_BLOCK):
                    block = data[start : start + _COPY_BLOCK]
                    crc = crc32(block, crc)
                    file.write(block)
                crcs.append(crc)
            file.truncate(max(end, 1))
            file.flush()
            mapping = mmap.mmap(file.fileno(), max(end, 1), access=mmap.ACCESS_READ)
        except BaseException:
            file.close()
            raise
        arrays: list[Array] = []
        for offset, layer in zip(offsets, layers, strict=True):
            view = np.frombuffer(mapping, dtype=layer.dtype, count=layer.size, offset=offset)
            arrays.append(view.reshape(layer.shape))
        # Writing went through the page cache, not the mapping: nothing is mapped yet.
        return cls(file, mapping, offsets, arrays, tuple(crcs))

    def release(self, index: int | None = None, start: int = 0, length: int | None = None) -> None:
        """Unmap pages from the process (they stay in the page cache; a later read maps them
        again). ``index`` None: every page; else bytes ``[start, start + length)`` of layer
        ``index`` (``length`` None: to its end), widened to whole pages inside the layer.
        """
        mapping = self._mapping
        if mapping is None:
            return
        if index is None:
            begin, stop = 0, len(mapping)
        else:
            base = self._offsets[index]
            size = int(self.arrays[index].nbytes)
            length = size - start if length is None else length
            begin = base + (start // _PAGE) * _PAGE
            stop = min(base + _aligned(start + length), len(mapping))
        if stop > begin:
            with self._lock:
                if self._mapping is not None:
                    self._mapping.madvise(mmap.MADV_DONTNEED, begin, stop - begin)

    def offset(self, index: int) -> int:
        """Where layer ``index``'s bytes start in the file."""
        return self._offsets[index]

    def reopen(self) -> BinaryIO | None:
        """A new read handle on the file (a duplicated descriptor, so that it stays valid
        after :meth:`close`), for ``socket.sendfile``; None once closed. The caller closes it.
        """
        with self._lock:
            if self._mapping is None:
                return None
            return os.fdopen(os.dup(self._file.fileno()), "rb", buffering=0)

    def close(self) -> None:
        """Close the file (the arrays must no longer be used; the mapping goes with the last
        of them)."""
        with self._lock:
            self._mapping = None
        self._file.close()
