"""Settings for gRPC servers that tests start on loopback."""

from __future__ import annotations

from typing import Any

from sedna.runtime import ServiceSettings

__all__ = ["loopback_settings"]


def loopback_settings(**values: Any) -> ServiceSettings:
    """Settings of a server on 127.0.0.1 with a free port (``port=0``): no metrics endpoint,
    a one-second drain and console logs, unless ``values`` say otherwise."""
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": None,
        "drain_seconds": 1.0,
        "log_format": "console",
    }
    base.update(values)
    return ServiceSettings(**base)
