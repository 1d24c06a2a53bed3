"""Which Kubernetes API calls the GlobalManager's code makes, found statically.

The GM talks to the API server through the official client's API classes (``CoreV1Api``,
``AppsV1Api``, ``CustomObjectsApi``...). This module reads ``services/gm/sedna_gm`` with
:mod:`ast` and finds:

1. the API classes the code instantiates (``k8s.CoreV1Api(api_client)``);
2. every reference to one of their request methods (called, or passed on as
   ``self._api.call(..., core.read_namespaced_pod, ...)``);
3. for each, the HTTP request the client makes, read from the client's own generated source
   (``method='GET', resource_path='/api/v1/namespaces/{namespace}/pods/{name}'``), which gives
   the API group, the resource (and subresource) and the RBAC verb.

A ``list`` method referenced in a function that also references a watch (``WatchThread``,
``watch.Watch``) is used to watch as well. Custom-object calls (``{group}``/``{plural}`` in the
path) are the Sedna kinds: the GM's store only serves ``sedna.io``.

So a new client call anywhere in the GM shows up here with no table to maintain, and the chart
test fails until the ClusterRole grants it.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client as k8s_client

__all__ = ["ApiCall", "Triple", "find_calls", "required_triples", "triples_of"]

Triple = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)

_REQUEST = re.compile(r"method='(GET|POST|PUT|PATCH|DELETE)',\s*resource_path='([^']+)'")
_LEGACY_REQUEST = re.compile(r"call_api\(\s*'([^']+)',\s*'(GET|POST|PUT|PATCH|DELETE)'")
_REQUEST_PREFIXES = ("create_", "read_", "replace_", "patch_", "delete_", "list_", "get_")
_NOT_REQUESTS = {"get_api_resources", "get_api_group", "get_api_versions", "get_code"}


@dataclass(frozen=True)
class ApiCall:
    """One reference to a client request method in the GM's source."""

    api_class: str
    method: str
    file: str
    line: int
    watched: bool


@functools.cache
def _api_class(name: str) -> type | None:
    """The client's API class ``name`` (e.g. ``CoreV1Api``), or None.

    The client package loads its classes lazily, each from a large module: only the classes
    the scanned code names are loaded.
    """
    if not name.endswith("Api") or name == "ApiClient" or name not in dir(k8s_client):
        return None
    cls = getattr(k8s_client, name, None)
    return cls if inspect.isclass(cls) else None


def _request_methods(cls: type) -> set[str]:
    return {
        name
        for name in dir(cls)
        if name.startswith(_REQUEST_PREFIXES)
        and not name.endswith("_with_http_info")
        and not name.startswith("_")
        and name not in _NOT_REQUESTS
    }


def _functions(tree: ast.AST) -> Iterable[ast.AST]:
    """Every function and method (each a scope for the watch rule)."""
    yield from (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))


def _names_in(node: ast.AST) -> set[str]:
    found: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            found.add(n.id)
        elif isinstance(n, ast.Attribute):
            found.add(n.attr)
    return found


def find_calls(sources: dict[str, str]) -> list[ApiCall]:
    """The client request methods referenced in ``sources`` (file name -> Python source)."""
    trees = {name: ast.parse(text, filename=name) for name, text in sources.items()}
    names = {n for tree in trees.values() for n in _names_in(tree)}
    classes = {n: cls for n in names if (cls := _api_class(n)) is not None}
    used = sorted(classes)
    methods = {name: _request_methods(cls) for name, cls in classes.items()}
    calls: list[ApiCall] = []
    for name, tree in trees.items():
        scopes = list(_functions(tree)) or [tree]
        seen: set[tuple[int, int]] = set()
        for scope in scopes:
            watched = any("Watch" in n for n in _names_in(scope))
            for node in ast.walk(scope):
                if not isinstance(node, ast.Attribute):
                    continue
                key = (node.lineno, node.col_offset)
                owners = [cls for cls in used if node.attr in methods[cls]]
                if not owners or key in seen:
                    continue
                seen.add(key)
                for cls in owners:
                    calls.append(ApiCall(cls, node.attr, name, node.lineno, watched))
        # Module-level references (outside any function) are never watch code.
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and (node.lineno, node.col_offset) not in seen:
                owners = [cls for cls in used if node.attr in methods[cls]]
                for cls in owners:
                    seen.add((node.lineno, node.col_offset))
                    calls.append(ApiCall(cls, node.attr, name, node.lineno, False))
    return calls


def _request_of(api_class: str, method: str) -> tuple[str, str]:
    """(HTTP method, path template) the client sends for ``api_class.method``."""
    cls = _api_class(api_class)
    assert cls is not None, api_class
    for attr in (f"_{method}_serialize", f"{method}_with_http_info"):
        fn = getattr(cls, attr, None)
        if fn is None:
            continue
        text = inspect.getsource(fn)
        if m := _REQUEST.search(text):
            return m.group(1), m.group(2)
        if m := _LEGACY_REQUEST.search(text):
            return m.group(2), m.group(1)
    raise LookupError(f"cannot find the request of {api_class}.{method} in the client source")


def _triples_of_request(http: str, path: str, plurals: Iterable[str]) -> set[Triple]:
    parts = path.strip("/").split("/")
    if parts[0] == "api":  # /api/v1/...
        group, rest = "", parts[2:]
    else:  # /apis/{group}/{version}/...
        group, rest = parts[1], parts[3:]
    if rest[:2] == ["namespaces", "{namespace}"]:
        rest = rest[2:]
    resource, *tail = rest
    named = bool(tail) and tail[0] == "{name}"
    sub = tail[1] if named and len(tail) > 1 else ""
    verb = {
        "GET": "get" if named else "list",
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if named else "deletecollection",
    }[http]
    groups = ["sedna.io"] if group == "{group}" else [group]
    resources = list(plurals) if resource == "{plural}" else [resource]
    return {(g, f"{r}/{sub}" if sub else r, verb) for g in groups for r in resources}


def triples_of(calls: Iterable[ApiCall], plurals: Iterable[str]) -> dict[Triple, list[ApiCall]]:
    """RBAC triples the calls need, each with the calls that need it."""
    plurals = sorted(plurals)
    needed: dict[Triple, list[ApiCall]] = {}
    for call in calls:
        http, path = _request_of(call.api_class, call.method)
        triples = _triples_of_request(http, path, plurals)
        if call.watched and http == "GET":
            triples |= {(g, r, "watch") for g, r, v in triples if v == "list"}
        for triple in triples:
            needed.setdefault(triple, []).append(call)
    return needed


def required_triples(gm_package: Path, plurals: Iterable[str]) -> dict[Triple, list[ApiCall]]:
    """Every triple the GM package at ``gm_package`` needs."""
    sources = {
        str(p.relative_to(gm_package.parent)): p.read_text()
        for p in sorted(gm_package.rglob("*.py"))
    }
    return triples_of(find_calls(sources), plurals)
