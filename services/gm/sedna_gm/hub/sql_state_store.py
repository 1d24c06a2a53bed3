"""A :class:`~sedna_gm.hub.state_store.HubStateStore` on SQL (SQLite or PostgreSQL).

SQLAlchemy's synchronous engine runs in a worker thread (``asyncio.to_thread``): the asyncio
extension would need greenlet, and one small write per applied report does not need more.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Float,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from sedna_gm.hub.state_store import NodeRecord

__all__ = ["SqlHubStateStore", "engine_url"]

_metadata = MetaData()

nodes_table = Table(
    "sedna_hub_nodes",
    _metadata,
    Column("node_name", String(253), primary_key=True),
    Column("session_id", String(64), nullable=False),
    Column("last_applied_report_seq", BigInteger, nullable=False),
    Column("updated_at", Float, nullable=False),
)


def engine_url(url: str) -> str:
    """Map a plain database URL to the driver the project ships.

    Parameters
    ----------
    url
        ``sqlite:///PATH``, ``sqlite://`` (memory), ``postgresql://...`` or an URL that already
        names a driver (``postgresql+psycopg://``).

    Returns
    -------
    str
        The URL for :func:`sqlalchemy.create_engine`.

    Raises
    ------
    ValueError
        The scheme is neither SQLite nor PostgreSQL.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"hub state store url {url!r} must look like sqlite:///PATH")
    base = scheme.split("+", 1)[0]
    if base == "sqlite":
        return url
    if base in ("postgresql", "postgres"):
        return url if "+" in scheme else f"postgresql+psycopg://{rest}"
    raise ValueError(
        f"hub state store url {url!r}: unsupported scheme {scheme!r} (use sqlite or postgresql)"
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Same durability as the GM's resource store on SQLite (WAL, NORMAL): a GM crash loses
    # nothing; an OS crash may lose the last positions, and the node then resends reports
    # that the idempotent handlers apply again. FULL would fsync on every applied report.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
    finally:
        cursor.close()


class SqlHubStateStore:
    """Node records in the table ``sedna_hub_nodes``.

    Parameters
    ----------
    url
        Database URL (see :func:`engine_url`).
    """

    def __init__(self, url: str) -> None:
        self._engine: Engine = create_engine(engine_url(url))
        self._dialect = self._engine.dialect.name
        self._ready = False
        if self._dialect == "sqlite":
            event.listen(self._engine, "connect", _sqlite_pragmas)

    def _ensure_schema(self) -> None:
        if not self._ready:
            _metadata.create_all(self._engine)
            self._ready = True

    def _load_all(self) -> list[NodeRecord]:
        self._ensure_schema()
        with self._engine.connect() as conn:
            rows = conn.execute(select(nodes_table).order_by(nodes_table.c.node_name))
            return [
                NodeRecord(row.node_name, row.session_id, int(row.last_applied_report_seq))
                for row in rows
            ]

    def _save(self, record: NodeRecord) -> None:
        self._ensure_schema()
        values = {
            "node_name": record.node_name,
            "session_id": record.session_id,
            "last_applied_report_seq": record.last_applied_report_seq,
            "updated_at": time.time(),
        }
        insert = pg_insert if self._dialect == "postgresql" else sqlite_insert
        stmt = insert(nodes_table).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[nodes_table.c.node_name],
            set_={key: stmt.excluded[key] for key in values if key != "node_name"},
        )
        with self._engine.begin() as conn:
            conn.execute(stmt)

    async def load_all(self) -> Sequence[NodeRecord]:
        """Every node record.

        Returns
        -------
        Sequence[NodeRecord]
            Records ordered by node name.
        """
        return await asyncio.to_thread(self._load_all)

    async def save(self, record: NodeRecord) -> None:
        """Insert or replace the record of ``record.node_name`` (committed on return).

        Parameters
        ----------
        record
            The new record.
        """
        await asyncio.to_thread(self._save, record)

    async def close(self) -> None:
        """Dispose of the connection pool."""
        await asyncio.to_thread(self._engine.dispose)
