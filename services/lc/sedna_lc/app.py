"""The LocalController assembled: local state, GM link, dataset monitor, workers, report APIs.

Start order matters for "a reboot loses nothing": the local SQLite state is opened first and
every object the node held is handed back to its manager *before* the link to the GM starts
(the GM may resume the old session and not resend them); the report APIs and the link start
once the gRPC port is bound, because the link announces that address to the GM.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry

from sedna import __version__
from sedna.runtime import ChannelConfig, ServiceServer
from sedna.runtime.server import ServerStartError
from sedna_lc.datasets import DatasetMonitor
from sedna_lc.dispatch import Dispatcher
from sedna_lc.link import GMLink, LinkConfig, LinkStream
from sedna_lc.metrics import LCMetrics
from sedna_lc.reports import HttpReportServer, NodeStatus, WorkerReportIntake, add_lc_servicers
from sedna_lc.settings import LCSettings
from sedna_lc.state import LocalState, Outbox
from sedna_lc.workers import ProcessRuntime
from sedna_lc.workers.runtime import BASE_ENV_KEYS

__all__ = ["LocalController", "gm_target", "setup", "upstream_environment"]

_log = logging.getLogger(__name__)

STATE_FILE = "lc-state.db"
"""The SQLite file (under ``data_dir``) with the link position, held objects and outbox."""


def upstream_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Translate upstream LC variables to ours, for those not already set.

    Upstream's DaemonSet sets ``NODENAME``, ``GM_ADDRESS`` and ``BIND_PORT``; the same
    manifests keep working when they become ``SEDNA_LC_NODE_NAME``, ``SEDNA_LC_GM_ADDRESS``
    and ``SEDNA_LC_HTTP_PORT``.

    Parameters
    ----------
    environ
        The process environment.

    Returns
    -------
    dict
        Variables to add (never overrides a ``SEDNA_LC_*`` one).
    """
    mapping = {
        "NODENAME": "SEDNA_LC_NODE_NAME",
        "GM_ADDRESS": "SEDNA_LC_GM_ADDRESS",
        "BIND_PORT": "SEDNA_LC_HTTP_PORT",
    }
    return {
        ours: environ[theirs]
        for theirs, ours in mapping.items()
        if environ.get(theirs) and ours not in environ
    }


def gm_target(address: str) -> str:
    """A gRPC target from ``address``; upstream's ``ws://host:port`` form is accepted.

    Raises
    ------
    ValueError
        The address has no host or port.
    """
    text = address.strip()
    if "://" in text:
        parts = urlsplit(text)
        if not parts.hostname or parts.port is None:
            raise ValueError(f"gm_address {address!r}: expected HOST:PORT")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return f"{host}:{parts.port}"
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"gm_address {address!r}: expected HOST:PORT")
    return text


