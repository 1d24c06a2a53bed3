"""Per-worker log files: size capping (copy-truncate) and reading for ``StreamWorkerLogs``.

The worker writes its stdout and stderr straight into ``<name>.log`` opened in append mode, so
it keeps logging while the LC restarts. When the file grows past the cap its content moves to
``<name>.log.1`` (replacing the previous one) and the file is truncated in place; the worker's
appends continue at the new end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

__all__ = ["DEFAULT_MAX_LOG_BYTES", "cap_log", "read_log", "tail_offset"]

DEFAULT_MAX_LOG_BYTES = 10 * 1024 * 1024
_BLOCK = 64 * 1024


def cap_log(path: Path, max_bytes: int) -> bool:
    """Rotate ``path`` to ``path.1`` and truncate it when it exceeds ``max_bytes``."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
        backup = path.with_name(path.name + ".1")
        shutil.copyfile(path, backup)
        os.truncate(path, 0)
    except FileNotFoundError:
        return False
    return True


def tail_offset(path: Path, lines: int) -> int:
    """Byte offset where the last ``lines`` lines of ``path`` start (0 for the whole file)."""
    if lines <= 0:
        return 0
    with path.open("rb") as stream:
        end = stream.seek(0, os.SEEK_END)
        pos = end
        # A trailing newline ends the last line; it does not start an empty one.
        stream.seek(max(end - 1, 0))
        wanted = lines + 1 if end and stream.read(1) == b"\n" else lines
        found = 0
        while pos > 0:
            step = min(_BLOCK, pos)
            pos -= step
            stream.seek(pos)
            block = stream.read(step)
            index = len(block)
            while True:
                index = block.rfind(b"\n", 0, index)
                if index < 0:
                    break
                found += 1
                if found == wanted:
                    return pos + index + 1
        return 0


async def read_log(
    path: Path,
    *,
    follow: bool,
    tail_lines: int,
    running: Callable[[], bool],
    poll_interval: float = 0.2,
    chunk_size: int = _BLOCK,
) -> AsyncIterator[bytes]:
    """Yield the log's bytes; with ``follow``, keep yielding new output while ``running()``.

    Parameters
    ----------
    path
        The log file; a missing file is read as empty.
    follow
        Keep waiting for output until ``running()`` turns false and the file is drained.
    tail_lines
        Start with the last N lines; 0 means the whole file.
    running
        Whether the worker may still write.
    """
    offset = _start_offset(path, tail_lines)
    while True:
        data, offset = _read_at(path, offset, chunk_size)
        if data:
            yield data
            continue
        if not follow:
            return
        if not running():
            # One last look: output written just before the exit.
            if _size(path) > offset:
                continue
            return
        await asyncio.sleep(poll_interval)


def _start_offset(path: Path, tail_lines: int) -> int:
    try:
        return tail_offset(path, tail_lines)
    except FileNotFoundError:
        return 0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_at(path: Path, offset: int, chunk_size: int) -> tuple[bytes, int]:
    """Read up to ``chunk_size`` bytes at ``offset``; the data and the next offset."""
    try:
        with path.open("rb") as stream:
            size = stream.seek(0, os.SEEK_END)
            if size < offset:  # copy-truncated: continue from the new start
                offset = 0
            stream.seek(offset)
            data = stream.read(chunk_size)
    except FileNotFoundError:
        return b"", offset
    return data, offset + len(data)
