"""Edge worker of the digits joint-inference example, written as upstream users write them.

The little model (ONNX) classifies every sample of the test dataset; the hard-example-mining
rule from the JointInferenceService (``HEM_NAME``/``HEM_PARAMETERS``, CrossEntropy here) picks
the uncertain ones and ``JointInference`` sends those to the big model in the cloud. One JSON
line per sample goes to ``output_url``::

    {"index": 0, "true_label": 3, "edge_label": 3, "final_label": 3, "cloud_label": null,
     "is_hard": false, "latency_ms": 0.41}

``cloud_label`` is null for samples kept at the edge, and for hard samples whose cloud call
failed (the edge result is used then). Lines already in ``output_url`` are not inferred again
(a restarted worker resumes); rows appended to the dataset later are inferred as they come,
until the worker is stopped (SIGTERM).

User parameters (container env, read with ``Context.get_parameters``): ``dataset_url``
(CSV ``label,p0..p63``), ``output_url``, ``cloud_wait_seconds`` (wait that long for the big
model to be ready before the first sample; 0: don't) and ``poll_seconds``.
"""

from __future__ import annotations

import csv
import json
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from sedna.common.config import Context
from sedna.core.joint_inference import JointInference

LOG = logging.getLogger("digits-edge")

dataset_url = Context.get_parameters("dataset_url", "test.csv")
output_url = Context.get_parameters("output_url", "results.jsonl")
cloud_wait_seconds = float(Context.get_parameters("cloud_wait_seconds", "0"))
poll_seconds = float(Context.get_parameters("poll_seconds", "1"))

IMAGE_SHAPE = (8, 8)


class Estimator:
    """The little model: an ONNX Runtime session on the CPU."""

    def __init__(self, **kwargs: Any) -> None:
        self.session: Any = None
        self.input_name = "image"

    def load(self, model_url: str = "", **kwargs: Any) -> None:
        """Load the ONNX file at ``model_url`` (``MODEL_URL`` of the edge model)."""
        import onnxruntime as ort  # noqa: PLC0415

        self.session = ort.InferenceSession(model_url, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, data: Any, **kwargs: Any) -> np.ndarray:
        """Class probabilities ``[10]`` of one 8x8 image."""
        image = np.asarray(data, dtype=np.float32).reshape(1, *IMAGE_SHAPE)
        return np.asarray(self.session.run(None, {self.input_name: image})[0][0])


def label_of(result: Any) -> int | None:
    """The predicted class of a probability vector (None for no result)."""
    if result is None:
        return None
    scores = np.asarray(result, dtype=np.float64).reshape(-1)
    return int(np.argmax(scores)) if scores.size else None


def read_rows(path: Path, start: int) -> list[tuple[int, int, np.ndarray]]:
    """``(index, label, image)`` of the dataset rows from ``start`` on (header excluded)."""
    rows: list[tuple[int, int, np.ndarray]] = []
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for index, row in enumerate(reader):
            if index < start or not row:
                continue
            pixels = np.asarray([float(v) for v in row[1:]], dtype=np.float32)
            if pixels.size != IMAGE_SHAPE[0] * IMAGE_SHAPE[1]:
                break  # a row still being written: read it next time
            rows.append((index, int(row[0]), pixels.reshape(IMAGE_SHAPE)))
    return rows


def done_indices(path: Path) -> set[int]:
    """Indices already in the output file (a torn last line is ignored)."""
    done: set[int] = set()
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                done.add(int(json.loads(line)["index"]))
            except (ValueError, KeyError, TypeError):
                continue
    return done


def wait_for_cloud(seconds: float, stop: threading.Event) -> bool:
    """Wait until the big model answers ModelReady, at most ``seconds``."""
    from sedna.service.oip_client import InferenceClient  # noqa: PLC0415

    host = Context.get_parameters("BIG_MODEL_IP", "127.0.0.1")
    port = int(Context.get_parameters("BIG_MODEL_PORT", "5000"))
    name = (
        Context.get_parameters("BIG_MODEL_NAME")
        or Context.get_parameters("SERVICE_NAME")
        or Context.get_parameters("JOB_NAME", "")
    )
    deadline = time.monotonic() + seconds
    with InferenceClient(host, port, name, timeout=2.0) as client:
        while not stop.is_set():
            try:
                if client.ready(timeout=2.0):
                    LOG.info("big model %r ready at %s:%d", name, host, port)
                    return True
            except Exception as err:
                LOG.debug("big model not ready yet: %s", err)
            if time.monotonic() >= deadline:
                break
            stop.wait(0.2)
    LOG.warning("big model %r at %s:%d not ready after %gs", name, host, port, seconds)
    return False


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    hard_example_mining = JointInference.get_hem_algorithm_from_config()
    inference_instance = JointInference(
        estimator=Estimator, hard_example_mining=hard_example_mining
    )
    if cloud_wait_seconds > 0:
        wait_for_cloud(cloud_wait_seconds, stop)

    dataset, output = Path(dataset_url), Path(output_url)
    output.parent.mkdir(parents=True, exist_ok=True)
    done = done_indices(output)
    LOG.info(
        "edge worker: %s -> %s (%d already done), HEM %s",
        dataset,
        output,
        len(done),
        hard_example_mining,
    )
    inferred = hard = 0
    next_row = 0
    while not stop.is_set():
        for index, label, image in read_rows(dataset, next_row):
            next_row = index + 1
            if index in done:
                continue
            began = time.perf_counter()
            is_hard, final_result, edge_result, cloud_result = inference_instance.inference(image)
            latency_ms = (time.perf_counter() - began) * 1000.0
            record = {
                "index": index,
                "true_label": label,
                "edge_label": label_of(edge_result),
                "final_label": label_of(final_result),
                "cloud_label": label_of(cloud_result),
                "is_hard": bool(is_hard),
                "latency_ms": round(latency_ms, 3),
            }
            with output.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            done.add(index)
            inferred += 1
            hard += bool(is_hard)
            if inferred % 100 == 0:
                LOG.info("inferred %d samples, %d hard", inferred, hard)
            if stop.is_set():
                break
        stop.wait(poll_seconds)
    LOG.info("stopping: inferred %d samples this run, %d hard", inferred, hard)


if __name__ == "__main__":
    main()