class LocalController:
    """Every long-lived part of the LC.

    Parameters
    ----------
    settings
        The LC's settings (``node_name`` must be set).
    registry
        Prometheus registry for the LC's gauges (the server's).
    wrap_stream
        Optional wrapper around the GM stream (fault injection in tests).
    """

    def __init__(
        self,
        settings: LCSettings,
        registry: CollectorRegistry,
        *,
        wrap_stream: Callable[[LinkStream], LinkStream] | None = None,
    ) -> None:
        if not settings.node_name:
            raise ValueError("node_name (--node-name, SEDNA_LC_NODE_NAME or NODENAME) is required")
        self.settings = settings
        self._wrap_stream = wrap_stream
        data_dir = settings.data_dir.resolve()
        self.state = LocalState(data_dir / STATE_FILE)
        self.link: GMLink | None = None
        self.metrics = LCMetrics(
            registry,
            connected=lambda: self.link is not None and self.link.connected,
            connections=lambda: self.link.connections if self.link is not None else 0,
            outbox_size=lambda: self.outbox.size,
            datasets=lambda: len(self.datasets.keys()),
            workers=lambda: len(self.workers.list_workers()),
            sample_counts=lambda: self.datasets.sample_counts(),  # noqa: PLW0108 - set below
        )
        self.outbox = Outbox(self.state, on_delivered=self.metrics.delivery_lag.observe)
        self.datasets = DatasetMonitor(
            self.outbox,
            data_dir,
            interval=settings.dataset_poll_seconds,
            rootfs=settings.rootfs,
        )
        base_env = {k: os.environ[k] for k in BASE_ENV_KEYS if k in os.environ}
        self.workers = ProcessRuntime(self.outbox, data_dir / "workers", base_env=base_env)
        self.dispatcher = Dispatcher(self.datasets, self.workers)
        self.intake = WorkerReportIntake(self.outbox, owner_lookup=self.workers.owner_of)
        self.http = HttpReportServer(self.intake, settings.http_host, settings.http_port)
        self._channel = ChannelConfig(
            target=gm_target(settings.gm_address),
            token=settings.gm_token,
            ca_file=settings.gm_tls_ca_file,
            keepalive_without_calls=True,
        )

    def node_status(self) -> NodeStatus:
        """The link's view for ``NodeAgentService.GetNodeInfo``."""
        return NodeStatus(
            connected_to_gm=self.link is not None and self.link.connected,
            outbox_size=self.outbox.size,
            resource_count=len(self.datasets.keys()) + len(self.workers.list_workers()),
        )

    async def restore(self) -> int:
        """Open the local state and hand every held object back to its manager.

        Returns
        -------
        int
            How many objects were restored.
        """
        await self.state.open()
        await self.outbox.refresh_size()
        held = await self.state.resources()
        for stored in held:
            await self.dispatcher.apply(stored.obj, stored.credentials)
        return len(held)

    async def connect(self, agent_address: str) -> None:
        """Serve the HTTP report API and start the link to the GM (after the port is bound)."""
        s = self.settings
        try:
            await self.http.start()
        except OSError as exc:
            raise ServerStartError(
                f"cannot bind the worker HTTP API to {s.http_host}:{s.http_port}: {exc}"
            ) from exc
        # Workers on this node report to this LC (upstream contract: LC_SERVER).
        self.workers.base_env["LC_SERVER"] = f"http://{_dialable(s.http_host)}:{self.http.port}"
        self.link = GMLink(
            self._channel,
            self.settings.node_name,
            self.state,
            self.dispatcher,
            outbox=self.outbox,
            config=LinkConfig(
                agent_address=agent_address,
                agent_version=__version__,
                labels=self.settings.hello_labels(),
            ),
            wrap_stream=self._wrap_stream,
        )
        await self.link.start()
        _log.info(
            "LocalController ready",
            extra={
                "node": self.settings.node_name,
                "gm": self._channel.target,
                "http_port": self.http.port,
            },
        )

    async def stop(self) -> None:
        """Stop the link and the report API, then the managers; close the local state."""
        if self.link is not None:
            await self.link.stop()
        await self.http.stop()
        await self.datasets.close()
        await self.workers.close(stop_workers=not self.settings.keep_workers_on_exit)
        await self.state.close()


_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})


def _dialable(host: str) -> str:
    """A host a process on this machine can dial for a server bound to ``host``."""
    return "127.0.0.1" if host in _WILDCARDS else host


def _advertised(host: str) -> str:
    """A host other machines can dial for a server bound to ``host``."""
    return socket.gethostname() if host in _WILDCARDS else host


async def setup(server: ServiceServer, settings: LCSettings) -> LocalController:
    """Build the LC, restore its state and register it on ``server`` (before it starts).

    Raises
    ------
    ServerStartError
        Missing node name, bad GM address or an unusable data directory.
    """
    try:
        lc = LocalController(settings, server.registry)
        restored = await lc.restore()
    except (ValueError, OSError) as exc:
        raise ServerStartError(str(exc)) from exc
    _log.info("restored local state", extra={"objects": restored, "outbox": lc.outbox.size})
    add_lc_servicers(server, lc.intake, lc.workers, settings.node_name, lc.node_status)

    async def connect() -> None:
        host = settings.advertise_host or _advertised(settings.host)
        await lc.connect(f"{host}:{server.port}")

    server.on_startup(connect)
    server.on_shutdown(lc.stop)
    return lc
