"""The GlobalManager assembled: store, controllers, node hub, workload runtime and gRPC APIs.

:class:`GlobalManager` owns the long-lived parts and their start/stop order; :func:`setup`
is what ``sedna-gm`` runs on its :class:`~sedna.runtime.ServiceServer`.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from prometheus_client import CollectorRegistry
from sqlalchemy.exc import SQLAlchemyError

from sedna.api.gm.v1 import hub_service_pb2, hub_service_pb2_grpc, node_service_pb2_grpc
from sedna.resources.objects import ObjectKey
from sedna.runtime import ServiceServer
from sedna.runtime.server import ServerStartError
from sedna_gm.api.resource_servicer import add_resource_service
from sedna_gm.controllers import (
    DesiredStateRegistry,
    Manager,
    MemoryEventRecorder,
    ReportRouter,
    setup_dataset_controller,
    setup_model_controller,
)
from sedna_gm.controllers.federatedlearning import setup_federated_learning_controller
from sedna_gm.controllers.jointinference import setup_joint_inference_controller
from sedna_gm.events import SqlEventRecorder
from sedna_gm.hub import (
    HUB_SERVICE_NAME,
    NODE_SERVICE_NAME,
    HubConfig,
    HubServicer,
    NodeHub,
    NodeServicer,
    SqlHubStateStore,
)
from sedna_gm.hub.core import NodeStream
from sedna_gm.leader import ElectionConfig, LeaderElector, Leadership
from sedna_gm.node_tokens import NodeTokenFileError, read_node_tokens
from sedna_gm.settings import GMSettings, RuntimeKind
from sedna_gm.store.errors import NotFoundError, StoreError
from sedna_gm.store.factory import open_store
from sedna_gm.store.port import ResourceStore
from sedna_gm.workloads.builder import WorkerEnvSettings
from sedna_gm.workloads.local import LocalWorkloadRuntime
from sedna_gm.workloads.port import WorkloadRuntime
from sedna_gm.workloads.secret_files import DirectorySecretSource
from sedna_gm.workloads.storage import SecretSource

__all__ = ["GlobalManager", "hub_state_url", "setup", "store_url"]

_log = logging.getLogger(__name__)

_SQL_SCHEMES = ("sqlite", "postgres", "postgresql")


def _is_sql(url: str) -> bool:
    """Whether ``url`` names a SQLite or PostgreSQL database (any driver suffix)."""
    return urlsplit(url).scheme.split("+", 1)[0].lower() in _SQL_SCHEMES


def _is_kubernetes(url: str) -> bool:
    """Whether ``url`` names the Kubernetes API server as the store."""
    return urlsplit(url).scheme.lower() == "kubernetes"


def hub_state_url(settings: GMSettings) -> str:
    """Where the hub keeps each node's report position.

    The resource store's own database when it is SQL (one file to back up), otherwise
    ``settings.hub_state_url`` or a SQLite file next to the process.
    """
    if settings.hub_state_url:
        return settings.hub_state_url
    if _is_sql(settings.store_url):
        return settings.store_url
    return "sqlite:///sedna-gm-hub.db"


def store_url(settings: GMSettings) -> str:
    """The store URL, with ``--kubeconfig`` and ``--namespace`` applied to a bare kubernetes URL.

    ``--store-url kubernetes --kubeconfig F --namespace N`` means the same as
    ``--store-url "kubernetes://F?namespace=N"``; a URL that names a kubeconfig or a
    namespace itself wins.
    """
    bare = settings.store_url.strip().lower() in ("kubernetes", "kubernetes:")
    parts = urlsplit("kubernetes://" if bare else settings.store_url)
    if parts.scheme.lower() != "kubernetes":
        return settings.store_url
    path = parts.path or (str(settings.kubeconfig) if settings.kubeconfig else "")
    query = dict(parse_qsl(parts.query))
    if settings.namespace and "namespace" not in query:
        query["namespace"] = settings.namespace
    return f"kubernetes://{quote(path)}" + (f"?{urlencode(query)}" if query else "")


class _Reports:
    """The hub's ReportHandler: worker lifecycle to the runtime, the rest to controllers."""

    def __init__(self, router: ReportRouter) -> None:
        self.router = router
        self.local: LocalWorkloadRuntime | None = None

    async def handle_report(self, node_name: str, report: hub_service_pb2.NodeReport) -> None:
        # A WorkloadError propagates: the hub does not ack, and the node resends later.
        if report.WhichOneof("payload") == "worker_state" and self.local is not None:
            await self.local.observe_worker_state(
                node_name, report.worker_state, namespace=report.owner.namespace or None
            )
        await self.router.handle_report(node_name, report)


