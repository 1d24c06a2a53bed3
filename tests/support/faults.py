"""Fault injection for node streams: drop or duplicate messages at random."""

from __future__ import annotations

import random
from typing import Any

__all__ = ["Faulty"]


class Faulty:
    """Drops or duplicates a fraction of non-handshake messages in both directions."""

    def __init__(self, inner: Any, rng: random.Random, rate: float = 0.1) -> None:
        self._inner = inner
        self._rng = rng
        self._rate = rate
        self._dup: list[Any] = []
        self.dropped = 0
        self.duplicated = 0

    def _fate(self, message: Any) -> str:
        if message.WhichOneof("message") in ("hello", "welcome"):
            return "keep"
        roll = self._rng.random()
        fate = "drop" if roll < self._rate else "dup" if roll < 2 * self._rate else "keep"
        self.dropped += fate == "drop"
        self.duplicated += fate == "dup"
        return fate

    async def send(self, message: Any) -> None:
        fate = self._fate(message)
        if fate != "drop":
            await self._inner.send(message)
        if fate == "dup":
            await self._inner.send(message)

    async def recv(self) -> Any:
        if self._dup:
            return self._dup.pop()
        while True:
            message = await self._inner.recv()
            if message is None:
                return None
            fate = self._fate(message)
            if fate == "drop":
                continue
            if fate == "dup":
                self._dup.append(message)
            return message

    def close(self) -> None:
        self._inner.close()
