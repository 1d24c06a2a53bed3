"""Request helpers shared by the resource API: kind names, namespaces and list pages."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sedna.resources._meta import ResourceKind
from sedna.resources.objects import DEFAULT_NAMESPACE, ResourceObject
from sedna.resources.registry import UnknownKindError, all_kinds, get_kind
from sedna_gm.api.errors import RequestError

__all__ = [
    "ListPage",
    "PageCursor",
    "decode_page_token",
    "encode_page_token",
    "require_name",
    "resolve_kind",
    "resolve_namespace",
    "valid_kinds_text",
]

_TOKEN_VERSION = 1


def valid_kinds_text() -> str:
    """Return ``Dataset (ds), Model (m), ...``: every kind with its short names."""
    parts = []
    for info in all_kinds():
        short = f" ({', '.join(info.short_names)})" if info.short_names else ""
        parts.append(f"{info.kind}{short}")
    return ", ".join(parts)


def resolve_kind(name: str, field: str = "kind") -> ResourceKind:
    """Look a kind up by kind, plural, singular or short name.

    Parameters
    ----------
    name
        What the client sent, e.g. ``ji`` or ``jointinferenceservices``.
    field
        Request field to name in the error.

    Returns
    -------
    ResourceKind
        The kind.

    Raises
    ------
    RequestError
        ``name`` is empty or matches no kind; the message lists the valid kinds.
    """
    if not name.strip():
        raise RequestError.for_field(field, f"Required value: one of {valid_kinds_text()}")
    try:
        return get_kind(name)
    except UnknownKindError as exc:
        raise RequestError.for_field(field, f"{exc}; valid kinds: {valid_kinds_text()}") from None


def resolve_namespace(namespace: str) -> str:
    """Return ``namespace``, or ``default`` when empty (as kubectl does for named objects)."""
    return namespace or DEFAULT_NAMESPACE


def require_name(name: str) -> str:
    """Return ``name``, raising :class:`RequestError` when it is empty."""
    if not name:
        raise RequestError.for_field("name", "Required value")
    return name


@dataclass(frozen=True)
class ListPage:
    """One page of a list.

    Attributes
    ----------
    items
        Objects, sorted by namespace then name.
    resource_version
        The store version of the first page of this listing: watching from it delivers
        every change made after the listing started (objects on later pages may already
        show some of them, so a watcher can see a change it has; applying events as state
        is idempotent).
    next_page_token
        Opaque token for the next page; empty on the last page.
    """

    items: list[ResourceObject]
    resource_version: str
    next_page_token: str


@dataclass(frozen=True)
class PageCursor:
    """What a page token carries: the query it belongs to and where the last page ended."""

    kind: str
    namespace: str
    selector: tuple[tuple[str, str], ...]
    after: tuple[str, str]
    resource_version: str


def encode_page_token(cursor: PageCursor) -> str:
    """Encode a cursor as an opaque URL-safe token."""
    data: dict[str, Any] = {
        "v": _TOKEN_VERSION,
        "k": cursor.kind,
        "n": cursor.namespace,
        "s": [list(pair) for pair in cursor.selector],
        "a": list(cursor.after),
        "r": cursor.resource_version,
    }
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(
    token: str, kind: str, namespace: str, selector: Mapping[str, str]
) -> PageCursor:
    """Decode a token and check it belongs to the same query.

    Raises
    ------
    RequestError
        The token is malformed or was issued for another kind, namespace or selector.
    """
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("v") != _TOKEN_VERSION:
            raise ValueError("unknown token version")
        cursor = PageCursor(
            kind=str(data["k"]),
            namespace=str(data["n"]),
            selector=tuple((str(k), str(v)) for k, v in data["s"]),
            after=(str(data["a"][0]), str(data["a"][1])),
            resource_version=str(data["r"]),
        )
    except (binascii.Error, UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError):
        raise RequestError.for_field(
            "page_token", "not a token returned by this server's List"
        ) from None
    if (cursor.kind, cursor.namespace, cursor.selector) != (
        kind,
        namespace,
        tuple(sorted(selector.items())),
    ):
        raise RequestError.for_field(
            "page_token", "was issued for another kind, namespace or label selector"
        )
    return cursor
