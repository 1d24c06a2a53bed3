"""``sedna-lc``: run the LocalController."""

from __future__ import annotations

import os
from collections.abc import Sequence

from sedna.runtime import ServiceServer
from sedna.runtime.entrypoint import service_main
from sedna_lc import app
from sedna_lc.settings import LCSettings

DESCRIPTION = (
    "LocalController: the Sedna node agent. Runs workers on its node, monitors datasets and "
    "relays worker reports to the GlobalManager. Serves gRPC health, reflection and Prometheus "
    "/metrics, the worker report API over gRPC and the upstream HTTP route "
    "POST /sedna/workers/NAME/info. Upstream's NODENAME, GM_ADDRESS and BIND_PORT are honoured."
)


async def setup(server: ServiceServer) -> None:
    """Restore local state and register the LocalController's servicers."""
    settings = server.settings
    if not isinstance(settings, LCSettings):  # pragma: no cover - service_main passes ours
        raise TypeError(f"expected LCSettings, got {type(settings).__name__}")
    await app.setup(server, settings)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point of ``sedna-lc``."""
    os.environ.update(app.upstream_environment(os.environ))
    return service_main(LCSettings, setup, prog="sedna-lc", description=DESCRIPTION, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
