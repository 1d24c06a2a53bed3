"""ResourceStore on the Kubernetes API: Sedna objects as ``sedna.io/v1alpha1`` custom resources.

The API server provides every semantic of the port itself: ``uid``/``resourceVersion``/
``generation`` bookkeeping, optimistic concurrency (409 on a stale ``resourceVersion``), the
status subresource, finalizers and watches from a ``resourceVersion``. This adapter only
translates: calls go through the official synchronous client in worker threads, watch streams
run in their own threads (:mod:`sedna_gm.store.k8s_watch`), objects are converted in
:mod:`sedna_gm.store.k8s_convert` and failures mapped in :mod:`sedna_gm.store.k8s_errors`.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from sedna.resources._base import API_VERSION, GROUP, VERSION
from sedna.resources.objects import DEFAULT_NAMESPACE, ObjectKey, ResourceObject
from sedna.resources.registry import UnknownKindError, all_kinds, get_kind
from sedna_gm.store.errors import (
    ConflictError,
    InvalidObjectError,
    StoreError,
    StoreUnavailableError,
)
from sedna_gm.store.k8s_convert import K8sConversionError, from_k8s, to_k8s
from sedna_gm.store.k8s_errors import (
    CRD_FIX_HINT,
    describe_connection_error,
    map_api_exception,
    safe_host,
)
from sedna_gm.store.k8s_watch import WatchItem, WatchThread, queue_sink
from sedna_gm.store.port import ListResult, WatchEvent

__all__ = [
    "KubernetesResourceStore",
    "MissingCRDsError",
    "kubernetes_client_from_config",
    "running_in_cluster",
]

_LOG = logging.getLogger(__name__)
_T = TypeVar("_T")


class MissingCRDsError(StoreUnavailableError):
    """The cluster lacks some Sedna CustomResourceDefinitions.

    Attributes
    ----------
    missing
        Names of the missing CRDs, e.g. ``["datasets.sedna.io"]``.
    """

    def __init__(self, missing: list[str], host: str) -> None:
        super().__init__(
            f"the Sedna CRDs are not installed in the cluster at {safe_host(host)}: missing "
            f"{', '.join(missing)}; {CRD_FIX_HINT}"
        )
        self.missing = missing


def running_in_cluster() -> bool:
    """Whether this process runs in a Kubernetes pod (the service-account env is present)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def kubernetes_client_from_config(
    kubeconfig: str | None, context: str | None, in_cluster: bool
) -> k8s_client.ApiClient:
    """Build an API client from the pod's service account or from a kubeconfig.

    Parameters
    ----------
    kubeconfig
        Path of the kubeconfig file; None for ``$KUBECONFIG`` or ``~/.kube/config``.
    context
        Context in the kubeconfig; None for its current context.
    in_cluster
        Use the pod's service account (token and CA mounted by Kubernetes) instead of a
        kubeconfig; :func:`running_in_cluster` is a good default.

    Returns
    -------
    kubernetes.client.ApiClient
        A client owned by the caller (close it when done).

    Raises
    ------
    StoreUnavailableError
        The configuration cannot be loaded (the message names the file or environment).
    """
    configuration = k8s_client.Configuration()
    # The client reads $KUBECONFIG once, when imported: read it now, as documented.
    config_file = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    try:
        if in_cluster:
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        else:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=config_file, context=context, client_configuration=configuration
            )
    except (ConfigException, OSError) as exc:
        source = "in-cluster service account" if in_cluster else f"kubeconfig {config_file}"
        raise StoreUnavailableError(
            f"cannot load the Kubernetes configuration from the {source}: {exc}"
        ) from None
    return k8s_client.ApiClient(configuration)


def _plural(kind: str) -> str:
    try:
        return get_kind(kind).plural
    except UnknownKindError as exc:
        raise InvalidObjectError(str(exc), field="kind") from None


