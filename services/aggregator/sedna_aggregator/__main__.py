"""``sedna-aggregator``: run the aggregation server."""

from __future__ import annotations

from collections.abc import Sequence

from sedna.runtime import ServiceServer
from sedna.runtime.entrypoint import service_main
from sedna_aggregator.settings import AggregatorSettings

DESCRIPTION = (
    "Aggregation server: federated-learning sessions, rounds and weight aggregation (FedAvg and"
    " friends). Serves gRPC health, reflection and Prometheus /metrics. The aggregation service"
    " lands with the federated-learning work."
)


def setup(server: ServiceServer) -> None:
    """Register the aggregation server's servicers on ``server``."""
    # The runtime already serves health and reflection; feature servicers are added here.
    del server


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point of ``sedna-aggregator``."""
    return service_main(
        AggregatorSettings, setup, prog="sedna-aggregator", description=DESCRIPTION, argv=argv
    )


if __name__ == "__main__":
    raise SystemExit(main())
