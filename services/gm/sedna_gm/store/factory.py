"""Open the ResourceStore named by a URL (the GM's ``--store-url``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from sedna_gm.store.port import ResourceStore
from sedna_gm.store.sql import SqlResourceStore

__all__ = ["open_store"]

_SQL_SCHEMES = frozenset(
    {
        "sqlite",
        "sqlite+aiosqlite",
        "postgres",
        "postgresql",
        "postgresql+psycopg",
        "postgresql+psycopg_async",
    }
)


def open_store(url: str) -> ResourceStore:
    """Return an (unstarted) store for ``url``; call ``await store.start()`` next.

    Parameters
    ----------
    url
        ``sqlite:///path/to/sedna.db`` or ``postgresql://user:password@host:port/db``.

    Raises
    ------
    ValueError
        The URL has no scheme or one no adapter handles.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme in _SQL_SCHEMES:
        return SqlResourceStore(url)
    # A ``kubernetes`` scheme (the KubernetesResourceStore) is added here by its owner.
    known = "sqlite://, postgresql://"
    if not scheme:
        raise ValueError(f"store URL {url!r} has no scheme; expected one of {known}")
    raise ValueError(f"store URL scheme {scheme!r} is not supported; expected one of {known}")
