"""Translation of Kubernetes API failures into the store's errors.

The API server answers failures with a ``Status`` object (``reason``, ``message``,
``details.causes[].field``); the client raises :class:`kubernetes.client.ApiException` carrying
it, or a urllib3/socket error when the server cannot be reached. Messages built here quote the
server's ``message`` and the server address only: never request headers, so never a token.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from kubernetes.client.exceptions import ApiException

from sedna.resources.objects import ObjectKey
from sedna_gm.store.errors import (
    AlreadyExistsError,
    ConflictError,
    GoneError,
    InvalidObjectError,
    NotFoundError,
    StoreError,
    StoreUnavailableError,
)

__all__ = [
    "CRD_FIX_HINT",
    "api_status",
    "describe_connection_error",
    "is_conflict",
    "map_api_exception",
    "safe_host",
]

CRD_FIX_HINT = "install them with `kubectl apply -f crds/`"


def safe_host(host: str) -> str:
    """Return the API server address without any ``user:password@`` part."""
    parts = urllib.parse.urlsplit(host)
    if parts.hostname is None:
        return host
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def api_status(exc: ApiException) -> dict[str, Any]:
    """Return the decoded ``Status`` body of ``exc`` (empty when it has none)."""
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if not isinstance(body, str) or not body:
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def is_conflict(exc: ApiException) -> bool:
    """Whether ``exc`` is a 409 for a stale write (not an ``AlreadyExists``)."""
    return exc.status == 409 and api_status(exc).get("reason") != "AlreadyExists"


def _message(exc: ApiException, status: dict[str, Any]) -> str:
    message = status.get("message")
    if isinstance(message, str) and message:
        return message
    return f"HTTP {exc.status} {exc.reason or ''}".strip()


def _invalid(status: dict[str, Any], message: str) -> InvalidObjectError:
    details = status.get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    causes = [c for c in causes or [] if isinstance(c, dict)]
    if not causes:
        return InvalidObjectError(message)
    first = causes[0]
    field = str(first.get("field") or "")
    text = str(first.get("message") or message)
    others = [str(c.get("field") or "?") for c in causes[1:]]
    if others:
        text += f" (and {len(others)} more: {', '.join(others)})"
    return InvalidObjectError(text, field=field)


def map_api_exception(
    exc: ApiException,
    key: ObjectKey,
    *,
    host: str,
    collection: bool = False,
    expected_version: str = "",
) -> StoreError:
    """Map one failed API call to the store error with Kubernetes semantics.

    Parameters
    ----------
    exc
        What the client raised.
    key
        The object (or, for collection calls, the kind and namespace) the call was about.
    host
        API server address, for messages.
    collection
        True for list/watch/create, where a 404 means the resource type itself is not served
        (the CRD is missing) rather than a missing object; a create in a namespace that does
        not exist (404 ``namespaces "x" not found``) is an :class:`InvalidObjectError` on
        ``metadata.namespace``.
    expected_version
        The ``resourceVersion`` the write carried, for :class:`ConflictError`.

    Returns
    -------
    StoreError
        The error to raise; the caller fills ``ConflictError.actual`` when it can.
    """
    status = api_status(exc)
    message = _message(exc, status)
    code = exc.status or 0
    if code == 0:
        return StoreUnavailableError(
            f"Kubernetes API server {safe_host(host)} failed: {exc.reason or 'no response'}"
        )
    if code == 404:
        details = status.get("details")
        if collection and isinstance(details, dict) and details.get("kind") == "namespaces":
            namespace = str(details.get("name") or key.namespace)
            return InvalidObjectError(
                f'namespace "{namespace}" does not exist in the cluster at {safe_host(host)}; '
                f"create it first (kubectl create namespace {namespace})",
                field="metadata.namespace",
            )
        if collection:
            return StoreUnavailableError(
                f"the API server {safe_host(host)} does not serve {key.kind} "
                f"(the Sedna CRDs are probably not installed; {CRD_FIX_HINT}): {message}"
            )
        return NotFoundError(key)
    if code == 409:
        if status.get("reason") == "AlreadyExists":
            return AlreadyExistsError(key)
        return ConflictError(key, expected_version, "")
    if code == 410:
        return GoneError(f"watch of {key.kind}: {message}; re-list and watch again")
    if code == 422:
        return _invalid(status, message)
    if code == 400:
        return InvalidObjectError(message)
    if code == 401:
        return StoreError(
            f"the API server {safe_host(host)} rejected the credentials (401 Unauthorized); "
            "check the kubeconfig or service account token"
        )
    if code == 403:
        return StoreError(
            f"forbidden by the API server {safe_host(host)} (403): {message}; "
            "grant the GlobalManager's service account access to the sedna.io resources"
        )
    if code == 429 or code >= 500:
        return StoreUnavailableError(
            f"Kubernetes API server {safe_host(host)} unavailable (HTTP {code}): {message}"
        )
    return StoreError(f"Kubernetes API server {safe_host(host)}: HTTP {code}: {message}")


def describe_connection_error(exc: BaseException) -> str:
    """Return a short cause for a transport failure (innermost OS error when there is one)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        reason = getattr(current, "reason", None)
        nxt = reason if isinstance(reason, BaseException) else None
        current = nxt or current.__cause__ or current.__context__
    return type(exc).__name__
