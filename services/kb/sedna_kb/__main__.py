"""``sedna-kb``: run the knowledge-base server."""

from __future__ import annotations

from collections.abc import Sequence

from sedna.runtime import ServiceServer
from sedna.runtime.entrypoint import service_main
from sedna_kb.settings import KBSettings

DESCRIPTION = (
    "Knowledge-base server: the lifelong-learning store of tasks, models and samples. Serves "
    "gRPC health, reflection and Prometheus /metrics. The knowledge-base service lands with the"
    " lifelong-learning work."
)


def setup(server: ServiceServer) -> None:
    """Register the knowledge-base server's servicers on ``server``."""
    # The runtime already serves health and reflection; feature servicers are added here.
    del server


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point of ``sedna-kb``."""
    return service_main(KBSettings, setup, prog="sedna-kb", description=DESCRIPTION, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
