"""The report outbox: a durable :class:`~sedna_lc.ports.ReportSink` feeding the GM link."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from sedna.api.gm.v1 import hub_service_pb2
from sedna_lc.state.db import LocalState

__all__ = ["MAX_TRACKED_DELIVERIES", "Outbox"]

MAX_TRACKED_DELIVERIES = 100_000
"""Most submit times kept in memory for the delivery-lag observer; later reports go untimed
(a long GM outage must not grow memory without bound; the outbox itself is on disk)."""


def _with_seq(report: hub_service_pb2.NodeReport, seq: int) -> bytes:
    copy = hub_service_pb2.NodeReport()
    copy.CopyFrom(report)
    copy.seq = seq
    return copy.SerializeToString(deterministic=True)


def _renumber(data: bytes, seq: int) -> bytes:
    return _with_seq(hub_service_pb2.NodeReport.FromString(data), seq)


class Outbox:
    """Reports waiting for the GM's acknowledgement, in ``LocalState``.

    ``submit`` assigns the next seq and commits before returning, then wakes the link.

    Parameters
    ----------
    state
        The open local database.
    on_delivered
        Called with the seconds from ``submit`` to the GM's acknowledgement of each report
        submitted by this process (reports restored from disk after a restart have no submit
        time here and are not observed); e.g. a Prometheus histogram's ``observe``.
    """

    def __init__(
        self, state: LocalState, *, on_delivered: Callable[[float], None] | None = None
    ) -> None:
        self._state = state
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._size: int | None = None
        self._on_delivered = on_delivered
        self._submitted: dict[int, float] = {}  # seq -> monotonic submit time, in seq order

    @property
    def changed(self) -> asyncio.Event:
        """Set after every submit; the link clears it before reading the outbox."""
        return self._changed

    @property
    def size(self) -> int:
        """Entries not yet acknowledged (as of the last change seen by this process)."""
        return self._size or 0

    async def refresh_size(self) -> int:
        """Re-count the entries from the database."""
        self._size = await self._state.outbox_count()
        return self._size

    async def submit(self, report: hub_service_pb2.NodeReport) -> int:
        """Persist ``report`` with the next sequence number and return it.

        Parameters
        ----------
        report
            The report; its ``seq`` is ignored and assigned here (the caller's message is
            not modified).

        Returns
        -------
        int
            The assigned sequence number.
        """
        async with self._lock:
            seq = await self._state.outbox_append(lambda s: _with_seq(report, s))
            self._size = (self._size if self._size is not None else 0) + 1
            if self._on_delivered is not None and len(self._submitted) < MAX_TRACKED_DELIVERIES:
                self._submitted[seq] = time.monotonic()
        self._changed.set()
        return seq

    async def ack(self, seq: int) -> None:
        """Drop every entry up to and including ``seq`` (the GM applied them)."""
        async with self._lock:
            self._size = await self._state.outbox_delete_upto(seq)
            delivered = [s for s in self._submitted if s <= seq]
        if delivered and self._on_delivered is not None:
            now = time.monotonic()
            for s in delivered:
                self._on_delivered(now - self._submitted.pop(s))

    async def pending(self, after: int, limit: int = 500) -> list[hub_service_pb2.NodeReport]:
        """Up to ``limit`` unacknowledged reports with seq > ``after``, in order."""
        rows = await self._state.outbox_after(after, limit)
        return [hub_service_pb2.NodeReport.FromString(data) for _, data in rows]

    async def rebase(self, after: int) -> None:
        """Renumber the entries after ``after``: the GM already saw seqs up to it from an
        earlier incarnation of this node's state."""
        async with self._lock:
            await self._state.outbox_rebase(after, _renumber)
            # Renumbered entries cannot be matched to their submit times any more (rare).
            self._submitted.clear()
