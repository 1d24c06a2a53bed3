"""Leader election over a lease record, with client-go's semantics and no transport.

The record is what a ``coordination.k8s.io/v1`` Lease holds: the holder's identity, the lease
duration, when it was acquired and last renewed, and how many times it changed hands. A
candidate takes the lease when it does not exist, when nobody holds it, or when the record has
not changed for a whole lease duration *as observed on the candidate's own clock* (as
client-go does: the stored times come from other machines, whose clocks may be skewed). The
leader renews every retry period; every write carries the ``resource_version`` it read, so two
candidates racing for an expired lease cannot both win (the loser gets a conflict).

Time is injected (a wall clock for the times written into the record, a monotonic clock for
expiry, a sleep), and so is the store of the record (:class:`LeasePort`), so the state machine
runs unchanged under a fake clock in tests and over the Kubernetes API in the GM.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "ElectionConfig",
    "LeaderElector",
    "LeaseConflictError",
    "LeaseError",
    "LeasePort",
    "LeaseRecord",
]

_log = logging.getLogger(__name__)


class LeaseError(Exception):
    """The lease could not be read or written (API unreachable, forbidden, invalid...)."""


class LeaseConflictError(LeaseError):
    """A create or replace lost a race: the lease exists already, or changed since it was read."""


@dataclass(frozen=True)
class LeaseRecord:
    """The content of a lease.

    Attributes
    ----------
    holder
        Identity of the holder; empty when the lease was released.
    lease_duration_seconds
        How long the others wait without seeing a renewal before they take over.
    acquire_time, renew_time
        When the holder acquired the lease and last renewed it (the holder's clock).
    transitions
        How many times the lease changed hands.
    resource_version
        The store's version of the record this was read from; None for a record not stored.
    """

    holder: str
    lease_duration_seconds: int
    acquire_time: datetime.datetime | None
    renew_time: datetime.datetime | None
    transitions: int = 0
    resource_version: str | None = None

    def same_content(self, other: LeaseRecord | None) -> bool:
        """Whether ``other`` holds the same record, whatever its stored version."""
        if other is None:
            return False
        return dataclasses.replace(self, resource_version=None) == dataclasses.replace(
            other, resource_version=None
        )


class LeasePort(Protocol):
    """Where the lease is stored (one named lease)."""

    async def get(self) -> LeaseRecord | None:
        """The stored record, or None when the lease does not exist.

        Raises
        ------
        LeaseError
            The store cannot be read.
        """

    async def create(self, record: LeaseRecord) -> LeaseRecord:
        """Create the lease; returns it as stored (with its version).

        Raises
        ------
        LeaseConflictError
            The lease exists already.
        LeaseError
            Any other failure.
        """

    async def replace(self, record: LeaseRecord) -> LeaseRecord:
        """Replace the lease if it is still at ``record.resource_version``.

        Raises
        ------
        LeaseConflictError
            The lease changed since that version was read.
        LeaseError
            Any other failure.
        """


@dataclass(frozen=True)
class ElectionConfig:
    """Who competes and how often (client-go's defaults).

    Parameters
    ----------
    identity
        This candidate's identity (unique among the candidates: the pod name).
    lease_duration
        Seconds the others wait for a renewal before they take over.
    renew_deadline
        Seconds the leader keeps retrying a failed renewal before it gives up leadership.
    retry_period
        Seconds between attempts to acquire or renew.

    Raises
    ------
    ValueError
        Empty identity, or not ``lease_duration > renew_deadline > retry_period > 0``.
    """

    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.identity:
            raise ValueError("leader election identity: must not be empty")
        if not self.retry_period > 0:
            raise ValueError(f"retry_period={self.retry_period}: must be > 0")
        if not self.renew_deadline > self.retry_period:
            raise ValueError(
                f"renew_deadline={self.renew_deadline}: must be greater than "
                f"retry_period={self.retry_period}"
            )
        if not self.lease_duration > self.renew_deadline:
            raise ValueError(
                f"lease_duration={self.lease_duration}: must be greater than "
                f"renew_deadline={self.renew_deadline}"
            )


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


class LeaderElector:
    """One candidate: acquire the lease, hold it, release it.

    Parameters
    ----------
    port
        The lease's store.
    config
        Identity and durations.
    wall_clock
        Time written into the record (``acquireTime``, ``renewTime``).
    monotonic
        Time used to decide expiry (immune to clock steps).
    sleep
        How to wait between attempts.
    """

    def __init__(
        self,
        port: LeasePort,
        config: ElectionConfig,
        *,
        wall_clock: Callable[[], datetime.datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.port = port
        self.config = config
        self._wall = wall_clock
        self._mono = monotonic
        self._sleep = sleep
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._last_renew: float | None = None

    @property
    def identity(self) -> str:
        """This candidate's identity."""
        return self.config.identity

    @property
    def is_leader(self) -> bool:
        """Whether the last observed record names this candidate."""
        return self._observed is not None and self._observed.holder == self.identity

    @property
    def observed(self) -> LeaseRecord | None:
        """The record as last read or written (None before the first attempt)."""
        return self._observed

    def _observe(self, record: LeaseRecord) -> None:
        # Expiry counts from when *this* process saw the record change, not from the
        # renewTime another machine wrote (clock skew), as client-go does.
        if not record.same_content(self._observed):
            self._observed_at = self._mono()
        self._observed = record

    async def try_acquire_or_renew(self) -> bool:
        """One attempt: create, take over or renew the lease.

        Returns
        -------
        bool
            Whether this candidate holds the lease afterwards. False when another holder's
            lease has not expired, when a write lost a race, or when the store failed.
        """
        now = self._wall()
        duration = max(1, round(self.config.lease_duration))
        try:
            current = await self.port.get()
            if current is None:
                created = await self.port.create(LeaseRecord(self.identity, duration, now, now, 0))
                self._observe(created)
                self._last_renew = self._mono()
                return True
            self._observe(current)
            mine = current.holder == self.identity
            expired = self._observed_at + current.lease_duration_seconds <= self._mono()
            if current.holder and not mine and not expired:
                return False
            record = LeaseRecord(
                holder=self.identity,
                lease_duration_seconds=duration,
                acquire_time=current.acquire_time if mine else now,
                renew_time=now,
                transitions=current.transitions if mine else current.transitions + 1,
                resource_version=current.resource_version,
            )
            stored = await self.port.replace(record)
        except LeaseConflictError as exc:
            _log.info("lost a race for the lease: %s", exc, extra={"identity": self.identity})
            return False
        except LeaseError as exc:
            _log.warning("lease attempt failed: %s", exc, extra={"identity": self.identity})
            return False
        if not mine:
            _log.info(
                "acquired the lease",
                extra={"identity": self.identity, "previous": current.holder or None},
            )
        self._observe(stored)
        self._last_renew = self._mono()
        return True

    async def acquire(self) -> None:
        """Try every retry period until this candidate holds the lease."""
        while not await self.try_acquire_or_renew():
            await self._sleep(self.config.retry_period)

    async def hold(self) -> None:
        """Renew every retry period; return when leadership is lost.

        Leadership is lost when no renewal succeeded for ``renew_deadline`` seconds (the
        others may take over ``lease_duration`` after the last one, which is later).
        """
        if self._last_renew is None:
            raise RuntimeError("hold() before acquire()")
        while True:
            await self._sleep(self.config.retry_period)
            if await self.try_acquire_or_renew():
                continue
            if self._mono() - self._last_renew >= self.config.renew_deadline:
                _log.error(
                    "leadership lost: no renewal for %.1fs",
                    self._mono() - self._last_renew,
                    extra={"identity": self.identity},
                )
                self._observed = None
                return

    async def release(self) -> bool:
        """Give the lease up (an empty holder), so that a standby takes over at once.

        Returns
        -------
        bool
            Whether a release was written (False when this candidate did not hold it, or the
            write failed: the others then wait for the lease to expire).
        """
        current = self._observed
        if current is None or current.holder != self.identity:
            return False
        try:
            stored = await self.port.replace(
                dataclasses.replace(current, holder="", lease_duration_seconds=1)
            )
        except LeaseError as exc:
            _log.warning("could not release the lease: %s", exc, extra={"identity": self.identity})
            return False
        self._observe(stored)
        self._last_renew = None
        return True
