"""An :class:`~sedna_gm.controllers.events.EventRecorder` that persists events in SQL.

Controllers call :meth:`SqlEventRecorder.record` synchronously in the middle of a reconcile, so
it never touches the database: it updates the in-memory rings of
:class:`~sedna_gm.controllers.events.MemoryEventRecorder` (same bounds, same dedupe: a repeat of
an object's latest event bumps its count and last time) and marks the object dirty. A
background task writes the dirty objects every ``flush_interval`` seconds, each one as a whole
(delete its rows, insert its ring: at most ``per_object`` rows), in one transaction. A failed
write is logged at debug level and retried at the next flush; it never reaches a reconcile.

The memory is the authority while the GM runs and is loaded from the table at :meth:`start`,
so counting and bounding carry on across restarts. Objects whose latest event is older than
``retention`` seconds and that no longer exist (``exists``) are dropped every
``prune_interval`` seconds. The table lives in the resource store's own database (one file to
back up); SQLAlchemy's synchronous engine runs in a worker thread, as for the hub's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
)

from sedna.resources.objects import ObjectKey
from sedna_gm.controllers.conditions import utcnow
from sedna_gm.controllers.events import Event, EventType, MemoryEventRecorder
from sedna_gm.hub.sql_state_store import engine_url

__all__ = ["EVENTS_TABLE", "SqlEventRecorder"]

_log = logging.getLogger(__name__)

_metadata = MetaData()

EVENTS_TABLE = Table(
    "sedna_events",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(253), nullable=False),
    Column("namespace", String(63), nullable=False),
    Column("name", String(253), nullable=False),
    Column("type", String(16), nullable=False),
    Column("reason", String(253), nullable=False),
    Column("message", Text, nullable=False),
    Column("source", String(253), nullable=False),
    Column("count", Integer, nullable=False),
    # Seconds since the epoch (UTC): portable across SQLite and PostgreSQL.
    Column("first_time", Float, nullable=False),
    Column("last_time", Float, nullable=False),
    Index("ix_sedna_events_object", "kind", "namespace", "name"),
)
"""One row per event; an object's rows in insertion order (``id``) are its events, oldest first."""

Exists = Callable[[ObjectKey], Awaitable[bool]]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
    finally:
        cursor.close()


def _where(key: ObjectKey) -> Any:
    c = EVENTS_TABLE.c
    return and_(c.kind == key.kind, c.namespace == key.namespace, c.name == key.name)


def _event_from_row(row: Any) -> Event:
    return Event(
        key=ObjectKey(row.kind, row.namespace, row.name),
        type=cast(EventType, row.type),
        reason=row.reason,
        message=row.message,
        count=int(row.count),
        first_time=datetime.fromtimestamp(row.first_time, UTC),
        last_time=datetime.fromtimestamp(row.last_time, UTC),
        source=row.source,
    )


def _row(event: Event) -> dict[str, Any]:
    return {
        "kind": event.key.kind,
        "namespace": event.key.namespace,
        "name": event.key.name,
        "type": event.type,
        "reason": event.reason,
        "message": event.message,
        "source": event.source,
        "count": event.count,
        "first_time": event.first_time.timestamp(),
        "last_time": event.last_time.timestamp(),
    }


