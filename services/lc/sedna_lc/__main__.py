"""``sedna-lc``: run the LocalController."""

from __future__ import annotations

from collections.abc import Sequence

from sedna.runtime import ServiceServer
from sedna.runtime.entrypoint import service_main
from sedna_lc.settings import LCSettings

DESCRIPTION = (
    "LocalController: the Sedna node agent. Runs workers on its node, monitors datasets and "
    "relays worker reports to the GlobalManager. Serves gRPC health, reflection and Prometheus "
    "/metrics. The worker report API, dataset monitor and GM link land with the control-plane "
    "work."
)


def setup(server: ServiceServer) -> None:
    """Register the LocalController's servicers on ``server``."""
    # The runtime already serves health and reflection; feature servicers are added here.
    del server


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point of ``sedna-lc``."""
    return service_main(LCSettings, setup, prog="sedna-lc", description=DESCRIPTION, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
