"""Database URLs, engines and error translation for the SQL ResourceStore.

The engine is SQLAlchemy's synchronous one (pysqlite, psycopg), driven from worker threads one
whole transaction at a time: the asyncio extension hands every DBAPI call (cursor, execute,
fetch, close, commit) to the driver's thread and back, about 30 thread switches per status
write, which held the store to 50-70 writes/s on a 2-core machine.

SQLite runs in WAL mode with a busy timeout, and SQLAlchemy's own transaction handling of
pysqlite is replaced by explicit ``BEGIN`` statements (as the SQLAlchemy docs advise) so that a
read transaction is one snapshot and a write transaction takes the write lock up front
(``BEGIN IMMEDIATE``): a deferred transaction that upgrades to a write can fail at once with
"database is locked" instead of waiting.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import create_engine as sqlalchemy_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from sedna_gm.store.errors import StoreUnavailableError

__all__ = [
    "IMMEDIATE",
    "create_engine",
    "describe_url",
    "is_sqlite",
    "normalize_url",
    "unavailable_error",
]

# Execution option asking the SQLite ``begin`` hook for ``BEGIN IMMEDIATE``.
IMMEDIATE = "sedna_begin_immediate"

_SQLITE_BUSY_TIMEOUT_MS = 15_000
_PG_CONNECT_TIMEOUT_S = 5

_DRIVERS = {
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
    "sqlite+aiosqlite": "sqlite",  # accepted as before; run on the synchronous driver
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "postgresql+psycopg_async": "postgresql+psycopg",
}


def normalize_url(url: str) -> URL:
    """Map a store URL to the driver SQLAlchemy uses (pysqlite or psycopg).

    Parameters
    ----------
    url
        ``sqlite:///path``, ``sqlite+aiosqlite:///path``, ``postgresql://user@host/db`` or
        ``postgresql+psycopg://...``.

    Raises
    ------
    ValueError
        The URL cannot be parsed or names another database.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"store URL {url!r} cannot be parsed: {exc}") from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(
            f"store URL scheme {parsed.drivername!r} is not supported by the SQL store "
            "(use sqlite:///path or postgresql://user@host/db)"
        )
    return parsed.set(drivername=driver)


def is_sqlite(url: URL) -> bool:
    """Whether ``url`` is a SQLite database."""
    return url.get_backend_name() == "sqlite"


def describe_url(url: URL) -> str:
    """The URL with its password masked, for messages and logs."""
    return url.render_as_string(hide_password=True)


def create_engine(url: URL, *, pool_size: int) -> Engine:
    """Create the engine, with SQLite set up for WAL and explicit transactions.

    ``pool_size`` connections are kept (one per worker thread of the store).
    """
    if not is_sqlite(url):
        return sqlalchemy_engine(
            url,
            pool_pre_ping=True,
            pool_size=pool_size,
            connect_args={"connect_timeout": _PG_CONNECT_TIMEOUT_S},
        )
    memory = url.database in (None, "", ":memory:")
    # Connections move between the store's worker threads (one transaction at a time each).
    connect_args: dict[str, Any] = {"timeout": 30, "check_same_thread": False}
    kwargs: dict[str, Any] = (
        {"poolclass": StaticPool} if memory else {"pool_size": pool_size, "max_overflow": 0}
    )
    engine = sqlalchemy_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver level: transactions are begun by the hook below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get(IMMEDIATE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def unavailable_error(url: URL, exc: BaseException) -> StoreUnavailableError:
    """A :class:`StoreUnavailableError` naming the database, never its password."""
    cause = getattr(exc, "orig", None) or exc
    detail = " ".join(str(cause).split()) or type(cause).__name__
    if url.password:
        detail = detail.replace(str(url.password), "***")
    return StoreUnavailableError(f"database {describe_url(url)} is unavailable: {detail}")