class GlobalManager:
    """Every long-lived part of the GM, in start order.

    Parameters
    ----------
    settings
        The GM's settings.
    registry
        Prometheus registry for the controller and hub metrics (the server's).
    store
        An unstarted store to use instead of opening ``settings.store_url`` (tests).
    """

    def __init__(
        self,
        settings: GMSettings,
        registry: CollectorRegistry,
        *,
        store: ResourceStore | None = None,
    ) -> None:
        self.settings = settings
        self.store = store if store is not None else open_store(store_url(settings))
        namespace = settings.namespace or None
        self.manager = Manager(self.store, registry, namespace=namespace)
        self.router = ReportRouter()
        self.desired = DesiredStateRegistry()
        # Events persist next to SQL-stored objects; on Kubernetes they stay in memory.
        self.recorder: MemoryEventRecorder = (
            SqlEventRecorder(settings.store_url, exists=self._exists)
            if _is_sql(settings.store_url)
            else MemoryEventRecorder()
        )
        tokens = read_node_tokens(settings.node_token_file) if settings.node_token_file else None
        self.runtime: WorkloadRuntime
        # credentialName Secrets: the cluster's (kubernetes runtime) or --secrets-dir (local).
        self.secrets: SecretSource = DirectorySecretSource(settings.secrets_dir)
        self._local: LocalWorkloadRuntime | None = None
        self._kube_client: Any = None
        # Set by setup() with leader election: the parts above start once elected.
        self.leadership: Leadership | None = None
        reports = _Reports(self.router)
        self.hub = NodeHub(
            reports,
            self.desired,
            HubConfig(heartbeat_seconds=settings.heartbeat_seconds, node_tokens=tokens),
            store=SqlHubStateStore(hub_state_url(settings)),
            registry=registry,
        )
        if settings.runtime is RuntimeKind.LOCAL:
            self._local = LocalWorkloadRuntime(self.hub, store=self.store, nodes=self.hub)
            self.desired.register(self._local)
            self.runtime = self._local
            reports.local = self._local
        else:
            self.runtime = self._kubernetes_runtime()
        setup_dataset_controller(
            self.manager,
            self.router,
            self.desired,
            messenger=self.hub,
            nodes=self.hub,
            recorder=self.recorder,
            secrets=self.secrets,
            secret_retry=settings.secret_refresh_seconds,
            secret_refresh=settings.secret_refresh_seconds,
        )
        setup_model_controller(self.manager, self.router, self.recorder)
        # What every controller that runs workers takes.
        workload: dict[str, Any] = {
            "runtime": self.runtime,
            "recorder": self.recorder,
            "env_settings": WorkerEnvSettings(
                lc_server=settings.lc_server, kb_server=settings.kb_server
            ),
            "nodes": self.hub if self._local is not None else None,
            # Local Worker objects live in a SQL store, where they can be watched.
            "watch_workers": self._local is not None and not _is_kubernetes(store_url(settings)),
            "secrets": self.secrets,
            "poll_interval": settings.workload_poll_seconds,
            "retry_interval": settings.workload_poll_seconds,
        }
        setup_joint_inference_controller(self.manager, self.router, registry=registry, **workload)
        setup_federated_learning_controller(self.manager, self.router, **workload)

    def _kubernetes_runtime(self) -> WorkloadRuntime:
        # Imported here: the kubernetes client is only needed (and installed) in cluster mode.
        from sedna_gm.store.kubernetes import kubernetes_client_from_config  # noqa: PLC0415
        from sedna_gm.workloads.kubernetes import (  # noqa: PLC0415
            KubernetesSecretSource,
            KubernetesWorkloadRuntime,
        )

        s = self.settings
        kubeconfig = str(s.kubeconfig) if s.kubeconfig else None
        client = kubernetes_client_from_config(kubeconfig, None, s.in_cluster)
        self._kube_client = client
        self.secrets = KubernetesSecretSource(client)
        return KubernetesWorkloadRuntime(client)

    async def _exists(self, key: ObjectKey) -> bool:
        try:
            await self.store.get(key.kind, key.namespace, key.name)
        except NotFoundError:
            return False
        return True

    async def start(self) -> None:
        """Open the store, load the hub's node positions and events, start the controllers.

        Raises
        ------
        ServerStartError
            The store cannot be reached or the controllers cannot sync.
        """
        try:
            await self.store.start()
            await self.hub.load()
            if isinstance(self.recorder, SqlEventRecorder):
                await self.recorder.start()
            await self.manager.start()
        except (StoreError, OSError, TimeoutError, SQLAlchemyError) as exc:
            raise ServerStartError(f"store {self.store!r}: {exc}") from exc

    async def stop(self) -> None:
        """End the node streams, stop the controllers and close the store."""
        await self.hub.close()
        await self.manager.stop()
        if isinstance(self.recorder, SqlEventRecorder):
            await self.recorder.close()
        await self.store.close()
        if self._kube_client is not None:
            self._kube_client.close()

    def register(
        self,
        server: ServiceServer,
        *,
        wrap_stream: Callable[[NodeStream], NodeStream] | None = None,
    ) -> None:
        """Serve the resource API, the node hub and the node directory on ``server``.

        Parameters
        ----------
        server
            The GM's (not yet started) server.
        wrap_stream
            Optional wrapper around every node stream (fault injection in tests).
        """
        add_resource_service(server, self.store, self.recorder)
        server.add_servicer(
            hub_service_pb2_grpc.add_HubServiceServicer_to_server,
            HubServicer(self.hub, wrap_stream=wrap_stream),
            HUB_SERVICE_NAME,
        )
        # Nodes authenticate with their own tokens (checked by the hub), not the admin ones.
        server.exempt_from_token_auth(HUB_SERVICE_NAME)
        server.add_servicer(
            node_service_pb2_grpc.add_NodeServiceServicer_to_server,
            NodeServicer(self.hub),
            NODE_SERVICE_NAME,
        )


