"""``sedna-inference``: run the inference server."""

from __future__ import annotations

from collections.abc import Sequence

from sedna.runtime import ServiceServer
from sedna.runtime.entrypoint import service_main
from sedna_inference import app
from sedna_inference.settings import InferenceSettings

DESCRIPTION = (
    "Inference server: serves big models over the Open Inference Protocol (KServe v2) for joint"
    " inference. Serves gRPC health, reflection and Prometheus /metrics, and the Open Inference "
    "Protocol service inference.GRPCInferenceService for --model-name/--model-path (ONNX, "
    "TorchScript, TensorFlow SavedModel or Keras), or for MODEL_URL as a cloud worker."
)


async def setup(server: ServiceServer) -> None:
    """Register the inference server's servicers on ``server`` and load its model."""
    settings = server.settings
    if not isinstance(settings, InferenceSettings):  # pragma: no cover - service_main passes ours
        raise TypeError(f"expected InferenceSettings, got {type(settings).__name__}")
    await app.setup(server, settings)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point of ``sedna-inference``."""
    return service_main(
        InferenceSettings, setup, prog="sedna-inference", description=DESCRIPTION, argv=argv
    )


if __name__ == "__main__":
    raise SystemExit(main())