class KubernetesResourceStore:
    """Sedna objects stored as custom resources through the Kubernetes API.

    Parameters
    ----------
    api_client
        A configured client (see :func:`kubernetes_client_from_config`); the caller owns it
        unless ``owns_client``.
    namespace
        When set, requests for "every namespace" (``list``/``watch`` with ``namespace=None``)
        are narrowed to this namespace, for a GlobalManager with namespace-scoped RBAC.
    request_timeout_s
        Limit of one API call.
    watch_timeout_s
        Server-side length of one watch stream before it is transparently reopened; also
        bounds how long an abandoned watch thread can live.
    update_retries
        Attempts of a read-modify-write update (empty ``resource_version``) under conflicts.
    check_crds
        Whether :meth:`start` checks that the Sedna CRDs are installed.
    owns_client
        Whether :meth:`close` also closes ``api_client`` (a store made by ``open_store``).
    """

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        *,
        namespace: str | None = None,
        request_timeout_s: float = 30.0,
        watch_timeout_s: int = 300,
        update_retries: int = 5,
        check_crds: bool = True,
        owns_client: bool = False,
    ) -> None:
        self._client = api_client
        self._owns_client = owns_client
        self._api = k8s_client.CustomObjectsApi(api_client)
        self._namespace = namespace
        self._timeout = request_timeout_s
        self._watch_timeout = watch_timeout_s
        self._update_retries = max(1, update_retries)
        self._check_crds = check_crds
        self._watches: set[WatchThread] = set()
        # One sink per open watch() iterator; close() sends None through it to end the iterator.
        self._sinks: set[Callable[[WatchItem | None], None]] = set()
        self._closed = False

    def __repr__(self) -> str:
        scope = f", namespace={self._namespace!r}" if self._namespace else ""
        return f"KubernetesResourceStore({self.host!r}{scope})"

    @property
    def host(self) -> str:
        """The API server address (without credentials)."""
        return safe_host(str(self._client.configuration.host))

    @property
    def namespace(self) -> str | None:
        """The namespace "every namespace" is narrowed to, or None."""
        return self._namespace

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Check the API server is reachable and the Sedna CRDs are installed."""
        self._closed = False
        if self._check_crds:
            await self.check_crds_installed()

    async def close(self) -> None:
        """End every open watch (their iterators stop); close the client if owned."""
        self._closed = True
        watches = list(self._watches)
        for w in watches:
            w.stop()
        for sink in list(self._sinks):
            sink(None)
        if watches:
            await asyncio.to_thread(lambda: [w.join(2.0) for w in watches])
        if self._owns_client:
            await asyncio.to_thread(self._client.close)

    async def check_crds_installed(self) -> None:
        """Raise :class:`MissingCRDsError` unless every Sedna CRD is installed and served.

        Lists the CustomResourceDefinitions; when that is forbidden (namespace-scoped RBAC),
        probes each kind's endpoint instead.
        """
        required = {f"{k.plural}.{GROUP}": k for k in all_kinds()}
        api = k8s_client.ApiextensionsV1Api(self._client)
        key = ObjectKey("CustomResourceDefinition", "", "")
        try:
            response: Any = await self._call(
                api.list_custom_resource_definition,
                key,
                collection=True,
                _preload_content=False,
            )
        except StoreError as exc:
            if "(403)" not in str(exc):
                raise
            await self._probe_kinds(list(required))
            return
        data = json.loads(response.data)
        served: set[str] = set()
        for item in data.get("items") or []:
            name = str((item.get("metadata") or {}).get("name", ""))
            versions = (item.get("spec") or {}).get("versions") or []
            if any(v.get("name") == VERSION and v.get("served", True) for v in versions):
                served.add(name)
        missing = sorted(set(required) - served)
        if missing:
            raise MissingCRDsError(missing, self.host)

    async def _probe_kinds(self, names: list[str]) -> None:
        missing: list[str] = []
        for name in names:
            plural = name.split(".", 1)[0]
            try:
                await self._call(
                    self._api.list_namespaced_custom_object,
                    ObjectKey(plural, self._namespace or DEFAULT_NAMESPACE, ""),
                    GROUP,
                    VERSION,
                    self._namespace or DEFAULT_NAMESPACE,
                    plural,
                    limit=1,
                    collection=True,
                )
            except StoreUnavailableError as exc:
                if "does not serve" not in str(exc):
                    raise
                missing.append(name)
        if missing:
            raise MissingCRDsError(missing, self.host)

    # ----------------------------------------------------------------- plumbing

    async def _call(
        self,
        fn: Callable[..., _T],
        key: ObjectKey,
        *args: Any,
        collection: bool = False,
        expected_version: str = "",
        **kwargs: Any,
    ) -> _T:
        """Run one client call in a worker thread and map its failures."""
        kwargs.setdefault("_request_timeout", self._timeout)
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ApiException as exc:
            raise map_api_exception(
                exc,
                key,
                host=self.host,
                collection=collection,
                expected_version=expected_version,
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreUnavailableError(
                f"Kubernetes API server {self.host} is unreachable: "
                f"{describe_connection_error(exc)}"
            ) from None

    def _object(self, data: Any, key: ObjectKey) -> ResourceObject:
        try:
            return from_k8s(data)
        except K8sConversionError as exc:
            raise StoreError(f"{key}: unexpected answer from the API server: {exc}") from None

    @staticmethod
    def _check_api_version(obj: ResourceObject) -> None:
        if obj.api_version != API_VERSION:
            raise InvalidObjectError(
                f'unsupported apiVersion "{obj.api_version}": expected "{API_VERSION}"',
                field="apiVersion",
            )

    async def _current_version(self, key: ObjectKey) -> str:
        """Best-effort current version for a ConflictError message."""
        try:
            return (await self.get(key.kind, key.namespace, key.name)).resource_version
        except StoreError:
            return ""

    # ----------------------------------------------------------------- CRUD

    async def create(self, obj: ResourceObject) -> ResourceObject:
        """Create the object; raises AlreadyExistsError, InvalidObjectError."""
        self._check_api_version(obj)
        plural = _plural(obj.kind)
        body = to_k8s(obj)
        # The server owns these: a create carrying them is refused or ignored.
        body["metadata"].pop("resourceVersion", None)
        body["metadata"].pop("uid", None)
        body.pop("status", None)
        result = await self._call(
            self._api.create_namespaced_custom_object,
            obj.key,
            GROUP,
            VERSION,
            obj.namespace,
            plural,
            body,
            collection=True,  # a 404 is a missing CRD or namespace, never a missing object
        )
        return self._object(result, obj.key)

    async def get(self, kind: str, namespace: str, name: str) -> ResourceObject:
        """Return the object; raises NotFoundError."""
        key = ObjectKey(kind, namespace, name)
        result = await self._call(
            self._api.get_namespaced_custom_object,
            key,
            GROUP,
            VERSION,
            namespace,
            _plural(kind),
            name,
        )
        return self._object(result, key)

    async def list(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: Mapping[str, str] | None = None,
    ) -> ListResult:
        """Objects of a kind sorted by namespace then name, with the version to watch from."""
        plural = _plural(kind)
        namespace = namespace or self._namespace
        kwargs: dict[str, Any] = {}
        if label_selector:
            kwargs["label_selector"] = ",".join(f"{k}={v}" for k, v in label_selector.items())
        key = ObjectKey(kind, namespace or "", "")
        if namespace is None:
            result: Any = await self._call(
                self._api.list_cluster_custom_object,
                key,
                GROUP,
                VERSION,
                plural,
                collection=True,
                **kwargs,
            )
        else:
            result = await self._call(
                self._api.list_namespaced_custom_object,
                key,
                GROUP,
                VERSION,
                namespace,
                plural,
                collection=True,
                **kwargs,
            )
        items = [self._object(item, key) for item in result.get("items") or []]
        # The API server's own order (etcd keys are .../namespace/name); sorted again so the
        # port's guarantee does not depend on the server.
        items.sort(key=lambda o: (o.namespace, o.name))
        version = str((result.get("metadata") or {}).get("resourceVersion") or "")
        return ListResult(items=items, resource_version=version)

    async def _replace(self, obj: ResourceObject, *, status: bool) -> ResourceObject:
        """Write through ``replace`` (or its status form); retries when no version was given."""
        self._check_api_version(obj)
        plural = _plural(obj.kind)
        fn = (
            self._api.replace_namespaced_custom_object_status
            if status
            else self._api.replace_namespaced_custom_object
        )
        for _attempt in range(self._update_retries):
            base = obj
            if not obj.resource_version:
                # Custom resources require a version on replace: read, then write on top.
                current = await self.get(obj.kind, obj.namespace, obj.name)
                base = obj.clone()
                base.resource_version = current.resource_version
                if not status:
                    base.status = current.status
            body = to_k8s(base)
            if not status:
                # update never writes status; the status subresource keeps it server-side.
                body.pop("status", None)
            try:
                result = await self._call(
                    fn,
                    obj.key,
                    GROUP,
                    VERSION,
                    obj.namespace,
                    plural,
                    obj.name,
                    body,
                    expected_version=obj.resource_version,
                )
            except ConflictError as exc:
                if obj.resource_version:
                    raise ConflictError(
                        obj.key, obj.resource_version, await self._current_version(obj.key)
                    ) from exc
                continue  # someone wrote in between our read and write: read again
            return self._object(result, obj.key)
        raise ConflictError(obj.key, "", await self._current_version(obj.key))

    async def update(self, obj: ResourceObject) -> ResourceObject:
        """Write metadata and spec; raises NotFoundError, ConflictError."""
        return await self._replace(obj, status=False)

    async def update_status(self, obj: ResourceObject) -> ResourceObject:
        """Write status only (status subresource); raises NotFoundError, ConflictError."""
        return await self._replace(obj, status=True)

    async def delete(
        self, kind: str, namespace: str, name: str, resource_version: str = ""
    ) -> ResourceObject:
        """Delete, or mark for deletion while finalizers remain; raises NotFoundError."""
        key = ObjectKey(kind, namespace, name)
        body = None
        if resource_version:
            body = k8s_client.V1DeleteOptions(
                preconditions=k8s_client.V1Preconditions(resource_version=resource_version)
            )
        try:
            result = await self._call(
                self._api.delete_namespaced_custom_object,
                key,
                GROUP,
                VERSION,
                namespace,
                _plural(kind),
                name,
                body=body,
                expected_version=resource_version,
            )
        except ConflictError as exc:
            raise ConflictError(key, resource_version, await self._current_version(key)) from exc
        return self._object(result, key)

    # ----------------------------------------------------------------- watch

    def watch(
        self, kind: str | None = None, namespace: str | None = None, since: str = ""
    ) -> AsyncIterator[WatchEvent]:
        """Changes after ``since`` (empty: from now); raises GoneError when too old.

        With ``kind=None`` one stream per Sedna kind is merged; their events are each in
        order, and BOOKMARKs are left out (one kind's bookmark says nothing about the others).
        """
        kinds = [kind] if kind else [k.kind for k in all_kinds()]
        for k in kinds:
            _plural(k)  # fail on an unknown kind now, not on first iteration
        return self._watch(kinds, namespace or self._namespace, since)

    async def _watch(
        self, kinds: Sequence[str], namespace: str | None, since: str
    ) -> AsyncIterator[WatchEvent]:
        if self._closed:
            return
        if not since:
            # "From now": the version of a fresh list (one etcd revision for every kind).
            since = (await self.list(kinds[0], namespace)).resource_version
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[WatchItem | None] = asyncio.Queue()
        sink = queue_sink(loop, queue)
        threads: builtins.list[WatchThread] = []
        for kind in kinds:
            plural = _plural(kind)
            if namespace is None:
                fn: Callable[..., Any] = self._api.list_cluster_custom_object
                args: tuple[str, ...] = (GROUP, VERSION, plural)
            else:
                fn = self._api.list_namespaced_custom_object
                args = (GROUP, VERSION, namespace, plural)
            threads.append(
                WatchThread(
                    fn,
                    args,
                    key=ObjectKey(kind, namespace or "", ""),
                    since=since,
                    sink=sink,
                    host=self.host,
                    timeout_seconds=self._watch_timeout,
                    bookmarks=len(kinds) == 1,
                )
            )
        for t in threads:
            self._watches.add(t)
            t.start()
        self._sinks.add(sink)
        try:
            while True:
                item = await queue.get()
                if item is None:  # the store was closed
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._sinks.discard(sink)
            for t in threads:
                t.stop()
                self._watches.discard(t)