async def setup(
    server: ServiceServer,
    settings: GMSettings,
    *,
    on_lost_leadership: Callable[[], None] | None = None,
) -> GlobalManager:
    """Build, start and register the GM on ``server`` (before it starts serving).

    With ``settings.leader_election`` the store, controllers and hub start only once this
    replica holds the Lease; until then the server's health is NOT_SERVING (the readiness
    probe keeps Service traffic away), and losing the Lease calls ``on_lost_leadership``
    (default: exit with status 1, so that Kubernetes restarts the pod as a standby).

    Raises
    ------
    ServerStartError
        Unusable node token file, unreachable store, or controllers that cannot sync.
    """
    try:
        gm = GlobalManager(settings, server.registry)
    except (NodeTokenFileError, ValueError, StoreError) as exc:
        raise ServerStartError(str(exc)) from exc
    if settings.leader_election:
        await _elect_then_start(
            server, settings, gm, on_lost_leadership or _exit_on_lost_leadership
        )
    else:
        await gm.start()
        server.on_shutdown(gm.stop)
    # Node streams last forever: end them when the drain starts (nodes reconnect and resume).
    server.on_drain(gm.hub.close)
    gm.register(server)
    _log.info(
        "GlobalManager ready",
        extra={
            "store": _redacted(settings.store_url),
            "runtime": settings.runtime.value,
            "leader_election": settings.leader_election,
        },
    )
    return gm


async def _elect_then_start(
    server: ServiceServer,
    settings: GMSettings,
    gm: GlobalManager,
    on_lost: Callable[[], None],
) -> None:
    """Start ``gm`` only once this replica holds the Lease; NOT_SERVING until then."""
    from sedna_gm.leader.kubernetes import KubernetesLeasePort  # noqa: PLC0415
    from sedna_gm.store.kubernetes import kubernetes_client_from_config  # noqa: PLC0415

    kubeconfig = str(settings.kubeconfig) if settings.kubeconfig else None
    try:
        client: Any = kubernetes_client_from_config(kubeconfig, None, settings.in_cluster)
    except StoreError as exc:
        raise ServerStartError(f"leader election: {exc}") from exc
    namespace = (
        settings.leader_election_namespace
        or settings.namespace
        or os.environ.get("POD_NAMESPACE", "")
        or "default"
    )
    identity = (
        settings.leader_election_identity
        or os.environ.get("POD_NAME", "")
        or f"{socket.gethostname()}_{uuid.uuid4()}"
    )
    try:
        config = ElectionConfig(
            identity=identity,
            lease_duration=settings.leader_election_lease_seconds,
            renew_deadline=settings.leader_election_renew_deadline_seconds,
            retry_period=settings.leader_election_retry_seconds,
        )
    except ValueError as exc:
        client.close()
        raise ServerStartError(str(exc)) from exc
    elector = LeaderElector(
        KubernetesLeasePort(client, namespace, settings.leader_election_lease_name), config
    )

    async def elected() -> None:
        await gm.start()
        await server.set_serving("", True)

    gm.leadership = Leadership(elector, elected, on_lost)

    async def stop() -> None:
        assert gm.leadership is not None
        await gm.leadership.stop(cleanup=gm.stop)
        client.close()

    # A standby is NOT_SERVING from its first health answer: no Service routes to it.
    await server.set_serving("", False)
    server.on_startup(gm.leadership.start)
    server.on_shutdown(stop)
    _log.info(
        "leader election on",
        extra={
            "identity": identity,
            "lease": f"{namespace}/{settings.leader_election_lease_name}",
        },
    )


def _exit_on_lost_leadership() -> None:
    """Exit at once with status 1: a replica that lost the Lease must stop reconciling now."""
    _log.critical("leader election lost; exiting so that the pod restarts as a standby")
    logging.shutdown()
    os._exit(1)


def _redacted(url: str) -> str:
    """The URL without its password (for logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()
