"""The LocalController's durable state in one SQLite file.

SQLite runs in WAL mode with ``synchronous=FULL``: the link acknowledges an event to the GM
only after its commit, and ``submit`` of a report returns only after its commit, so a commit
must survive a power loss too (NORMAL may lose the last transactions on power failure, which
would turn into a lost report or an event acked but not applied).

SQLAlchemy's synchronous engine runs on one dedicated worker thread, which also serialises
every access (the asyncio extension would need greenlet).

Objects are stored as the JSON form of their wire message (lossless: metadata and status
included). Credentials of resources are stored (the node needs them after a restart without the GM)
but never logged.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf import json_format
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    select,
    tuple_,
)
from sqlalchemy.dialects.sqlite import insert

from sedna.api.common.v1 import resource_pb2
from sedna.resources.objects import ObjectKey, ResourceObject
from sedna.resources.wire import resource_from_proto, resource_to_proto

__all__ = ["LinkPosition", "LocalState", "StoredResource"]

_T = TypeVar("_T")

_metadata = MetaData()

meta_table = Table(
    "lc_meta",
    _metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
resources_table = Table(
    "lc_resources",
    _metadata,
    Column("kind", String(64), primary_key=True),
    Column("namespace", String(253), primary_key=True),
    Column("name", String(253), primary_key=True),
    Column("object_json", Text, nullable=False),
    Column("credentials_json", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)
outbox_table = Table(
    "lc_outbox",
    _metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("report", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
)

_SESSION = "session_id"
_EVENT_SEQ = "last_applied_event_seq"
_REPORT_SEQ = "last_report_seq"


@dataclass(frozen=True)
class LinkPosition:
    """Where the GM link stands: the GM session and the last event applied in it."""

    session_id: str
    last_applied_event_seq: int


@dataclass(frozen=True)
class StoredResource:
    """An object the node holds, with its credentials (secret: never log them)."""

    obj: ResourceObject
    credentials: Mapping[str, str] = field(repr=False)


def _set_meta(key: str, value: str | int) -> Any:
    stmt = insert(meta_table).values(key=key, value=str(value))
    return stmt.on_conflict_do_update(index_elements=["key"], set_={"value": str(value)})


class LocalState:
    """The LC's SQLite database (call :meth:`open` first, :meth:`close` at the end).

    Parameters
    ----------
    path
        Database file; its directory is created when missing.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._engine: Engine | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def _run(self, fn: Callable[[Engine], _T]) -> _T:
        engine, executor = self._engine, self._executor
        if engine is None or executor is None:
            raise RuntimeError(f"LocalState({str(self.path)!r}) is not open: call open() first")
        return await asyncio.get_running_loop().run_in_executor(executor, fn, engine)

    async def open(self) -> None:
        """Create the file and tables, switch on WAL and full fsync."""
        if self._engine is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(f"sqlite:///{self.path}", connect_args={"check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()

        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lc-state")
        self._engine = engine
        await self._run(_metadata.create_all)

    async def close(self) -> None:
        """Close the connections and the worker thread."""
        if self._engine is not None and self._executor is not None:
            await self._run(lambda engine: engine.dispose())
            self._executor.shutdown(wait=True)
        self._engine = None
        self._executor = None

    async def __aenter__(self) -> LocalState:
        await self.open()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # -- meta ----------------------------------------------------------------------------

    @staticmethod
    def _meta(conn: Connection) -> dict[str, str]:
        rows = conn.execute(select(meta_table.c.key, meta_table.c.value))
        return {row.key: row.value for row in rows}

    async def link_position(self) -> LinkPosition:
        """The stored GM session and last applied event seq (empty/0 on a fresh node)."""

        def read(engine: Engine) -> LinkPosition:
            with engine.connect() as conn:
                meta = self._meta(conn)
            return LinkPosition(meta.get(_SESSION, ""), int(meta.get(_EVENT_SEQ, "0")))

        return await self._run(read)

    async def start_session(self, session_id: str, last_applied_event_seq: int) -> None:
        """Record the GM session and the last applied event seq (0 for a full resync)."""

        def write(engine: Engine) -> None:
            with engine.begin() as conn:
                conn.execute(_set_meta(_SESSION, session_id))
                conn.execute(_set_meta(_EVENT_SEQ, last_applied_event_seq))

        await self._run(write)

    # -- resources -----------------------------------------------------------------------

    async def record_upsert(
        self, seq: int, obj: ResourceObject, credentials: Mapping[str, str]
    ) -> None:
        """Store ``obj`` and mark event ``seq`` applied, in one transaction."""
        values = {
            "kind": obj.kind,
            "namespace": obj.namespace,
            "name": obj.name,
            "object_json": json_format.MessageToJson(resource_to_proto(obj), sort_keys=True),
            "credentials_json": json.dumps(dict(credentials), sort_keys=True),
            "updated_at": time.time(),
        }
        stmt = insert(resources_table).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["kind", "namespace", "name"],
            set_={k: stmt.excluded[k] for k in ("object_json", "credentials_json", "updated_at")},
        )

        def write(engine: Engine) -> None:
            with engine.begin() as conn:
                conn.execute(stmt)
                conn.execute(_set_meta(_EVENT_SEQ, seq))

        await self._run(write)

    async def record_remove(self, seq: int, key: ObjectKey) -> None:
        """Forget ``key`` and mark event ``seq`` applied, in one transaction."""

        def write(engine: Engine) -> None:
            with engine.begin() as conn:
                conn.execute(
                    delete(resources_table).where(
                        resources_table.c.kind == key.kind,
                        resources_table.c.namespace == key.namespace,
                        resources_table.c.name == key.name,
                    )
                )
                conn.execute(_set_meta(_EVENT_SEQ, seq))

        await self._run(write)

    async def record_resync(self, seq: int, keys: Sequence[ObjectKey]) -> None:
        """Keep only ``keys`` and mark event ``seq`` applied, in one transaction."""
        wanted = {(k.kind, k.namespace, k.name) for k in keys}
        cols = (resources_table.c.kind, resources_table.c.namespace, resources_table.c.name)

        def write(engine: Engine) -> None:
            with engine.begin() as conn:
                stale = [tuple(row) for row in conn.execute(select(*cols))]
                stale = [row for row in stale if row not in wanted]
                for start in range(0, len(stale), 300):
                    conn.execute(
                        delete(resources_table).where(tuple_(*cols).in_(stale[start : start + 300]))
                    )
                conn.execute(_set_meta(_EVENT_SEQ, seq))

        await self._run(write)

    async def resources(self) -> list[StoredResource]:
        """Every object the node holds, with its credentials."""

        def read(engine: Engine) -> list[StoredResource]:
            with engine.connect() as conn:
                rows = conn.execute(
                    select(resources_table.c.object_json, resources_table.c.credentials_json)
                )
                return [
                    StoredResource(
                        resource_from_proto(
                            json_format.Parse(row.object_json, resource_pb2.Resource())
                        ),
                        json.loads(row.credentials_json),
                    )
                    for row in rows
                ]

        return await self._run(read)

    # -- outbox --------------------------------------------------------------------------

    async def outbox_append(self, payload: Callable[[int], bytes]) -> int:
        """Assign the next report seq, store ``payload(seq)`` under it, return the seq.

        Callers serialise appends (see :class:`~sedna_lc.state.outbox.Outbox`).
        """

        def write(engine: Engine) -> int:
            with engine.begin() as conn:
                seq = int(self._meta(conn).get(_REPORT_SEQ, "0")) + 1
                conn.execute(
                    insert(outbox_table).values(
                        seq=seq, report=payload(seq), created_at=time.time()
                    )
                )
                conn.execute(_set_meta(_REPORT_SEQ, seq))
            return seq

        return await self._run(write)

    async def last_report_seq(self) -> int:
        """The highest report seq ever assigned."""

        def read(engine: Engine) -> int:
            with engine.connect() as conn:
                return int(self._meta(conn).get(_REPORT_SEQ, "0"))

        return await self._run(read)

    async def outbox_delete_upto(self, seq: int) -> int:
        """Delete outbox entries with seq <= ``seq``; the number of entries left."""

        def write(engine: Engine) -> int:
            with engine.begin() as conn:
                conn.execute(delete(outbox_table).where(outbox_table.c.seq <= seq))
                count = conn.execute(select(func.count()).select_from(outbox_table))
                return int(count.scalar_one())

        return await self._run(write)

    async def outbox_after(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` entries with seq > ``seq``, in order."""

        def read(engine: Engine) -> list[tuple[int, bytes]]:
            with engine.connect() as conn:
                rows = conn.execute(
                    select(outbox_table.c.seq, outbox_table.c.report)
                    .where(outbox_table.c.seq > seq)
                    .order_by(outbox_table.c.seq)
                    .limit(limit)
                )
                return [(int(row.seq), bytes(row.report)) for row in rows]

        return await self._run(read)

    async def outbox_count(self) -> int:
        """Entries not yet acknowledged."""

        def read(engine: Engine) -> int:
            with engine.connect() as conn:
                count = conn.execute(select(func.count()).select_from(outbox_table))
                return int(count.scalar_one())

        return await self._run(read)

    async def outbox_rebase(self, after: int, renumber: Callable[[bytes, int], bytes]) -> None:
        """Renumber every entry to ``after + 1, after + 2, ...`` (the GM knows higher seqs).

        ``renumber(data, seq)`` returns the entry's bytes carrying the new seq.
        """

        def write(engine: Engine) -> None:
            with engine.begin() as conn:
                rows = list(
                    conn.execute(
                        select(outbox_table.c.seq, outbox_table.c.report).order_by(
                            outbox_table.c.seq
                        )
                    )
                )
                conn.execute(delete(outbox_table))
                seq = after
                for row in rows:
                    seq += 1
                    conn.execute(
                        insert(outbox_table).values(
                            seq=seq, report=renumber(bytes(row.report), seq), created_at=time.time()
                        )
                    )
                conn.execute(_set_meta(_REPORT_SEQ, seq))

        await self._run(write)
