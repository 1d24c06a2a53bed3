"""``sedna-gm``: run the GlobalManager."""

from __future__ import annotations

from collections.abc import Sequence

from sedna.runtime import ServiceServer
from sedna.runtime.entrypoint import service_main
from sedna_gm import app
from sedna_gm.settings import GMSettings

DESCRIPTION = (
    "GlobalManager: the Sedna operator. Reconciles the sedna.io/v1alpha1 resources and hosts "
    "the hub that LocalControllers connect to. Serves gRPC health, reflection and Prometheus "
    "/metrics, the resource API (apply/get/list/watch/delete), the node hub and directory."
)


async def setup(server: ServiceServer) -> None:
    """Open the store, start the controllers and register the GM's servicers."""
    settings = server.settings
    if not isinstance(settings, GMSettings):  # pragma: no cover - service_main passes ours
        raise TypeError(f"expected GMSettings, got {type(settings).__name__}")
    await app.setup(server, settings)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point of ``sedna-gm``."""
    return service_main(GMSettings, setup, prog="sedna-gm", description=DESCRIPTION, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
