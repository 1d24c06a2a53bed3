"""The dataset monitor: counts each Dataset's samples periodically and reports changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from sedna.api.common.v1 import types_pb2
from sedna.api.gm.v1 import hub_service_pb2
from sedna.resources.objects import ObjectKey, ResourceObject
from sedna_lc.datasets.source import DatasetError, count_samples, parse_source
from sedna_lc.datasets.store import ReportedState, ReportedStore
from sedna_lc.ports import ReportSink

__all__ = ["DEFAULT_INTERVAL", "DatasetMonitor"]

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 5.0
DATASET_KIND = "Dataset"


@dataclass
class _Watch:
    obj: ResourceObject
    credentials: dict[str, str]
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)


def _timestamp(now: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(now)
    return ts


class DatasetMonitor:
    """Counts the samples of every Dataset assigned to this node.

    One task per dataset counts every ``interval`` seconds (in a thread: the I/O blocks) and
    submits a ``NodeReport`` with a ``DatasetStatus`` only when the count or the error differs
    from the last report, which is persisted under ``state_dir`` so a restarted LC does not
    report it again.

    Parameters
    ----------
    sink
        Where reports go.
    state_dir
        Folder of ``datasets.json`` (the last reported count per dataset).
    interval
        Seconds between two counts of one dataset.
    rootfs
        Prefix of local dataset paths (upstream reads the host through ``/rootfs``).
    """

    def __init__(
        self,
        sink: ReportSink,
        state_dir: Path,
        *,
        interval: float = DEFAULT_INTERVAL,
        rootfs: Path | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval: must be > 0, got {interval}")
        self._sink = sink
        self._interval = interval
        self._rootfs = rootfs
        self._store = ReportedStore(state_dir / "datasets.json")
        self._watches: dict[ObjectKey, _Watch] = {}
        self._counts: dict[ObjectKey, int] = {}
        self._closed = False

    @staticmethod
    def _state_key(key: ObjectKey) -> str:
        return f"{key.namespace}/{key.name}"

    def keys(self) -> list[ObjectKey]:
        """The datasets being monitored."""
        return sorted(self._watches)

    def sample_counts(self) -> dict[ObjectKey, int]:
        """The latest sample count of every monitored dataset counted at least once.

        A dataset whose last count failed keeps its previous count (as its report does).
        """
        return {key: count for key, count in self._counts.items() if key in self._watches}

    async def apply(self, obj: ResourceObject, credentials: Mapping[str, str]) -> None:
        """Start monitoring ``obj``, or pick up a changed spec/credentials (idempotent)."""
        if self._closed:
            return
        creds = dict(credentials)
        current = self._watches.get(obj.key)
        if current is not None:
            unchanged = (
                current.obj.spec == obj.spec
                and current.obj.uid == obj.uid
                and current.credentials == creds
            )
            if current.obj.uid != obj.uid:
                self._counts.pop(obj.key, None)  # a new incarnation: its own count
            current.obj, current.credentials = obj.clone(), creds
            if not unchanged:
                current.wake.set()  # count again now, with the new spec
            return
        watch = _Watch(obj=obj.clone(), credentials=creds)
        watch.task = asyncio.create_task(self._run(obj.key, watch), name=f"dataset:{obj.key}")
        self._watches[obj.key] = watch

    async def remove(self, key: ObjectKey) -> None:
        """Stop monitoring ``key`` and forget its last report; unknown keys are a no-op."""
        watch = self._watches.pop(key, None)
        self._counts.pop(key, None)
        if watch is not None:
            await self._stop(watch)
        self._store.discard(self._state_key(key))

    async def resync(self, keys: Sequence[ObjectKey]) -> None:
        """Drop every dataset not in ``keys`` (other kinds in ``keys`` are ignored)."""
        wanted = {k for k in keys if k.kind == DATASET_KIND}
        for key in [k for k in self._watches if k not in wanted]:
            await self.remove(key)
        wanted_state = {self._state_key(k) for k in wanted}
        for state_key in self._store.recorded():
            if state_key not in wanted_state:
                self._store.discard(state_key)

    async def close(self) -> None:
        """Stop every monitoring task (the persisted state is kept)."""
        self._closed = True
        watches, self._watches = list(self._watches.values()), {}
        for watch in watches:
            await self._stop(watch)

    @staticmethod
    async def _stop(watch: _Watch) -> None:
        if watch.task is not None:
            watch.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch.task

    async def check_now(self, key: ObjectKey) -> None:
        """Count ``key`` once now and report if it changed (used by the loop and by tests)."""
        watch = self._watches.get(key)
        if watch is not None:
            await self._check(key, watch)

    async def _run(self, key: ObjectKey, watch: _Watch) -> None:
        while True:
            watch.wake.clear()
            try:
                await self._check(key, watch)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one dataset must not stop its monitoring
                logger.exception("dataset %s: check failed", key)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.wake.wait(), timeout=self._interval)

    async def _check(self, key: ObjectKey, watch: _Watch) -> None:
        obj = watch.obj
        spec = obj.spec
        count: int | None
        try:
            url = spec.get("url")
            fmt = spec.get("format")
            if not isinstance(url, str):
                raise DatasetError("spec.url: must be a string")
            if not isinstance(fmt, str):
                raise DatasetError(f"spec.format: {fmt!r} is not one of txt, csv, dir")
            source = parse_source(url, self._rootfs)
            count = await asyncio.to_thread(count_samples, source, fmt, watch.credentials)
            error = ""
            if self._watches.get(key) is watch:  # not removed while counting
                self._counts[key] = count
        except DatasetError as exc:
            count, error = None, str(exc)
        state_key = self._state_key(key)
        last = self._store.get(state_key)
        if last is not None and (last.uid, last.count, last.error) == (obj.uid, count, error):
            return
        if error:
            logger.warning("dataset %s: %s", key, error)
        previous = last.count if last is not None and last.uid == obj.uid else None
        await self._report(obj, count, error, previous)
        self._store.put(state_key, ReportedState(uid=obj.uid, count=count, error=error))

    async def _report(
        self, obj: ResourceObject, count: int | None, error: str, previous: int | None
    ) -> None:
        now = datetime.now(UTC)
        status = hub_service_pb2.DatasetStatus(update_time=_timestamp(now), error=error)
        # On error, keep the last known count so a receiver that ignores `error` keeps it.
        value = count if count is not None else previous
        if value is not None:
            status.number_of_samples = value
        report = hub_service_pb2.NodeReport(
            owner=types_pb2.ObjectReference(
                api_version=obj.api_version,
                kind=obj.kind,
                namespace=obj.namespace,
                name=obj.name,
                uid=obj.uid,
            ),
            observed_time=_timestamp(now),
            dataset=status,
        )
        await self._sink.submit(report)
