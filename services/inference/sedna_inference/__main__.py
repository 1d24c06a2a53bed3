"""``sedna-inference``: run the inference server."""

from __future__ import annotations

from collections.abc import Sequence

from sedna.runtime import ServiceServer
from sedna.runtime.entrypoint import service_main
from sedna_inference.settings import InferenceSettings

DESCRIPTION = (
    "Inference server: serves big models over the Open Inference Protocol (KServe v2) for joint"
    " inference. Serves gRPC health, reflection and Prometheus /metrics. The Open Inference "
    "Protocol service lands with the joint-inference work."
)


def setup(server: ServiceServer) -> None:
    """Register the inference server's servicers on ``server``."""
    # The runtime already serves health and reflection; feature servicers are added here.
    del server


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point of ``sedna-inference``."""
    return service_main(
        InferenceSettings, setup, prog="sedna-inference", description=DESCRIPTION, argv=argv
    )


if __name__ == "__main__":
    raise SystemExit(main())
