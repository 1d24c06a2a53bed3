"""The SQL adapter of the ResourceStore port: SQLite (one GM) or PostgreSQL (several GMs).

Semantics are those of :mod:`sedna_gm.store.port`. How they are kept:

- A single-row counter (``sedna_revision``) is bumped as the first statement of every write
  transaction; the object row and one change-log row carrying that revision are written in the
  same transaction. The counter's row lock (PostgreSQL) or the database write lock (SQLite)
  serializes writers, so revisions are gap-free and commit in order, and ``resourceVersion``
  is the decimal revision of an object's last write.
- A write that changes nothing (same spec, metadata or status) is rolled back and returns the
  stored object: no new revision, no event (as on Kubernetes).
- ``watch`` reads the change log after a cursor. Writes from this process wake watchers at
  once; writes from other processes are found by polling every ``poll_interval`` seconds. The
  log keeps the last ``history_limit`` revisions; a cursor older than that raises
  :class:`GoneError`.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import functools
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from sedna.resources.objects import ObjectKey, ResourceObject
from sedna_gm.store.errors import (
    AlreadyExistsError,
    ConflictError,
    GoneError,
    InvalidObjectError,
    NotFoundError,
    StoreUnavailableError,
)
from sedna_gm.store.port import ListResult, WatchEvent, WatchEventType
from sedna_gm.store.sql_codec import (
    canonical_json,
    metadata_columns,
    object_from_dict,
    object_from_row,
    parse_json,
    validate_identity,
)
from sedna_gm.store.sql_engine import (
    IMMEDIATE,
    create_engine,
    describe_url,
    is_sqlite,
    normalize_url,
    unavailable_error,
)
from sedna_gm.store.sql_schema import CHANGES, COUNTER_ROW_ID, METADATA, OBJECTS, REVISION

__all__ = ["SqlResourceStore"]

T = TypeVar("T")

# Change-log rows read per query by a watch that is catching up.
_WATCH_BATCH = 500
# Worker threads (and pooled connections) per store: each runs whole transactions.
_WORKERS = 4
# Concurrent schema creation by several GMs on one PostgreSQL database can collide once.
_START_ATTEMPTS = 3
_CONNECTION_ERRORS = (OperationalError, InterfaceError, OSError)


class _UnchangedError(Exception):
    """Raised inside a write transaction to roll it back and return the stored object."""

    def __init__(self, obj: ResourceObject) -> None:
        super().__init__("unchanged")
        self.obj = obj


class SqlResourceStore:
    """A :class:`~sedna_gm.store.port.ResourceStore` on SQLite or PostgreSQL.

    Parameters
    ----------
    url
        ``sqlite:///path/to/file.db`` (or ``sqlite+aiosqlite://``) or
        ``postgresql://user:password@host:port/db`` (or ``postgresql+psycopg://``).
    history_limit
        How many change-log entries are kept for watches to resume from.
    poll_interval
        Seconds between change-log polls, which is how a watch notices writes made by other
        processes (writes by this store wake its watches immediately).

    Raises
    ------
    ValueError
        The URL is not a SQLite or PostgreSQL URL, or a limit is not positive.
    """

    def __init__(self, url: str, *, history_limit: int = 10000, poll_interval: float = 0.2):
        if history_limit < 1:
            raise ValueError(f"history_limit must be at least 1, got {history_limit}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval}")
        self._url = normalize_url(url)
        self._sqlite = is_sqlite(self._url)
        self._history_limit = history_limit
        self._poll_interval = poll_interval
        self._engine: Engine | None = None
        self._closed = False
        # One in-memory SQLite connection is shared (StaticPool): one thread at a time uses it.
        memory = self._sqlite and self._url.database in (None, "", ":memory:")
        self._threads = ThreadPoolExecutor(
            max_workers=1 if memory else _WORKERS, thread_name_prefix="sql-store"
        )
        # SQLite has one writer at a time anyway; queueing here beats spinning on busy_timeout.
        self._write_lock = asyncio.Lock()
        # One wake-up event per watched kind (None: watches of every kind); a write wakes only
        # the watches that can see it, the others keep sleeping until their poll interval.
        self._wakes: dict[str | None, asyncio.Event] = {}

    def __repr__(self) -> str:
        return f"SqlResourceStore({describe_url(self._url)!r})"

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, create the tables if missing and initialise the revision counter.

        Raises
        ------
        StoreUnavailableError
            The database cannot be reached or opened.
        """
        if self._closed:
            raise StoreUnavailableError(f"{self!r} is closed")
        if self._engine is not None:
            return
        engine = create_engine(self._url, pool_size=_WORKERS)
        try:
            for attempt in range(1, _START_ATTEMPTS + 1):
                try:
                    await self._in_thread(self._create_schema, engine)
                    break
                except IntegrityError:
                    if attempt == _START_ATTEMPTS:
                        raise
        except _CONNECTION_ERRORS as exc:
            await self._in_thread(engine.dispose)
            raise unavailable_error(self._url, exc) from None
        except BaseException:
            await self._in_thread(engine.dispose)
            raise
        self._engine = engine

    def _create_schema(self, engine: Engine) -> None:
        with engine.connect() as conn:
            if self._sqlite:
                conn.execution_options(**{IMMEDIATE: True})
            with conn.begin():
                METADATA.create_all(conn)
                values = {"id": COUNTER_ROW_ID, "value": 0}
                if self._sqlite:
                    stmt: Any = sqlite_insert(REVISION).values(values).on_conflict_do_nothing()
                else:
                    stmt = pg_insert(REVISION).values(values).on_conflict_do_nothing()
                conn.execute(stmt)

    async def close(self) -> None:
        """Release the connections; watches end (their iterators stop)."""
        self._closed = True
        self._notify()
        engine, self._engine = self._engine, None
        if engine is not None:
            await self._in_thread(engine.dispose)
        self._threads.shutdown(wait=False)

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on one of the store's worker threads."""
        return await asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)

    # -- reads -----------------------------------------------------------------------------

    async def get(self, kind: str, namespace: str, name: str) -> ResourceObject:
        """Return the object; raises NotFoundError."""

        def read(conn: Connection) -> ResourceObject:
            row = _select_row(conn, kind, namespace, name)
            if row is None:
                raise NotFoundError(ObjectKey(kind, namespace, name))
            return object_from_row(row)

        return await self._read(read)

    async def list(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: Mapping[str, str] | None = None,
    ) -> ListResult:
        """Objects of a kind sorted by (namespace, name), plus the current revision."""
        selector = dict(label_selector or {})

        def read(conn: Connection) -> ListResult:
            head = _head(conn)
            query = select(OBJECTS).where(OBJECTS.c.kind == kind)
            if namespace is not None:
                query = query.where(OBJECTS.c.namespace == namespace)
            query = query.order_by(OBJECTS.c.namespace, OBJECTS.c.name)
            items = [object_from_row(row) for row in conn.execute(query)]
            if selector:
                items = [o for o in items if all(o.labels.get(k) == v for k, v in selector.items())]
            return ListResult(items=items, resource_version=str(head))

        return await self._read(read)

    # -- writes ----------------------------------------------------------------------------

    async def create(self, obj: ResourceObject) -> ResourceObject:
        """Store a new object; raises AlreadyExistsError, InvalidObjectError."""
        validate_identity(obj.kind, obj.namespace, obj.name)

        def write(conn: Connection, revision: int, now: datetime) -> ResourceObject:
            if _select_row(conn, obj.kind, obj.namespace, obj.name) is not None:
                raise AlreadyExistsError(obj.key)
            new = obj.clone()
            new.uid = str(uuid.uuid4())
            new.resource_version = str(revision)
            new.generation = 1
            new.creation_timestamp = now
            new.deletion_timestamp = None
            new.status = {}
            try:
                conn.execute(
                    insert(OBJECTS).values(
                        kind=new.kind,
                        namespace=new.namespace,
                        name=new.name,
                        uid=new.uid,
                        api_version=new.api_version,
                        revision=revision,
                        generation=1,
                        metadata=canonical_json(metadata_columns(new)),
                        spec=canonical_json(new.spec),
                        status=canonical_json(new.status),
                        created_at=now,
                        updated_at=now,
                    )
                )
            except IntegrityError:
                raise AlreadyExistsError(obj.key) from None
            self._record(conn, revision, WatchEventType.ADDED, new)
            return new

        return await self._write(write)

    async def update(self, obj: ResourceObject) -> ResourceObject:
        """Write metadata and spec; raises NotFoundError, ConflictError."""

        def write(conn: Connection, revision: int, now: datetime) -> ResourceObject:
            current = self._current(conn, obj)
            new = current.clone()
            new.labels = dict(obj.labels)
            new.annotations = dict(obj.annotations)
            new.finalizers = list(obj.finalizers)
            new.owner_references = list(obj.owner_references)
            new.spec = copy.deepcopy(obj.spec)
            if current.deletion_timestamp is not None:
                added = sorted(set(new.finalizers) - set(current.finalizers))
                if added:
                    raise InvalidObjectError(
                        f"no new finalizers ({', '.join(added)}) can be added to an object "
                        "that is being deleted",
                        "metadata.finalizers",
                    )
            spec_changed = canonical_json(new.spec) != canonical_json(current.spec)
            meta_changed = canonical_json(metadata_columns(new)) != canonical_json(
                metadata_columns(current)
            )
            if not spec_changed and not meta_changed:
                raise _UnchangedError(current)
            if spec_changed:
                new.generation = current.generation + 1
            new.resource_version = str(revision)
            if current.deletion_timestamp is not None and not new.finalizers:
                self._delete_row(conn, new, revision)
                return new
            conn.execute(
                _row_update(new).values(
                    revision=revision,
                    generation=new.generation,
                    metadata=canonical_json(metadata_columns(new)),
                    spec=canonical_json(new.spec),
                    updated_at=now,
                )
            )
            self._record(conn, revision, WatchEventType.MODIFIED, new)
            return new

        return await self._write(write)

    async def update_status(self, obj: ResourceObject) -> ResourceObject:
        """Write status only; raises NotFoundError, ConflictError."""

        def write(conn: Connection, revision: int, now: datetime) -> ResourceObject:
            current = self._current(conn, obj)
            if canonical_json(obj.status) == canonical_json(current.status):
                raise _UnchangedError(current)
            new = current.clone()
            new.status = copy.deepcopy(obj.status)
            new.resource_version = str(revision)
            conn.execute(
                _row_update(new).values(
                    revision=revision, status=canonical_json(new.status), updated_at=now
                )
            )
            self._record(conn, revision, WatchEventType.MODIFIED, new)
            return new

        return await self._write(write)

    async def delete(
        self, kind: str, namespace: str, name: str, resource_version: str = ""
    ) -> ResourceObject:
        """Delete, or only mark for deletion while finalizers remain; raises NotFoundError."""
        key = ObjectKey(kind, namespace, name)

        def write(conn: Connection, revision: int, now: datetime) -> ResourceObject:
            row = _select_row(conn, kind, namespace, name)
            if row is None:
                raise NotFoundError(key)
            current = object_from_row(row)
            _check_version(key, resource_version, current.resource_version)
            if current.deletion_timestamp is not None:
                raise _UnchangedError(current)
            new = current.clone()
            new.resource_version = str(revision)
            # Every delete reports when it happened, whether the row goes now or waits for
            # finalizers (the API and the in-memory store behave the same).
            new.deletion_timestamp = now
            if not current.finalizers:
                self._delete_row(conn, new, revision)
                return new
            conn.execute(
                _row_update(new).values(
                    revision=revision,
                    metadata=canonical_json(metadata_columns(new)),
                    updated_at=now,
                    deleted_at=now,
                )
            )
            self._record(conn, revision, WatchEventType.MODIFIED, new)
            return new

        return await self._write(write)

    # -- watch -----------------------------------------------------------------------------

    def watch(
        self, kind: str | None = None, namespace: str | None = None, since: str = ""
    ) -> AsyncIterator[WatchEvent]:
        """Changes after ``since`` (empty: from now), in revision order, exactly once.

        Raises
        ------
        GoneError
            ``since`` is older than the retained change log, or not a version of this store
            (re-list and watch from the list's version).
        StoreUnavailableError
            The database went away.
        """
        return self._watch(kind, namespace, since)

    async def _watch(
        self, kind: str | None, namespace: str | None, since: str
    ) -> AsyncIterator[WatchEvent]:
        if since:
            cursor = _parse_since(since)
        else:
            cursor = await self._read(_head)
        while not self._closed:
            # Taken before the query: a write committed during it still wakes us afterwards.
            wake = self._wakes.setdefault(kind, asyncio.Event())
            try:
                rows, cursor, more = await self._read(
                    functools.partial(
                        self._changes_after, after=cursor, kind=kind, namespace=namespace
                    )
                )
            except StoreUnavailableError:
                if self._closed:
                    return
                raise
            for row in rows:
                if self._closed:
                    return
                snapshot = object_from_dict(parse_json(row.object))
                yield WatchEvent(WatchEventType(row.type), snapshot, str(row.revision))
            if more:
                continue
            try:
                async with asyncio.timeout(self._poll_interval):
                    await wake.wait()
            except TimeoutError:
                pass

    def _changes_after(
        self, conn: Connection, *, after: int, kind: str | None, namespace: str | None
    ) -> tuple[builtins.list[Any], int, bool]:
        head = _head(conn)
        oldest = (conn.execute(select(func.min(CHANGES.c.revision)))).scalar()
        if after < head and (oldest is None or after < int(oldest) - 1):
            raise GoneError(
                f"resourceVersion {after} is too old: the change log starts after revision "
                f"{int(oldest) - 1 if oldest is not None else head}; re-list and watch from the "
                "list's resourceVersion"
            )
        query = select(CHANGES).where(CHANGES.c.revision > after)
        if kind is not None:
            query = query.where(CHANGES.c.kind == kind)
        if namespace is not None:
            query = query.where(CHANGES.c.namespace == namespace)
        rows = list(conn.execute(query.order_by(CHANGES.c.revision).limit(_WATCH_BATCH)))
        if len(rows) == _WATCH_BATCH:
            return rows, int(rows[-1].revision), True
        # Every revision up to ``head`` is committed in this snapshot: skip past them all.
        return rows, max(after, head), False

    # -- internals -------------------------------------------------------------------------

    def _require_engine(self) -> Engine:
        if self._engine is None:
            state = "closed" if self._closed else "not started (call start() first)"
            raise StoreUnavailableError(f"{self!r} is {state}")
        return self._engine

    def _notify(self, kind: str | None = None) -> None:
        """Wake the watches of ``kind`` and of every kind (all of them when ``kind`` is None)."""
        targets = list(self._wakes) if kind is None else [kind, None]
        for target in targets:
            wake = self._wakes.pop(target, None)
            if wake is not None:
                wake.set()

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one read transaction (one snapshot), on a worker thread."""
        engine = self._require_engine()
        return await self._in_thread(self._read_transaction, engine, fn)

    def _read_transaction(self, engine: Engine, fn: Callable[[Connection], T]) -> T:
        try:
            with engine.connect() as conn:
                if not self._sqlite:
                    conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    return fn(conn)
        except _CONNECTION_ERRORS as exc:
            raise unavailable_error(self._url, exc) from None
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise unavailable_error(self._url, exc) from None
            raise

    async def _write(
        self, fn: Callable[[Connection, int, datetime], ResourceObject]
    ) -> ResourceObject:
        """Run ``fn(conn, revision, now)`` in a write transaction that takes a new revision."""
        engine = self._require_engine()
        lock: AbstractAsyncContextManager[Any] = self._write_lock if self._sqlite else nullcontext()
        loop = asyncio.get_running_loop()
        async with lock:
            return await self._in_thread(self._write_transaction, engine, fn, loop)

    def _write_transaction(
        self,
        engine: Engine,
        fn: Callable[[Connection, int, datetime], ResourceObject],
        loop: asyncio.AbstractEventLoop,
    ) -> ResourceObject:
        try:
            with engine.connect() as conn:
                if self._sqlite:
                    conn.execution_options(**{IMMEDIATE: True})
                with conn.begin():
                    bumped = conn.execute(
                        update(REVISION)
                        .where(REVISION.c.id == COUNTER_ROW_ID)
                        .values(value=REVISION.c.value + 1)
                        .returning(REVISION.c.value)
                    )
                    result = fn(conn, int(bumped.scalar_one()), datetime.now(UTC))
        except _UnchangedError as unchanged:
            return unchanged.obj
        except _CONNECTION_ERRORS as exc:
            raise unavailable_error(self._url, exc) from None
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise unavailable_error(self._url, exc) from None
            raise
        # From here, not from the awaiting coroutine: a caller cancelled while the transaction
        # ran must not leave its committed change unannounced to the watches.
        loop.call_soon_threadsafe(self._notify, result.kind)
        return result

    def _current(self, conn: Connection, obj: ResourceObject) -> ResourceObject:
        row = _select_row(conn, obj.kind, obj.namespace, obj.name)
        if row is None:
            raise NotFoundError(obj.key)
        current = object_from_row(row)
        _check_version(obj.key, obj.resource_version, current.resource_version)
        return current

    def _delete_row(self, conn: Connection, last: ResourceObject, revision: int) -> None:
        conn.execute(
            delete(OBJECTS).where(
                OBJECTS.c.kind == last.kind,
                OBJECTS.c.namespace == last.namespace,
                OBJECTS.c.name == last.name,
            )
        )
        self._record(conn, revision, WatchEventType.DELETED, last)

    def _record(
        self, conn: Connection, revision: int, kind: WatchEventType, obj: ResourceObject
    ) -> None:
        conn.execute(
            insert(CHANGES).values(
                revision=revision,
                type=kind.value,
                kind=obj.kind,
                namespace=obj.namespace,
                object=canonical_json(obj.to_dict()),
            )
        )
        # Revisions are gap-free, so this keeps exactly the last ``history_limit`` entries.
        conn.execute(delete(CHANGES).where(CHANGES.c.revision <= revision - self._history_limit))


def _head(conn: Connection) -> int:
    value = (
        conn.execute(select(REVISION.c.value).where(REVISION.c.id == COUNTER_ROW_ID))
    ).scalar_one()
    return int(value)


def _select_row(conn: Connection, kind: str, namespace: str, name: str) -> Any:
    result = conn.execute(
        select(OBJECTS).where(
            OBJECTS.c.kind == kind, OBJECTS.c.namespace == namespace, OBJECTS.c.name == name
        )
    )
    return result.first()


def _row_update(obj: ResourceObject) -> Any:
    return update(OBJECTS).where(
        OBJECTS.c.kind == obj.kind,
        OBJECTS.c.namespace == obj.namespace,
        OBJECTS.c.name == obj.name,
    )


def _check_version(key: ObjectKey, expected: str, actual: str) -> None:
    if expected and expected != actual:
        raise ConflictError(key, expected, actual)


def _parse_since(since: str) -> int:
    try:
        value = int(since)
    except ValueError:
        value = -1
    if value < 0 or str(value) != since:
        raise GoneError(
            f"resourceVersion {since!r} is not a version of this store; re-list and watch "
            "from the list's resourceVersion"
        )
    return value
