"""A Kubernetes API server emulator on loopback, for tests through the official client.

Built on ``kmock`` (``KubernetesEmulator``), which provides natively: the aiohttp server on
127.0.0.1, parsing of Kubernetes URLs into resource/namespace/name/subresource/action, API
discovery (``/api``, ``/apis``, group and version documents from ``emulator.resources``),
``Status`` error bodies, an in-memory object store with per-object history
(``emulator.objects``), the request log (``emulator.requests``) and scriptable reactions
(``emulator['put', kmock.resource(...)] << (422, {...})``) that take precedence over the
built-in behaviour.

kmock's own object semantics are merge-only (PATCH merges, POST stores as given, no versions),
so :class:`ApiServerEmulator` replaces its default handlers with the behaviour of a real API
server that clients depend on:

- ``metadata.uid``, ``creationTimestamp``, ``generation`` (bumped when anything but metadata
  and status changes) and a global, increasing ``resourceVersion`` (one "etcd revision");
- PUT replace with optimistic concurrency: a missing ``resourceVersion`` is 422 (as for custom
  resources), a stale one 409 ``Conflict``; a ``metadata.uid`` that differs is 409 too;
- the ``status`` subresource when the resource declares it (PUT ``/status`` writes status only;
  PUT on the object keeps the stored status);
- DELETE honouring finalizers (sets ``deletionTimestamp`` and bumps ``generation``, as the
  registry's ``markAsDeleting`` does; the object goes once an update removes the last finalizer,
  in one revision whose DELETED event carries the last stored state), ``preconditions``
  (``resourceVersion``, ``uid``: 409), repeat delete a no-op; an update adding a finalizer to
  an object being deleted is 422 ``metadata.finalizers: Forbidden``;
- 409 ``AlreadyExists``, 404 ``NotFound`` with real ``Status`` reasons, and 422 ``Invalid``
  with ``details.causes[].field`` for names that are not DNS-1123 subdomains;
- ``labelSelector`` (``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``) on list and watch;
- watch from ``resourceVersion`` (replay of the event log, then live), "0"/empty = synthetic
  ADDED of the current objects, ``timeoutSeconds`` (the stream ends), BOOKMARK at the end when
  ``allowWatchBookmarks``, and 410 ``Expired`` ERROR events for versions older than the kept
  log (:meth:`ApiServerEmulator.compact` forgets the log, like etcd compaction;
  :meth:`ApiServerEmulator.end_watches` ends the open streams without a bookmark, like an API
  server restart);
- CustomResourceDefinitions: creating one (POST or :meth:`ApiServerEmulator.install_crd`)
  makes its resource served, as on a real cluster;
- namespaces, when the emulator is given a set (``emulated_api_server(namespaces=...)``,
  :meth:`ApiServerEmulator.set_namespaces`): creating an object in another namespace is 404
  ``namespaces "x" not found``, as the NamespaceLifecycle admission plugin answers. Without a
  set every namespace is taken to exist (kmock's behaviour).

Not emulated: OpenAPI schema validation of custom resources, admission other than the
namespace check, Namespace objects over HTTP, field managers,
server-side apply, strategic-merge patch (PATCH keeps kmock's JSON-merge behaviour plus a
version bump), garbage collection of dependents, pagination (``limit`` is ignored).

Use :func:`emulated_api_server` (async context manager). The Kubernetes client is synchronous
and the emulator runs on the test's event loop: call the client only from worker threads
(``asyncio.to_thread``), never directly on the loop, or both block.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import re
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import attrs
import kmock
import yaml
from kubernetes import client as k8s_client

__all__ = ["ApiServerEmulator", "EmulatedCluster", "emulated_api_server", "write_kubeconfig"]

CRD_RESOURCE = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _now() -> str:
    return (
        datetime.datetime.now(tz=datetime.UTC)
        .replace(microsecond=0)
        .isoformat()
        .replace("+00:00", "Z")
    )


def _status_error(code: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=code, reason=reason, message=message, details=details)


def _parse_selector(text: str) -> list[tuple[str, str, str]]:
    """``a=b,c!=d,e,!f`` -> [(op, key, value)]; set-based forms are refused with 400."""
    terms: list[tuple[str, str, str]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if m := re.fullmatch(r"([\w./-]+)\s*(==|=|!=)\s*([\w.-]*)", part):
            key, op, value = m.groups()
            terms.append(("!=" if op == "!=" else "=", key, value))
        elif m := re.fullmatch(r"!([\w./-]+)", part):
            terms.append(("!", m.group(1), ""))
        elif re.fullmatch(r"[\w./-]+", part):
            terms.append(("exists", part, ""))
        else:
            raise _status_error(400, "BadRequest", f"unable to parse requirement: {part!r}")
    return terms


def _selected(obj: dict[str, Any], terms: list[tuple[str, str, str]]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for op, key, value in terms:
        ok = {
            "=": labels.get(key) == value,
            "!=": labels.get(key) != value,
            "exists": key in labels,
            "!": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _check_no_new_finalizers(
    data: dict[str, Any], name: str, old_meta: dict[str, Any], new_meta: dict[str, Any]
) -> None:
    """422 when an update adds finalizers to an object being deleted (ObjectMeta validation)."""
    if not old_meta.get("deletionTimestamp"):
        return
    old = old_meta.get("finalizers") or []
    added = [f for f in new_meta.get("finalizers") or [] if f not in old]
    if not added:
        return
    quoted = ", ".join(f'"{f}"' for f in added)
    message = (
        "Forbidden: no new finalizers can be added if the object is being deleted, "
        f"found new finalizers []string{{{quoted}}}"
    )
    kind = data.get("kind", "")
    raise _status_error(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: metadata.finalizers: {message}',
        name=name,
        kind=kind,
        causes=[
            {"reason": "FieldValueForbidden", "field": "metadata.finalizers", "message": message}
        ],
    )


@dataclass
class _Event:
    revision: int
    resource: kmock.resource
    type: str
    object: dict[str, Any]


@attrs.define(kw_only=True)
class ApiServerEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with the API-server semantics listed in the module docstring."""

    _revision: int = attrs.field(default=0, init=False)
    _log: list[_Event] = attrs.field(factory=list, init=False)
    _oldest: int = attrs.field(default=0, init=False)  # versions below this are "too old"
    _changed: asyncio.Condition = attrs.field(factory=asyncio.Condition, init=False)
    _status_resources: set[kmock.resource] = attrs.field(factory=set, init=False)
    _namespaces: set[str] | None = attrs.field(default=None, init=False)  # None: all exist
    _watch_epoch: int = attrs.field(default=0, init=False)  # end_watches() increments it

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # kmock guesses no action for PUT (replace): serve it too, for resources only.
        self.fallback[kmock.method.PUT] << self._serve_replace
        self.resources[CRD_RESOURCE] = kmock.ResourceInfo(
            kind="CustomResourceDefinition",
            singular="customresourcedefinition",
            namespaced=False,
            verbs={"create", "delete", "get", "list", "update", "watch"},
        )

    @property
    def revision(self) -> int:
        """The current global resourceVersion."""
        return self._revision

    async def _handle(self, request: kmock.Request) -> Any:
        # Skip KubernetesEmulator._handle: its merge-only bookkeeping would run before (and
        # regardless of) scripted reactions. Our state changes live in the fallback handlers,
        # so a scripted reaction (say, a 422) fully replaces the server's behaviour.
        return await kmock.RawHandler._handle(self, request)

    # ------------------------------------------------------------ test helpers

    def install_crd(self, manifest: dict[str, Any]) -> None:
        """Store a CRD (as ``kubectl apply`` would) and serve its resource."""
        name = manifest["metadata"]["name"]
        body = self._new_object(manifest, namespace=None)
        self.objects[CRD_RESOURCE, None, name] = body
        self._serve_crd(body)

    def install_crds_from(self, paths: Iterable[Path]) -> None:
        """Install every CRD in the given YAML files."""
        for path in paths:
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    self.install_crd(doc)

    def set_namespaces(self, names: Iterable[str]) -> None:
        """Make exactly these namespaces exist (until now, every namespace was taken to)."""
        self._namespaces = set(names)

    def add_namespace(self, name: str) -> None:
        """Create a namespace (see :meth:`set_namespaces`)."""
        self.set_namespaces({*(self._namespaces or ()), name})

    def compact(self) -> None:
        """Forget the event log: watches from any older version get 410 Gone."""
        self._oldest = self._revision + 1
        self._log.clear()

    async def end_watches(self) -> None:
        """End every open watch stream at once, without a bookmark (an API server restart)."""
        self._watch_epoch += 1
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------ internals

    def _serve_crd(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        for version in spec.get("versions") or []:
            if not version.get("served", True):
                continue
            res = kmock.resource(spec["group"], version["name"], names["plural"])
            subresources = set((version.get("subresources") or {}).keys())
            self.resources[res] = kmock.ResourceInfo(
                kind=names.get("kind"),
                singular=names.get("singular"),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                shortnames=set(names.get("shortNames") or ()),
                subresources=subresources,
                verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
            )
            if "status" in subresources:
                self._status_resources.add(res)

    def _bump(self) -> str:
        self._revision += 1
        return str(self._revision)

    def _new_object(self, data: dict[str, Any], namespace: str | None) -> dict[str, Any]:
        obj = dict(data)
        meta = dict(obj.get("metadata") or {})
        for server_owned in ("resourceVersion", "uid", "deletionTimestamp", "generation"):
            meta.pop(server_owned, None)
        if namespace is not None:
            meta["namespace"] = namespace
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        meta["resourceVersion"] = self._bump()
        obj["metadata"] = meta
        return obj

    async def _publish(self, resource: kmock.resource, type_: str, obj: dict[str, Any]) -> None:
        self._log.append(_Event(self._revision, resource, type_, obj))
        async with self._changed:
            self._changed.notify_all()

    def _known(self, request: kmock.Request) -> kmock.resource:
        assert request.resource is not None
        if request.resource not in set(self._get_resources()):
            raise _status_error(404, "NotFound", "the server could not find the requested resource")
        return request.resource

    def _not_found(self, request: kmock.Request) -> kmock.KubernetesError:
        assert request.resource is not None
        what = f"{request.resource.plural}.{request.resource.group}".rstrip(".")
        return _status_error(
            404,
            "NotFound",
            f'{what} "{request.name}" not found',
            name=request.name,
            group=request.resource.group,
            kind=request.resource.plural,
        )

    def _current(self, request: kmock.Request) -> kmock.Object:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            raise self._not_found(request)
        return self.objects[key]

    def _conflict(self, request: kmock.Request, why: str) -> kmock.KubernetesError:
        assert request.resource is not None
        return _status_error(
            409,
            "Conflict",
            f"Operation cannot be fulfilled on {request.resource.plural}."
            f'{request.resource.group} "{request.name}": {why}',
            name=request.name,
            group=request.resource.group,
            kind=request.resource.plural,
        )

    async def _serve_create(self, request: kmock.Request) -> Any:
        resource = self._known(request)
        data = request.data if isinstance(request.data, dict) else {}
        meta = data.get("metadata") or {}
        name = meta.get("name")
        namespace = request.namespace
        known = self._namespaces
        if namespace is not None and known is not None and namespace not in known:
            raise _status_error(  # the NamespaceLifecycle admission plugin
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                name=namespace,
                kind="namespaces",
            )
        if meta.get("namespace") and namespace and meta["namespace"] != namespace:
            raise _status_error(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the "
                "namespace sent on the request",
            )
        if not name or not _DNS1123.match(name) or len(name) > 253:
            kind = data.get("kind", resource.plural)
            raise _status_error(
                422,
                "Invalid",
                f'{kind} "{name}" is invalid: metadata.name: Invalid value',
                name=name,
                kind=kind,
                causes=[
                    {
                        "reason": "FieldValueInvalid",
                        "field": "metadata.name",
                        "message": f'Invalid value: "{name}": a lowercase RFC 1123 subdomain '
                        "must consist of lower case alphanumeric characters, '-' or '.'",
                    }
                ],
            )
        key = (resource, namespace, name)
        if key in self.objects and not self.objects[key].deleted:
            raise _status_error(
                409,
                "AlreadyExists",
                f'{resource.plural}.{resource.group} "{name}" already exists',
                name=name,
                group=resource.group,
                kind=resource.plural,
            )
        obj = self._new_object(data, namespace)
        if resource in self._status_resources:
            obj.pop("status", None)  # the status subresource ignores status on create
        if key in self.objects:
            self.objects[key].create(obj)
        else:
            self.objects[key] = obj
        if resource == CRD_RESOURCE:
            self._serve_crd(obj)
        await self._publish(resource, "ADDED", obj)
        return kmock.Response(status=201, payload=obj)  # the client expects 201 Created

    async def _serve_fetch(self, request: kmock.Request) -> Any:
        self._known(request)
        return self._current(request).raw

    async def _serve_replace(self, request: kmock.Request) -> Any:
        if request.resource is None or request.name is None:
            raise kmock.KubernetesEndpointNotFoundError()
        resource = self._known(request)
        stored = self._current(request).raw
        data = request.data if isinstance(request.data, dict) else {}
        meta = dict(data.get("metadata") or {})
        version = meta.get("resourceVersion")
        if not version:
            raise _status_error(
                422,
                "Invalid",
                "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                causes=[
                    {
                        "reason": "FieldValueInvalid",
                        "field": "metadata.resourceVersion",
                        "message": "Invalid value: 0x0: must be specified for an update",
                    }
                ],
            )
        old_meta = stored["metadata"]
        if version != old_meta["resourceVersion"]:
            raise self._conflict(
                request,
                "the object has been modified; please apply your changes to the "
                "latest version and try again",
            )
        if meta.get("uid") and meta["uid"] != old_meta["uid"]:
            raise self._conflict(request, "Precondition failed: UID mismatch")
        on_status = request.subresource == "status"
        has_status = resource in self._status_resources
        if on_status and not has_status:
            raise self._not_found(request)
        if on_status:
            new = {k: v for k, v in stored.items() if k != "status"}
            if data.get("status") is not None:
                new["status"] = data["status"]
            new_meta = dict(old_meta)
        else:
            new = {k: v for k, v in data.items() if k not in ("metadata", "status")}
            if has_status and "status" in stored:
                new["status"] = stored["status"]
            elif not has_status and "status" in data:
                new["status"] = data["status"]
            new_meta = dict(old_meta)
            for field in ("labels", "annotations", "finalizers", "ownerReferences"):
                if meta.get(field):
                    new_meta[field] = meta[field]
                else:
                    new_meta.pop(field, None)
            _check_no_new_finalizers(data, request.name, old_meta, new_meta)
            ignored = {"metadata", "status", "apiVersion", "kind"}
            if {k: v for k, v in new.items() if k not in ignored} != {
                k: v for k, v in stored.items() if k not in ignored
            }:
                new_meta["generation"] = int(old_meta.get("generation", 1)) + 1
        new["metadata"] = new_meta
        if new == stored:
            return stored  # a no-op write keeps the version, as on a real server
        obj_key = (resource, request.namespace, request.name)
        if new_meta.get("deletionTimestamp") and not new_meta.get("finalizers"):
            # The registry deletes instead of writing (deleteWithoutFinalizers): one revision,
            # whose DELETED event carries the last stored state; the PUT answers with the
            # object of the request ("clients are expecting an updated object").
            self.objects[obj_key].delete()
            gone = dict(stored, metadata=dict(old_meta, resourceVersion=self._bump()))
            await self._publish(resource, "DELETED", gone)
            return new
        new_meta["resourceVersion"] = self._bump()
        self.objects[obj_key].create(new)
        await self._publish(resource, "MODIFIED", new)
        return new

    async def _serve_update(self, request: kmock.Request) -> Any:
        # PATCH: kmock's JSON-merge semantics, plus the version bump of a real write.
        resource = self._known(request)
        obj = self._current(request)
        obj.patch(request.data or {})
        new = obj.raw
        new["metadata"] = dict(new["metadata"], resourceVersion=self._bump())
        obj.update(new)
        await self._publish(resource, "MODIFIED", new)
        return new

    async def _serve_delete(self, request: kmock.Request) -> Any:
        resource = self._known(request)
        obj = self._current(request)
        stored = obj.raw
        meta = stored["metadata"]
        options = request.data if isinstance(request.data, dict) else {}
        pre = options.get("preconditions") or {}
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise self._conflict(
                request,
                f"Precondition failed: ResourceVersion in precondition: "
                f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                f"{meta['resourceVersion']}",
            )
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise self._conflict(request, "Precondition failed: UID mismatch")
        if meta.get("deletionTimestamp"):
            return stored  # already being deleted: no-op
        if meta.get("finalizers"):
            new = dict(
                stored,
                metadata=dict(
                    meta,
                    deletionTimestamp=_now(),
                    deletionGracePeriodSeconds=0,
                    # markAsDeleting: a first deletion mark is a change of desired state.
                    generation=int(meta.get("generation", 1)) + 1,
                    resourceVersion=self._bump(),
                ),
            )
            obj.create(new)
            await self._publish(resource, "MODIFIED", new)
            return new
        obj.delete()
        gone = dict(stored, metadata=dict(meta, resourceVersion=self._bump()))
        await self._publish(resource, "DELETED", gone)
        return gone

    async def _serve_list(self, request: kmock.Request) -> Any:
        resource = self._known(request)
        terms = _parse_selector(request.params.get("labelSelector", ""))
        items = sorted(
            (
                obj.raw
                for (res, ns, _), obj in self.objects.items()
                if res == resource and not obj.deleted
                if request.namespace is None or ns == request.namespace
            ),
            key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]),
        )
        info = self.resources[resource]
        return {
            "apiVersion": f"{resource.group}/{resource.version}".lstrip("/"),
            "kind": f"{info.kind or resource.plural}List",
            "metadata": {"resourceVersion": str(self._revision)},
            "items": [o for o in items if _selected(o, terms)],
        }

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        resource = self._known(request)
        yield b""  # send the headers now: a watch is a stream even when nothing happens
        params = request.params
        terms = _parse_selector(params.get("labelSelector", ""))
        timeout = float(params.get("timeoutSeconds") or 1800)
        bookmarks = params.get("allowWatchBookmarks") == "true"
        deadline = asyncio.get_running_loop().time() + timeout
        epoch = self._watch_epoch

        def matches(ev: _Event) -> bool:
            meta = ev.object["metadata"]
            return (
                ev.resource == resource
                and (request.namespace is None or meta.get("namespace") == request.namespace)
                and (request.name is None or meta.get("name") == request.name)
                and _selected(ev.object, terms)
            )

        since_text = params.get("resourceVersion") or "0"
        if since_text == "0":
            since = self._revision
            listing = await self._serve_list(request)
            for item in listing["items"]:
                yield {"type": "ADDED", "object": item}
        else:
            since = int(since_text)
            if since < self._oldest - 1 or since > self._revision:
                yield {
                    "type": "ERROR",
                    "object": {
                        "apiVersion": "v1",
                        "kind": "Status",
                        "metadata": {},
                        "status": "Failure",
                        "code": 410,
                        "reason": "Expired",
                        "message": f"too old resource version: {since} ({self._oldest})",
                    },
                }
                return
        while True:
            for ev in [e for e in self._log if e.revision > since]:
                since = ev.revision
                if matches(ev):
                    yield {"type": ev.type, "object": ev.object}
            since = max(since, self._revision)
            if self._watch_epoch != epoch:
                return  # end_watches(): cut off, no bookmark
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._changed.wait_for(
                            lambda s=since: self._revision > s or self._watch_epoch != epoch
                        ),
                        remaining,
                    )
        if bookmarks:
            yield {
                "type": "BOOKMARK",
                "object": {
                    "apiVersion": f"{resource.group}/{resource.version}".lstrip("/"),
                    "kind": self.resources[resource].kind,
                    "metadata": {"resourceVersion": str(since)},
                },
            }


