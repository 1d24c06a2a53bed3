"""Streaming sample counters: constant memory whatever the size of the dataset.

A ``txt`` index has one sample per non-empty line; a ``csv`` index has a header line and one
sample per following non-empty line; a ``dir`` dataset has one sample per regular file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["CHUNK_SIZE", "count_file_samples", "count_lines", "count_regular_files", "read_chunks"]

CHUNK_SIZE = 1 << 20


def read_chunks(stream: BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield ``stream`` in chunks of at most ``chunk_size`` bytes."""
    while chunk := stream.read(chunk_size):
        yield chunk


def count_lines(chunks: Iterable[bytes]) -> int:
    """Count the non-blank lines of a byte stream given in arbitrary chunks.

    Only a flag is carried between chunks (never a partial line), so a file with one enormous
    line is counted in constant memory too.
    """
    count = 0
    pending_text = False  # the current, unfinished line has a non-whitespace byte
    for chunk in chunks:
        parts = chunk.split(b"\n")
        for part in parts[:-1]:
            if pending_text or part.strip():
                count += 1
            pending_text = False
        if parts[-1].strip():
            pending_text = True
    if pending_text:
        count += 1
    return count


def count_file_samples(chunks: Iterable[bytes], fmt: str) -> int:
    """Count the samples of a ``txt`` or ``csv`` index given as chunks.

    Parameters
    ----------
    chunks
        The file's bytes.
    fmt
        ``txt`` (every non-empty line) or ``csv`` (every non-empty line after the header).
    """
    lines = count_lines(chunks)
    if fmt == "csv":
        return max(lines - 1, 0)
    return lines


def count_regular_files(root: Path) -> int:
    """Count the regular files under ``root``, recursively, without following symlinks."""
    count = 0
    stack = [root]
    while stack:
        current = stack.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    count += 1
    return count
