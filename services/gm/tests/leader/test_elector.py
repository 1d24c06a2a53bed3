"""The elector's state machine with a fake clock and an in-memory lease store."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime

import pytest

from sedna_gm.leader import (
    ElectionConfig,
    LeaderElector,
    Leadership,
    LeaseConflictError,
    LeaseError,
    LeaseRecord,
)

EPOCH = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


class Clock:
    """Wall and monotonic time that only move when told (or when the elector sleeps)."""

    def __init__(self) -> None:
        self.now = 0.0

    def wall(self) -> datetime.datetime:
        return EPOCH + datetime.timedelta(seconds=self.now)

    def mono(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class MemoryLease:
    """One lease with a version, as the API server keeps it (409 on a stale version)."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.version = 0
        self.fail: LeaseError | None = None
        self.writes: list[LeaseRecord] = []

    def _store(self, record: LeaseRecord) -> LeaseRecord:
        self.version += 1
        self.record = dataclasses.replace(record, resource_version=str(self.version))
        self.writes.append(self.record)
        return self.record

    async def get(self) -> LeaseRecord | None:
        if self.fail is not None:
            raise self.fail
        return self.record

    async def create(self, record: LeaseRecord) -> LeaseRecord:
        if self.fail is not None:
            raise self.fail
        if self.record is not None:
            raise LeaseConflictError("already exists")
        return self._store(record)

    async def replace(self, record: LeaseRecord) -> LeaseRecord:
        if self.fail is not None:
            raise self.fail
        assert self.record is not None
        if record.resource_version != self.record.resource_version:
            raise LeaseConflictError("the object has been modified")
        return self._store(record)


def holder(lease: MemoryLease) -> str:
    assert lease.record is not None
    return lease.record.holder


def elector(name: str, lease: MemoryLease, clock: Clock) -> LeaderElector:
    return LeaderElector(
        lease,
        ElectionConfig(identity=name),  # client-go's 15 s / 10 s / 2 s
        wall_clock=clock.wall,
        monotonic=clock.mono,
        sleep=clock.sleep,
    )


async def test_first_candidate_creates_the_lease() -> None:
    lease, clock = MemoryLease(), Clock()
    a = elector("a", lease, clock)
    assert await a.try_acquire_or_renew()
    assert lease.record is not None
    assert lease.record.holder == "a"
    assert lease.record.lease_duration_seconds == 15
    assert lease.record.acquire_time == lease.record.renew_time == EPOCH
    assert lease.record.transitions == 0
    assert a.is_leader


async def test_leader_renews_and_keeps_acquire_time() -> None:
    lease, clock = MemoryLease(), Clock()
    a = elector("a", lease, clock)
    assert await a.try_acquire_or_renew()
    clock.now = 2.0
    assert await a.try_acquire_or_renew()
    assert lease.record is not None
    assert lease.record.acquire_time == EPOCH
    assert lease.record.renew_time == EPOCH + datetime.timedelta(seconds=2)
    assert lease.record.transitions == 0
    assert lease.record.resource_version == "2"


async def test_standby_waits_while_the_leader_renews() -> None:
    lease, clock = MemoryLease(), Clock()
    a, b = elector("a", lease, clock), elector("b", lease, clock)
    assert await a.try_acquire_or_renew()
    for _ in range(20):  # 40 s of renewals: the record keeps changing, b never takes over
        clock.now += 2.0
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()
    assert holder(lease) == "a"
    assert not b.is_leader


async def test_standby_takes_over_an_expired_lease_on_its_own_clock() -> None:
    lease, clock = MemoryLease(), Clock()
    a, b = elector("a", lease, clock), elector("b", lease, clock)
    assert await a.try_acquire_or_renew()
    clock.now = 100.0
    # b sees the record for the first time now: expiry counts from this observation, not
    # from the (possibly skewed) renewTime written by a.
    assert not await b.try_acquire_or_renew()
    clock.now = 114.9
    assert not await b.try_acquire_or_renew()
    clock.now = 115.0
    assert await b.try_acquire_or_renew()
    assert lease.record is not None
    assert lease.record.holder == "b"
    assert lease.record.transitions == 1
    assert lease.record.acquire_time == EPOCH + datetime.timedelta(seconds=115)


async def test_released_lease_is_taken_at_once() -> None:
    lease, clock = MemoryLease(), Clock()
    a, b = elector("a", lease, clock), elector("b", lease, clock)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    assert await a.release()
    assert holder(lease) == ""
    assert await b.try_acquire_or_renew()
    assert holder(lease) == "b"


async def test_conflict_means_lost_race() -> None:
    lease, clock = MemoryLease(), Clock()
    a, b = elector("a", lease, clock), elector("b", lease, clock)
    assert await a.try_acquire_or_renew()
    clock.now = 20.0
    assert not await b.try_acquire_or_renew()  # first observation
    clock.now = 40.0
    # a renews between b's read and b's write: b's write carries a stale version.
    real_get = lease.get

    async def get_then_leader_renews() -> LeaseRecord | None:
        seen = await real_get()
        lease.get = real_get  # type: ignore[method-assign]
        assert await a.try_acquire_or_renew()
        return seen

    lease.get = get_then_leader_renews  # type: ignore[method-assign]
    assert not await b.try_acquire_or_renew()
    assert holder(lease) == "a"