@dataclass
class EmulatedCluster:
    """A running emulator and a client configured for it."""

    emulator: ApiServerEmulator
    api_client: k8s_client.ApiClient
    host: str
    token: str


_counter = itertools.count()


@contextlib.asynccontextmanager
async def emulated_api_server(
    *,
    crds: Iterable[Path] = (),
    builtin_resources: bool = False,
    token: str = "",
    namespaces: Iterable[str] | None = None,
) -> AsyncIterator[EmulatedCluster]:
    """Start an :class:`ApiServerEmulator` on 127.0.0.1 and yield a client for it.

    Parameters
    ----------
    crds
        YAML files whose CustomResourceDefinitions are installed first.
    builtin_resources
        Serve kmock's bundled list of built-in resources (pods, deployments, services...).
    token
        Bearer token the client sends (visible in ``emulator.requests[i].headers``).
    namespaces
        The namespaces that exist (creating objects elsewhere is 404, as on a real cluster);
        None: every namespace is taken to exist.
    """
    emulator = ApiServerEmulator()
    if builtin_resources:
        emulator.resources.load_bundled()
    if namespaces is not None:
        emulator.set_namespaces(namespaces)
    emulator.install_crds_from(crds)
    async with emulator, kmock.Server(emulator) as server:
        configuration = k8s_client.Configuration()
        configuration.host = str(server.url).rstrip("/")
        token = token or f"test-token-{next(_counter)}"
        configuration.api_key = {"authorization": f"Bearer {token}"}
        configuration.retries = 0  # a test server that went away should fail fast
        api_client = k8s_client.ApiClient(configuration)
        try:
            yield EmulatedCluster(emulator, api_client, configuration.host, token)
        finally:
            await asyncio.to_thread(api_client.close)


def write_kubeconfig(path: Path, server: str) -> Path:
    """Write a kubeconfig for the emulator at ``server`` (user ``gm``, token ``gm-token``)."""
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: emu
  cluster: {{server: "{server}"}}
users:
- name: gm
  user: {{token: gm-token}}
contexts:
- name: emu
  context: {{cluster: emu, user: gm}}
current-context: emu
"""
    )
    return path
