"""An edge worker script written for upstream Sedna runs unchanged (in its own process)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

# Upstream style: module-level Context parameters, an estimator class with load/predict,
# JointInference.get_hem_algorithm_from_config, the 4-element inference result.
WORKER = textwrap.dedent(
    """
    import json

    import numpy as np

    from sedna.common.config import Context
    from sedna.core.joint_inference import JointInference

    threshold = float(Context.get_parameters("hem_threshold", 0.7))
    samples_url = Context.get_parameters("samples_url")
    result_output = Context.get_parameters("result_output")


    class Estimator:
        def __init__(self, **kwargs):
            self.coef = None
            self.intercept = None

        def load(self, model_url=""):
            with np.load(model_url) as data:
                self.coef = data["coef"]
                self.intercept = data["intercept"]

        def predict(self, data, **kwargs):
            logits = np.asarray(data).reshape(1, -1) @ self.coef.T + self.intercept
            e = np.exp(logits - logits.max())
            return (e / e.sum())[0]


    def output_deal(is_hard_example, final_result, edge_result, cloud_result):
        return {
            "hard": bool(is_hard_example),
            "final": int(np.argmax(final_result)),
            "edge": int(np.argmax(edge_result)),
            "cloud": None if cloud_result is None else int(np.argmax(cloud_result)),
        }


    def main():
        hard_example_mining = JointInference.get_hem_algorithm_from_config(
            threshold_cross_entropy=threshold
        )
        inference_instance = JointInference(
            estimator=Estimator, hard_example_mining=hard_example_mining
        )
        results = []
        for sample in np.load(samples_url):
            is_hard_example, final_result, edge_result, cloud_result = (
                inference_instance.inference(sample)
            )
            results.append(output_deal(is_hard_example, final_result, edge_result, cloud_result))
        with open(result_output, "w") as out:
            json.dump(results, out)


    if __name__ == "__main__":
        main()
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path, Callable[[Any], Any], np.ndarray[Any, Any]]:
    data = load_digits()
    x, y = (data.data / 16.0).astype(np.float32), data.target
    root = tmp_path_factory.mktemp("worker")
    little = LogisticRegression(max_iter=300).fit(x[:60], y[:60])
    model = root / "little.npz"
    np.savez(model, coef=little.coef_, intercept=little.intercept_)
    big = LogisticRegression(max_iter=300).fit(x[:1500], y[:1500])
    samples = root / "samples.npy"
    np.save(samples, x[1500:1540])
    return model, samples, big.predict_proba, y[1500:1540]


def run_worker(tmp_path: Path, model: Path, samples: Path, port: int) -> list[dict[str, Any]]:
    script = tmp_path / "inference.py"
    script.write_text(WORKER)
    output = tmp_path / "results.json"
    env = {
        **os.environ,
        "BACKEND_TYPE": "SKLEARN",
        "MODEL_URL": str(model),
        "SERVICE_NAME": "digits",
        "WORKER_NAME": "digits-edge-abcde",
        "NAMESPACE": "default",
        "LC_SERVER": f"http://127.0.0.1:{free_port()}",
        "BIG_MODEL_IP": "127.0.0.1",
        "BIG_MODEL_PORT": str(port),
        "CLOUD_INFERENCE_TIMEOUT": "2",
        "HEM_NAME": "CrossEntropy",
        "HEM_PARAMETERS": json.dumps([{"key": "threshold_cross_entropy", "value": "0.5"}]),
        "hem_threshold": "0.3",
        "samples_url": str(samples),
        "result_output": str(output),
    }
    done = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(output.read_text())  # type: ignore[no-any-return]


def test_upstream_worker_offloads_hard_examples(
    trained: tuple[Path, Path, Callable[[Any], Any], np.ndarray[Any, Any]],
    cloud_server: Callable[..., Any],
    tmp_path: Path,
) -> None:
    model, samples, big_model, labels = trained
    server = cloud_server(big_model, features=64)
    results = run_worker(tmp_path, model, samples, server.port)
    assert len(results) == len(labels)
    hard = [r for r in results if r["hard"]]
    assert 0 < len(hard) < len(results)  # the script's threshold (0.3) overrides HEM_PARAMETERS
    assert all(r["cloud"] is not None and r["final"] == r["cloud"] for r in hard)
    assert all(r["cloud"] is None and r["final"] == r["edge"] for r in results if not r["hard"])
    assert server.calls == len(hard)
    joint = sum(r["final"] == label for r, label in zip(results, labels, strict=True))
    edge = sum(r["edge"] == label for r, label in zip(results, labels, strict=True))
    assert joint > edge


def test_upstream_worker_survives_a_missing_cloud(
    trained: tuple[Path, Path, Callable[[Any], Any], np.ndarray[Any, Any]], tmp_path: Path
) -> None:
    model, samples, _, _ = trained
    results = run_worker(tmp_path, model, samples, free_port())
    assert any(r["hard"] for r in results)
    assert all(r["cloud"] is None and r["final"] == r["edge"] for r in results)
