"""Encoded chunk messages of an aggregate, shared by the pulls that stream it at once.

When a round closes, every trainer pulls its aggregate at about the same moment: K streams
of the same chunks, nearly in step. Each chunk message is the same bytes for all of them, so
the first pull to reach a chunk encodes it (copies the weights into the message) and keeps
it here; the pulls right behind it send that message instead of copying the weights again.
Measured with K = 8 and a 100 MB model: ~8% shorter rounds (2.25-2.40 s against 2.50-2.62 s,
interleaved runs); the kept messages (16 MiB) are a sixth of the model.

Only the most recent ``capacity`` chunks are kept (oldest out first), so the memory is
bounded whatever the pulls do: a pull that falls behind by more than that encodes its own
chunks, as without the cache. A key names its session and round: a session's rounds only
move forward in a server process, so a key never names two different aggregates. Used from
the event loop's thread only (no lock).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

__all__ = ["DEFAULT_CAPACITY", "SharedChunks"]

DEFAULT_CAPACITY: Final = 16
"""Chunk messages kept: 16 MiB with the default 1 MiB pull chunks."""

ChunkKey = tuple[str, int, int, int]
"""``(session id, round, tensor index, byte offset)``."""


class SharedChunks:
    """The last ``capacity`` encoded chunk messages, by session, round, tensor and offset.

    Parameters
    ----------
    capacity
        Most messages kept (>= 0; 0 keeps none: every pull encodes its own).
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, not {capacity}")
        self._capacity = capacity
        self._messages: OrderedDict[ChunkKey, bytes] = OrderedDict()
        self.hits = 0
        """Messages served from here (the copy they saved)."""
        self.misses = 0
        """Messages encoded (by the first pull to reach them, or a pull that fell behind)."""

    def __len__(self) -> int:
        return len(self._messages)

    def get(self, key: ChunkKey) -> bytes | None:
        """The message kept for ``key``, or None (then encode it and :meth:`put` it)."""
        message = self._messages.get(key)
        if message is None:
            self.misses += 1
        else:
            self.hits += 1
        return message

    def put(self, key: ChunkKey, message: bytes) -> None:
        """Keep ``message`` for the pulls behind this one (the oldest kept one goes if full)."""
        if not self._capacity:
            return
        self._messages[key] = message
        while len(self._messages) > self._capacity:
            self._messages.popitem(last=False)
