"""The MistNet example as a user runs it: its scripts as processes on loopback.

* The example's YAML validates with ``sedna validate``.
* ``aggregate.py`` alone, driven by a probe edge over gRPC: bad uploads are refused naming
  the problem, a good one makes the cloud train and publish, and the worker exits.
* ``run_local.py``: the aggregation worker and three ``train.py`` edges; the cloud-trained
  model beats chance clearly and every edge ends with it.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sedna.service.aggregation_client import SessionConfigConflictError, UpdateRejectedError
from sedna.service.split_learning import SplitLearningClient

pytest.importorskip("torch")
pytest.importorskip("sklearn")

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "federated_learning" / "mistnet"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, process: subprocess.Popen[str], within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0][-3000:]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"aggregate.py did not listen on {port} within {within} s")


@pytest.mark.timeout(900)
def test_example_yaml_validates() -> None:
    sedna = Path(sys.executable).parent / "sedna"
    done = subprocess.run(
        [str(sedna), "validate", "-f", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 valid, 0 invalid" in done.stdout


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_aggregation_worker_refuses_bad_uploads_and_trains_on_good_ones(
    tmp_path: Path,
) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "NAMESPACE": "default",
        "JOB_NAME": "mistnet-e2e",
        "WORKER_NAME": "agg-worker",
        "AGG_BIND_IP": "127.0.0.1",
        "AGG_BIND_PORT": str(port),
        "cut_layer": "3",
        "epsilon": "100",
        "participants_count": "1",
        "exit_round": "1",
        "epochs": "2",
        "MODEL_URL": str(tmp_path / "models" / "mistnet.pth"),
        "OMP_NUM_THREADS": "1",
    }
    worker = subprocess.Popen(
        [sys.executable, "aggregate.py"],
        cwd=EXAMPLE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Generous: importing torch and scikit-learn alone takes minutes on a loaded machine.
        _wait_listening(port, worker, 900)
        with SplitLearningClient("127.0.0.1", port, timeout=60) as probe:
            probe.join("default/mistnet-e2e", "probe", sample_count=20)
            initial = probe.pull(0, timeout=60)
            assert initial.round == 0
            assert len(initial.weights) > 0
            features = np.abs(np.random.default_rng(0).normal(size=(20, 16, 4, 4)))
            labels = np.arange(20, dtype=np.int64) % 10
            with pytest.raises(SessionConfigConflictError, match="cut_layer is 2"):
                probe.upload(1, features, labels, cut_layer=2, epsilon=100)
            with pytest.raises(SessionConfigConflictError, match=r"epsilon is 1\.0"):
                probe.upload(1, features, labels, cut_layer=3, epsilon=1.0)
            bad = features.copy()
            bad[4, 0, 0, 0] = math.inf
            with pytest.raises(UpdateRejectedError, match="'features' holds inf"):
                probe.upload(1, bad, labels, cut_layer=3, epsilon=100)
            # The first accepted batch fixes the features' layout for the session.
            assert probe.upload(1, features[:10], labels[:10], cut_layer=3, epsilon=100) == 10
            with pytest.raises(
                UpdateRejectedError,
                match=r"'features' is float64 \(n, 8, 4, 4\), but the session's features are "
                r"float64 \(n, 16, 4, 4\)",
            ):
                probe.upload(1, features[10:, :8], labels[10:], cut_layer=3, epsilon=100)
            assert probe.upload(1, features[10:], labels[10:], cut_layer=3, epsilon=100) == 20
            result = probe.pull(1, timeout=120)
            assert result.round == 1
            assert result.exit
            assert result.participants == ("probe",)
            assert 0.0 <= result.metrics["eval_accuracy"] <= 1.0
            probe.leave()
        output = worker.communicate(timeout=240)[0]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, output[-3000:]
    summary = next(json.loads(line) for line in output.splitlines() if '"mistnet"' in line)
    assert summary["mistnet"]["samples"] == 20
    assert (tmp_path / "models" / "mistnet.pth").is_file()


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_run_local_trains_the_cloud_part_from_three_edges() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "run_local.py",
            "--epsilon",
            "1000",
            "--epochs",
            "10",
            "--timeout",
            "2000",
            "--json",
        ],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=2300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    job = results["mistnet"]["1000"]
    cloud = job["cloud"]
    assert cloud["participants"] == ["edge-1", "edge-2", "edge-3"]
    assert cloud["eval_accuracy"] > 0.5  # chance is 0.1
    for edge in job["edges"]:
        assert edge["round"] == 1
        assert edge["accuracy"] == pytest.approx(cloud["eval_accuracy"], abs=1e-6)
