"""``sedna-gm``: run the GlobalManager."""

from __future__ import annotations

from collections.abc import Sequence

from sedna.runtime import ServiceServer
from sedna.runtime.entrypoint import service_main
from sedna_gm.settings import GMSettings

DESCRIPTION = (
    "GlobalManager: the Sedna operator. Reconciles the sedna.io/v1alpha1 resources and hosts "
    "the hub that LocalControllers connect to. Serves gRPC health, reflection and Prometheus "
    "/metrics. The resource API, controllers and LC hub land with the control-plane work."
)


def setup(server: ServiceServer) -> None:
    """Register the GlobalManager's servicers on ``server``."""
    # The runtime already serves health and reflection; feature servicers are added here.
    del server


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point of ``sedna-gm``."""
    return service_main(GMSettings, setup, prog="sedna-gm", description=DESCRIPTION, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
