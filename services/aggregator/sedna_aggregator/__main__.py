"""``sedna-aggregator``: run the aggregation server."""

from __future__ import annotations

from collections.abc import Sequence

from sedna.runtime import ServiceServer
from sedna.runtime.entrypoint import service_main
from sedna_aggregator import app
from sedna_aggregator.settings import AggregatorSettings

DESCRIPTION = (
    "Aggregation server: federated-learning sessions, rounds and weight aggregation (FedAvg and"
    " friends). Serves sedna.api.aggregator.v1.AggregationService with gRPC health, reflection"
    " and Prometheus /metrics; checkpoints to --checkpoint-dir so a restart resumes the jobs."
)


def setup(server: ServiceServer) -> None:
    """Register the aggregation server's servicers on ``server``."""
    settings = server.settings
    if not isinstance(settings, AggregatorSettings):  # pragma: no cover - service_main passes ours
        raise TypeError(f"expected AggregatorSettings, got {type(settings).__name__}")
    app.setup(server, settings)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point of ``sedna-aggregator``."""
    return service_main(
        AggregatorSettings, setup, prog="sedna-aggregator", description=DESCRIPTION, argv=argv
    )


if __name__ == "__main__":
    raise SystemExit(main())
