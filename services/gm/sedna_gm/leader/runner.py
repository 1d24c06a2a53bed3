"""Run a service's active parts only while this replica holds the lease.

:class:`Leadership` waits for the lease, then starts the parts (``on_elected``), renews until
leadership is lost, and then calls ``on_lost`` (the GM exits non-zero there, as
controller-runtime does, so that Kubernetes restarts it as a standby: a replica that lost the
lease must stop reconciling at once, and a fresh process is the simplest way to be sure).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from sedna_gm.leader.core import LeaderElector

__all__ = ["Leadership"]

_log = logging.getLogger(__name__)


class Leadership:
    """The election task of one replica.

    Parameters
    ----------
    elector
        This replica's candidate.
    on_elected
        Start the parts that only the leader runs; an exception counts as losing the lease.
    on_lost
        Called once when leadership is lost (or the start failed); not on :meth:`stop`.
    """

    def __init__(
        self,
        elector: LeaderElector,
        on_elected: Callable[[], Awaitable[None]],
        on_lost: Callable[[], None],
    ) -> None:
        self.elector = elector
        self._on_elected = on_elected
        self._on_lost = on_lost
        self._task: asyncio.Task[None] | None = None
        self._elected = False
        self.leading = asyncio.Event()

    def start(self) -> None:
        """Begin competing for the lease (in a task on the running loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="leader-election")

    async def _run(self) -> None:
        _log.info("waiting for the lease", extra={"identity": self.elector.identity})
        await self.elector.acquire()
        self._elected = True
        try:
            await self._on_elected()
        except Exception:
            _log.exception("leader could not start", extra={"identity": self.elector.identity})
            await self.elector.release()
            self._on_lost()
            return
        self.leading.set()
        _log.info("leading", extra={"identity": self.elector.identity})
        await self.elector.hold()
        self.leading.clear()
        self._on_lost()

    async def stop(self, cleanup: Callable[[], Awaitable[None]] | None = None) -> None:
        """Stop competing; give the lease up if held so that a standby takes over at once.

        Parameters
        ----------
        cleanup
            Stops what ``on_elected`` started; awaited (when it was called) before the lease
            is released, so that the next leader never overlaps with this one.
        """
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.leading.clear()
        if self._elected and cleanup is not None:
            await cleanup()
        await self.elector.release()