async def test_concurrent_create_conflict() -> None:
    lease, clock = MemoryLease(), Clock()
    b = elector("b", lease, clock)
    real_get = lease.get

    async def nothing_yet() -> LeaseRecord | None:
        lease.get = real_get  # type: ignore[method-assign]
        await elector("a", lease, clock).try_acquire_or_renew()  # a creates it first
        return None

    lease.get = nothing_yet  # type: ignore[method-assign]
    assert not await b.try_acquire_or_renew()
    assert holder(lease) == "a"


async def test_store_errors_are_failed_attempts() -> None:
    lease, clock = MemoryLease(), Clock()
    lease.fail = LeaseError("HTTP 403 Forbidden")
    a = elector("a", lease, clock)
    assert not await a.try_acquire_or_renew()
    lease.fail = None
    assert await a.try_acquire_or_renew()


async def test_leader_loses_the_lease_after_the_renew_deadline() -> None:
    lease, clock = MemoryLease(), Clock()
    a = elector("a", lease, clock)
    await a.acquire()
    renewals = len(lease.writes)
    real_get = lease.get
    calls = 0

    async def failing_after_three() -> LeaseRecord | None:
        nonlocal calls
        calls += 1
        if calls > 3:
            raise LeaseError("connection refused")
        return await real_get()

    lease.get = failing_after_three  # type: ignore[method-assign]
    await a.hold()  # returns once leadership is lost
    assert len(lease.writes) == renewals + 3
    # Last renewal at t=6; attempts fail from t=8; lost at the first attempt >= 16.
    assert clock.now == 16.0
    assert not a.is_leader


async def test_leader_that_was_replaced_gives_up() -> None:
    lease, clock = MemoryLease(), Clock()
    a = elector("a", lease, clock)
    await a.acquire()
    # Someone else holds it now (a was paused longer than the lease, say).
    assert lease.record is not None
    lease._store(dataclasses.replace(lease.record, holder="b", renew_time=clock.wall()))

    async def b_keeps_renewing(seconds: float) -> None:
        clock.now += seconds
        assert lease.record is not None
        lease._store(dataclasses.replace(lease.record, renew_time=clock.wall()))

    a._sleep = b_keeps_renewing
    await a.hold()
    assert clock.now == 10.0
    assert not a.is_leader


async def test_acquire_retries_every_retry_period() -> None:
    lease, clock = MemoryLease(), Clock()
    a, b = elector("a", lease, clock), elector("b", lease, clock)
    await a.acquire()
    await b.acquire()  # a never renews: b waits out the lease duration
    assert holder(lease) == "b"
    assert clock.now == 16.0  # first observation at 0, then every 2 s until >= 15


async def test_leadership_starts_the_leader_and_reports_loss() -> None:
    lease, clock = MemoryLease(), Clock()
    a = elector("a", lease, clock)
    events: list[str] = []

    async def elected() -> None:
        events.append(f"elected at {clock.now}")
        lease.fail = LeaseError("API server gone")

    leadership = Leadership(a, elected, lambda: events.append(f"lost at {clock.now}"))
    leadership.start()
    assert leadership._task is not None
    await leadership._task
    assert events == ["elected at 0.0", "lost at 10.0"]


async def test_leadership_stop_cleans_up_then_releases() -> None:
    lease, clock = MemoryLease(), Clock()
    a = elector("a", lease, clock)
    events: list[str] = []

    async def elected() -> None:
        events.append("elected")

    async def cleanup() -> None:
        assert holder(lease) == "a"
        events.append("cleaned up")

    leadership = Leadership(a, elected, lambda: events.append("lost"))
    # A real sleep, so that stop() can cancel the renewal loop.
    a._sleep = _yield
    leadership.start()
    while not leadership.leading.is_set():
        await _yield(0)
    await leadership.stop(cleanup=cleanup)
    assert events == ["elected", "cleaned up"]
    assert holder(lease) == ""


async def test_a_failed_start_releases_and_reports_loss() -> None:
    lease, clock = MemoryLease(), Clock()
    events: list[str] = []

    async def elected() -> None:
        raise RuntimeError("store unreachable")

    leadership = Leadership(elector("a", lease, clock), elected, lambda: events.append("lost"))
    leadership.start()
    assert leadership._task is not None
    await leadership._task
    assert events == ["lost"]
    assert holder(lease) == ""


async def _yield(seconds: float) -> None:
    await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"identity": ""}, "identity"),
        ({"identity": "a", "retry_period": 0}, "retry_period"),
        ({"identity": "a", "renew_deadline": 2, "retry_period": 2}, "renew_deadline"),
        ({"identity": "a", "lease_duration": 10, "renew_deadline": 10}, "lease_duration"),
    ],
)
def test_bad_durations_are_named(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ElectionConfig(**kwargs)  # type: ignore[arg-type]
