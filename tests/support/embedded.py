"""The GM and one LC as the services assemble them, in the test's event loop, on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sedna.runtime import ServiceServer
from sedna_gm.app import GlobalManager
from sedna_gm.settings import GMSettings
from sedna_lc.app import LocalController
from sedna_lc.settings import LCSettings

__all__ = ["Embedded", "embedded_stack"]

_SERVER = {"host": "127.0.0.1", "port": 0, "metrics_port": None, "drain_seconds": 1}


@dataclass
class Embedded:
    """The running pair: the GM core and its server, the LC core."""

    gm: GlobalManager
    gm_server: ServiceServer
    lc: LocalController

    @property
    def gm_address(self) -> str:
        return f"127.0.0.1:{self.gm_server.port}"


@asynccontextmanager
async def embedded_stack(
    tmp_path: Path,
    *,
    node: str = "edge-1",
    wrap_stream: Callable[[Any], Any] | None = None,
    lc_values: dict[str, Any] | None = None,
    **gm_values: Any,
) -> AsyncIterator[Embedded]:
    """Start a GM (SQLite in ``tmp_path`` unless ``gm_values`` say otherwise) and one LC.

    Parameters
    ----------
    tmp_path
        Where the GM database and the LC's data directory go.
    node
        The LC's node name.
    wrap_stream
        Wrapper around every node stream on the GM side (fault injection).
    lc_values
        LC settings overriding the test defaults.
    gm_values
        GM settings overriding the test defaults (fast heartbeats, SQLite).
    """
    gm_settings = GMSettings(
        **{
            **_SERVER,
            "log_format": "console",
            "store_url": f"sqlite:///{tmp_path / 'gm.db'}",
            "heartbeat_seconds": 0.2,
            **gm_values,
        }
    )
    gm_server = ServiceServer(gm_settings)
    gm = GlobalManager(gm_settings, gm_server.registry)
    await gm.start()
    gm.register(gm_server, wrap_stream=wrap_stream)
    await gm_server.start()
    lc_settings = LCSettings(
        **{
            **_SERVER,
            "log_format": "console",
            "node_name": node,
            "gm_address": f"127.0.0.1:{gm_server.port}",
            "http_port": 0,
            "data_dir": tmp_path / "lc",
            "dataset_poll_seconds": 0.2,
            **(lc_values or {}),
        }
    )
    lc_server = ServiceServer(lc_settings)
    lc = LocalController(lc_settings, lc_server.registry)
    await lc.restore()
    await lc_server.start()
    await lc.connect(f"127.0.0.1:{lc_server.port}")
    try:
        yield Embedded(gm, gm_server, lc)
    finally:
        await lc.stop()
        await lc_server.stop(0)
        await gm_server.stop(0)
        await gm.stop()
