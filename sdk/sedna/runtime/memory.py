"""glibc malloc tuning for processes that move large tensors (inference servers and clients).

glibc serves every allocation above its mmap threshold (128 KiB at start, raised
dynamically up to 32 MiB as large blocks are freed) with a fresh ``mmap`` and returns it
with ``munmap`` on free: each copy of a 602 KB image tensor (a 3x224x224 float32 request)
then costs ~150 page faults and the zeroing of its pages, several times per request on
each side (protobuf message, serialized bytes, received bytes, arrays). Measured on the
joint-inference bench: encoding one such request took 372 µs with glibc's defaults and
62 µs with the threshold raised.

:func:`tune_malloc` raises the mmap threshold (and the heap trim threshold with it, so
freed blocks stay in the heap for the next request) through ``mallopt``. It is called when
an inference server registers its OIP service (``sedna-inference``, ``BigModelService``)
and when an :class:`~sedna.service.oip_client.InferenceClient` is created. It does nothing
where the C library is not glibc, when ``MALLOC_MMAP_THRESHOLD_`` is set in the
environment (glibc's own tunable wins), or when ``SEDNA_MALLOC_MMAP_THRESHOLD`` is ``0``.
``SEDNA_MALLOC_MMAP_THRESHOLD`` (bytes) also sets another threshold. The cost: up to
about ``trim threshold`` bytes of freed memory stay mapped per malloc arena, which is why
:func:`limit_malloc_arenas` caps the arenas of a service whose buffers cross threads (the
aggregator).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
import threading
from collections.abc import Mapping
from typing import Final

__all__ = [
    "DEFAULT_MMAP_THRESHOLD",
    "MMAP_THRESHOLD_ENV",
    "limit_malloc_arenas",
    "tune_malloc",
]

DEFAULT_MMAP_THRESHOLD: Final = 16 * 1024 * 1024
"""16 MiB: tensors of a few MB come from the heap."""
MMAP_THRESHOLD_ENV: Final = "SEDNA_MALLOC_MMAP_THRESHOLD"
"""Bytes; ``0`` turns the tuning off."""
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
_M_ARENA_MAX: Final = -8
_TRIM_FACTOR: Final = 4

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_applied: int | None = None


def _threshold(environ: Mapping[str, str], default: int = DEFAULT_MMAP_THRESHOLD) -> int:
    text = environ.get(MMAP_THRESHOLD_ENV, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        _log.warning(
            "%s=%r is not a number of bytes; using %d",
            MMAP_THRESHOLD_ENV,
            text,
            default,
        )
        return default
    return max(0, value)


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has no such symbol)
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def tune_malloc(
    environ: Mapping[str, str] | None = None, *, default: int = DEFAULT_MMAP_THRESHOLD
) -> int:
    """Raise glibc's malloc mmap and trim thresholds for this process, once.

    Parameters
    ----------
    environ
        Where ``SEDNA_MALLOC_MMAP_THRESHOLD`` and ``MALLOC_MMAP_THRESHOLD_`` are read;
        ``os.environ`` when None.
    default
        The mmap threshold (bytes) when ``SEDNA_MALLOC_MMAP_THRESHOLD`` is not set.

    Returns
    -------
    int
        The mmap threshold set (bytes), or 0 when nothing was changed (not glibc, turned
        off, left to ``MALLOC_MMAP_THRESHOLD_``, or refused by ``mallopt``).
    """
    global _applied  # noqa: PLW0603 - one process-wide setting, applied once
    env = os.environ if environ is None else environ
    with _lock:
        if _applied is not None:
            return _applied
        _applied = 0
        threshold = _threshold(env, default)
        if threshold <= 0 or env.get("MALLOC_MMAP_THRESHOLD_", "").strip():
            return 0
        libc = _glibc()
        if libc is None:
            return 0
        if libc.mallopt(_M_MMAP_THRESHOLD, threshold) != 1:
            _log.warning("mallopt(M_MMAP_THRESHOLD, %d) refused; glibc defaults kept", threshold)
            return 0
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_FACTOR * threshold)
        _applied = threshold
        return threshold


def limit_malloc_arenas(arenas: int, environ: Mapping[str, str] | None = None) -> bool:
    """Cap the number of glibc malloc arenas of this process (``mallopt(M_ARENA_MAX)``).

    glibc gives threads that contend for the heap arenas of their own (up to 8 per core),
    and each arena keeps up to the trim threshold of freed memory. A service whose large
    buffers are freed by other threads than the ones that allocated them (the gRPC core's,
    the event loop's, the default executor's) then holds several such reserves at once.
    Call it early: arenas that already exist stay.

    Parameters
    ----------
    arenas
        The most arenas (>= 1).
    environ
        Where ``MALLOC_ARENA_MAX`` is read (glibc's own tunable wins); ``os.environ`` when None.

    Returns
    -------
    bool
        True when the cap was set; False where the C library is not glibc, when
        ``MALLOC_ARENA_MAX`` is set, or when ``mallopt`` refused.
    """
    if arenas < 1:
        raise ValueError(f"arenas must be >= 1, not {arenas}")
    env = os.environ if environ is None else environ
    if env.get("MALLOC_ARENA_MAX", "").strip():
        return False
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, arenas) == 1)
