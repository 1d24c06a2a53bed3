"""Cloud worker of the digits joint-inference example, upstream style (``BigModelService``).

``BigModelService(estimator=Estimator).start()`` loads the big model from ``MODEL_URL`` and
serves it over the Open Inference Protocol (gRPC) on ``BIG_MODEL_BIND_IP:BIG_MODEL_BIND_PORT``
under the service's name, which is where the edge's ``JointInference`` sends hard examples.

The example's manifest serves the same model with ``sedna-inference`` instead (see README.md);
``prepare.py --cloud-worker script`` (or ``sedna demo joint-inference --cloud-worker script``)
runs this script.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from sedna.core.joint_inference import BigModelService

IMAGE_SHAPE = (8, 8)


class Estimator:
    """The big model: ONNX (``.onnx``, ONNX Runtime) or TorchScript (``.pt``), on the CPU."""

    def __init__(self, **kwargs: Any) -> None:
        self.run: Any = None

    def load(self, model_url: str = "", **kwargs: Any) -> None:
        """Load ``model_url`` (``MODEL_URL`` of the cloud model)."""
        if Path(model_url).suffix in {".pt", ".pth"}:
            import torch  # noqa: PLC0415

            module = torch.jit.load(model_url, map_location="cpu").eval()

            def run_torch(images: np.ndarray) -> np.ndarray:
                with torch.inference_mode():
                    return np.asarray(module(torch.from_numpy(images)).numpy())

            self.run = run_torch
        else:
            import onnxruntime as ort  # noqa: PLC0415

            session = ort.InferenceSession(model_url, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name

            def run_onnx(images: np.ndarray) -> np.ndarray:
                return np.asarray(session.run(None, {name: images})[0])

            self.run = run_onnx

    def predict(self, data: Any, **kwargs: Any) -> np.ndarray:
        """Class probabilities: ``[10]`` for one 8x8 image, ``[N, 10]`` for ``[N, 8, 8]``."""
        images = np.asarray(data, dtype=np.float32)
        single = images.ndim == len(IMAGE_SHAPE)
        probabilities = np.asarray(self.run(images.reshape(-1, *IMAGE_SHAPE)), np.float32)
        return probabilities[0] if single else probabilities


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    BigModelService(estimator=Estimator).start()


if __name__ == "__main__":
    main()
