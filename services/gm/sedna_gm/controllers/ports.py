"""Serving ports for the local mode, where workers that bind a port share their node's ports.

One worker of a resource binds a port others reach through its Service: a
JointInferenceService's cloud worker (``BIG_MODEL_BIND_PORT``, upstream 5000) and a
FederatedLearningJob's aggregator (``AGG_BIND_PORT``, upstream 7363). On Kubernetes each has
its own pod IP and binds the upstream port. In the local mode workers are processes on the
node's host, so two resources on one node cannot both bind it: each gets a port from a range,
chosen once and kept in its binding worker's environment.

The choice starts at a hash of ``namespace/name`` (so the same resource lands on the same port
again, e.g. after its worker record was lost), skips the ports other resources hold and the
ports already bound on the GM's host (in ``sedna up`` every node is on that host), and wraps
around the range. :class:`WorkerPorts` remembers the choices; after a GM restart it reads
them back from the binding workers' ``Worker`` objects.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable, Collection, Mapping

from sedna.resources.objects import ObjectKey, ResourceObject
from sedna.resources.worker import WORKER_KIND
from sedna_gm.controllers.informer import Informer
from sedna_gm.workloads.builder import label_prefix
from sedna_gm.workloads.port import WorkloadError

__all__ = ["PORT_RANGE", "WorkerPorts", "allocate_port", "port_is_free"]

PORT_RANGE = (25000, 30000)
"""Ports ``[low, high)`` handed to local binding workers (below Linux's ephemeral range)."""


def port_is_free(port: int) -> bool:
    """Whether ``port`` can be bound on every interface of this host right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def allocate_port(
    key: str,
    taken: Collection[int],
    *,
    port_range: tuple[int, int] = PORT_RANGE,
    probe: Callable[[int], bool] = port_is_free,
    env_name: str = "the port variable",
    worker_type: str = "binding",
) -> int:
    """A port of ``port_range`` for ``key`` that is not in ``taken`` and that ``probe`` accepts.

    Parameters
    ----------
    key
        Identifies the resource (``namespace/name``); the search starts at its hash.
    taken
        Ports other resources hold.
    port_range
        ``(low, high)``: ports ``low`` to ``high - 1``.
    probe
        Whether a port is free on the host (tests inject one).
    env_name, worker_type
        The variable that pins the port and the worker whose template holds it (for the
        message when the range is exhausted).

    Raises
    ------
    WorkloadError
        Every port of the range is taken.
    """
    low, high = port_range
    span = high - low
    if not 0 < low < high <= 65536:
        raise WorkloadError(f"port range {low}-{high - 1} is not a valid port range")
    start = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % span
    for offset in range(span):
        port = low + (start + offset) % span
        if port not in taken and probe(port):
            return port
    raise WorkloadError(
        f"no free port in {low}-{high - 1} for {key}: set {env_name} in the {worker_type} "
        "worker's template env"
    )


def _env_port(worker: ResourceObject, env_name: str) -> int | None:
    """``env_name`` (e.g. ``BIG_MODEL_BIND_PORT``) in a ``Worker`` object's environment."""
    for item in worker.spec.get("env") or []:
        if isinstance(item, Mapping) and item.get("name") == env_name:
            try:
                return int(str(item.get("value", "")))
            except ValueError:
                return None
    return None


class WorkerPorts:
    """The port of each local resource's binding worker: remembered, recovered or allocated.

    Parameters
    ----------
    workers
        The ``Worker`` informer: the ports binding workers already have (None: none known).
    env_name
        The variable that holds a binding worker's port (``BIG_MODEL_BIND_PORT``,
        ``AGG_BIND_PORT``); the exhausted-range message names it.
    worker_type
        The ``worker-type`` label of the binding workers (``cloud``, ``aggregation``).
    worker_name
        The name of a resource's binding worker, from the resource's name.
    port_range, probe
        See :func:`allocate_port`.
    """

    def __init__(
        self,
        workers: Informer | None,
        *,
        env_name: str,
        worker_type: str,
        worker_name: Callable[[str], str],
        port_range: tuple[int, int] = PORT_RANGE,
        probe: Callable[[int], bool] = port_is_free,
    ) -> None:
        self.workers = workers
        self.port_range = port_range
        self.probe = probe
        self.env_name = env_name
        self.worker_type = worker_type
        self.worker_name = worker_name
        self._ports: dict[ObjectKey, int] = {}

    def port_for(self, service: ResourceObject) -> int:
        """The port of ``service``'s binding worker (allocated on first use).

        Raises
        ------
        WorkloadError
            No port of the range is free (the message names :attr:`env_name`).
        """
        key = service.key
        port = self._ports.get(key) or self._recorded(service)
        if port is None:
            taken = {p for k, p in self._ports.items() if k != key} | self._others(service)
            port = allocate_port(
                f"{service.namespace}/{service.name}",
                taken,
                port_range=self.port_range,
                probe=self.probe,
                env_name=self.env_name,
                worker_type=self.worker_type,
            )
        self._ports[key] = port
        return port

    def forget(self, key: ObjectKey) -> None:
        """Release the resource's port."""
        self._ports.pop(key, None)

    def _recorded(self, service: ResourceObject) -> int | None:
        if self.workers is None:
            return None
        worker = self.workers.get(
            ObjectKey(WORKER_KIND, service.namespace, self.worker_name(service.name))
        )
        return _env_port(worker, self.env_name) if worker is not None else None

    def _others(self, service: ResourceObject) -> set[int]:
        """Ports the binding workers of the other resources have."""
        if self.workers is None:
            return set()
        prefix = label_prefix(service.kind)
        ports = set()
        for worker in self.workers.list():
            if worker.labels.get(f"{prefix}/worker-type") != self.worker_type:
                continue
            mine = (worker.namespace, worker.labels.get(f"{prefix}/name"))
            port = _env_port(worker, self.env_name)
            if port is not None and mine != (service.namespace, service.name):
                ports.add(port)
        return ports