class SqlEventRecorder(MemoryEventRecorder):
    """Events in the table ``sedna_events``, written behind the in-memory recorder.

    Parameters
    ----------
    url
        Database URL: ``sqlite:///PATH`` or ``postgresql://...`` (the resource store's).
    per_object, max_objects
        Bounds, as for :class:`MemoryEventRecorder`; an object that falls out of memory is
        deleted from the table too.
    flush_interval
        Seconds between a recorded event and its write (events in between share one write).
    retention
        Seconds after its latest event that a deleted object's events are dropped.
    prune_interval
        Seconds between looks for such objects.
    exists
        Whether an object still exists (e.g. a store ``get``); without it, every object
        whose latest event is older than ``retention`` is dropped.
    clock
        Source of event times (tests inject one).
    """

    def __init__(
        self,
        url: str,
        *,
        per_object: int = 50,
        max_objects: int = 10_000,
        flush_interval: float = 0.5,
        retention: float = 3600.0,
        prune_interval: float = 600.0,
        exists: Exists | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(per_object=per_object, max_objects=max_objects, clock=clock)
        if flush_interval <= 0 or retention <= 0 or prune_interval <= 0:
            raise ValueError("flush_interval, retention and prune_interval must be positive")
        self._engine: Engine = create_engine(engine_url(url))
        if self._engine.dialect.name == "sqlite":
            event.listen(self._engine, "connect", _sqlite_pragmas)
        self._flush_interval = flush_interval
        self._retention = retention
        self._prune_interval = prune_interval
        self._exists = exists
        self._dirty: set[ObjectKey] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = False
        self._flushing = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SqlEventRecorder({self._engine.url.render_as_string(hide_password=True)!r})"

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the table, load the stored events and start writing behind.

        Raises
        ------
        sqlalchemy.exc.SQLAlchemyError
            The database cannot be reached (the GM does not start without its store either).
        """
        stored = await asyncio.to_thread(self._load)
        # Objects that got events before start keep them; their stored ones are replaced.
        self._restore([e for e in stored if e.key not in self._events])
        self._started = True
        self._task = asyncio.create_task(self._run(), name="sedna-event-flush")

    async def close(self) -> None:
        """Stop the background task, write what is pending and release the connections."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        await asyncio.to_thread(self._engine.dispose)

    # -- the recorder side -----------------------------------------------------------------

    def _changed(self, key: ObjectKey) -> None:
        self._dirty.add(key)
        self._wake.set()

    async def flush(self) -> None:
        """Write every dirty object now; on failure keep them dirty (logged at debug)."""
        async with self._flushing:  # one write at a time: a later snapshot lands last
            if not self._dirty:
                return
            batch = {key: self.events_for(key) for key in self._dirty}
            self._dirty.clear()
            try:
                await asyncio.to_thread(self._write, batch)
            except Exception as exc:  # an event write must never fail anything
                _log.debug("writing events of %d object(s) failed: %s", len(batch), exc)
                self._dirty.update(batch)

    async def prune(self) -> int:
        """Drop the events of objects that are gone and quiet for ``retention`` seconds.

        Returns
        -------
        int
            How many objects' events were dropped.
        """
        cutoff = self._clock().timestamp() - self._retention
        quiet = [k for k, ring in self._events.items() if ring[-1].last_time.timestamp() < cutoff]
        dropped = 0
        for key in quiet:
            if self._exists is not None:
                try:
                    if await self._exists(key):
                        continue
                except Exception as exc:  # try again at the next prune
                    _log.debug("cannot tell whether %s exists: %s", key, exc)
                    continue
            self.forget(key)
            dropped += 1
        return dropped

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_prune = loop.time() + self._prune_interval
        # The flag ends the loop even when a cancellation is lost to a wake-up at that moment.
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_prune - loop.time())):
                    await self._wake.wait()
            if self._wake.is_set():
                self._wake.clear()
                await asyncio.sleep(self._flush_interval)  # gather a burst into one write
            if loop.time() >= next_prune:
                try:
                    await self.prune()
                except Exception as exc:
                    _log.debug("pruning events failed: %s", exc)
                next_prune = loop.time() + self._prune_interval
            await self.flush()

    # -- the API side ----------------------------------------------------------------------

    async def list_events(self, key: ObjectKey) -> list[Event]:
        """Events about ``key``, oldest first, as stored (or as recorded, while unwritten).

        Reads the table, so a GM sharing the database sees them too; falls back to memory
        when the read fails.
        """
        if not self._started or key in self._dirty:
            return self.events_for(key)
        try:
            return await asyncio.to_thread(self._read, key)
        except Exception as exc:
            _log.debug("reading events of %s failed, answering from memory: %s", key, exc)
            return self.events_for(key)

    # -- database work (worker thread) -----------------------------------------------------

    def _load(self) -> list[Event]:
        _metadata.create_all(self._engine)
        c = EVENTS_TABLE.c
        with self._engine.connect() as conn:
            # The most recently active objects first, at most max_objects of them.
            latest = (
                select(c.kind, c.namespace, c.name, func.max(c.last_time).label("latest"))
                .group_by(c.kind, c.namespace, c.name)
                .order_by(func.max(c.last_time).desc())
                .limit(self._max_objects)
            )
            keys = [ObjectKey(r.kind, r.namespace, r.name) for r in conn.execute(latest)]
            if not keys:
                return []
            order = {key: i for i, key in enumerate(reversed(keys))}  # least recent first
            events: list[Event] = []
            for start in range(0, len(keys), 200):
                chunk = keys[start : start + 200]
                rows = conn.execute(
                    select(EVENTS_TABLE).where(or_(*(_where(k) for k in chunk))).order_by(c.id)
                )
                events.extend(_event_from_row(row) for row in rows)
        events.sort(key=lambda e: order[e.key])  # stable: each object's own order is kept
        return events

    def _write(self, batch: Mapping[ObjectKey, Sequence[Event]]) -> None:
        with self._engine.begin() as conn:
            for key, events in batch.items():
                conn.execute(delete(EVENTS_TABLE).where(_where(key)))
                if events:
                    conn.execute(insert(EVENTS_TABLE), [_row(e) for e in events])

    def _read(self, key: ObjectKey) -> list[Event]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(EVENTS_TABLE).where(_where(key)).order_by(EVENTS_TABLE.c.id))
            return [_event_from_row(row) for row in rows]
