"""Run the MistNet example on this machine: plain processes on loopback, no Kubernetes.

For each ``--epsilon``: one aggregation worker (``aggregate.py``) and ``EDGES`` edges
(``train.py -i N``) with the environment a FederatedLearningJob would give them; then the
baseline, the same CNN trained on edge 1's split alone. Prints a table of test accuracies
and, with ``--json``, one JSON object.

    python run_local.py --epsilon 100 300 1000
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, process: subprocess.Popen[str], deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the aggregation worker exited early: {process.communicate()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"the aggregation worker did not listen on {port} in time")


def _last_json(output: str, key: str) -> dict[str, Any]:
    for line in reversed(output.splitlines()):
        if line.startswith("{") and key in line:
            value: dict[str, Any] = json.loads(line)
            return value
    raise RuntimeError(f"no {key!r} line in:\n{output[-3000:]}")


def run_mistnet(
    epsilon: float, *, edges: int, epochs: int, learning_rate: float, timeout: float
) -> dict[str, Any]:
    """One job: the cloud's final metrics and each edge's test accuracy."""
    port = _free_port()
    env = {
        **os.environ,
        "NAMESPACE": "default",
        "JOB_NAME": "mistnet-digits",
        "AGG_BIND_IP": "127.0.0.1",
        "AGG_BIND_PORT": str(port),
        "AGG_IP": "127.0.0.1",
        "AGG_PORT": str(port),
        "epsilon": str(epsilon),
        "exit_round": "1",
        "epochs": str(epochs),
        "learning_rate": str(learning_rate),
        "participants_count": str(edges),
        "CONNECT_TIMEOUT": str(timeout),
        "ROUND_WAIT_TIMEOUT": str(timeout),
        "OMP_NUM_THREADS": "1",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("LC_SERVER", None)
    deadline = time.monotonic() + timeout
    cloud = subprocess.Popen(
        [sys.executable, "aggregate.py"],
        cwd=HERE,
        env={**env, "WORKER_NAME": "agg-worker"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    workers: list[subprocess.Popen[str]] = []
    try:
        _wait_port(port, cloud, deadline)
        workers = [
            subprocess.Popen(
                [sys.executable, "train.py", "-i", str(i)],
                cwd=HERE,
                env={**env, "WORKER_NAME": f"edge-{i}"},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for i in range(1, edges + 1)
        ]
        outputs = [w.communicate(timeout=max(1.0, deadline - time.monotonic()))[0] for w in workers]
        cloud_out = cloud.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
    finally:
        for process in (*workers, cloud):
            if process.poll() is None:
                process.kill()
                process.wait()
    for worker, out in zip(workers, outputs, strict=True):
        if worker.returncode != 0:
            raise RuntimeError(f"an edge failed ({worker.returncode}):\n{out[-3000:]}")
    if cloud.returncode != 0:
        raise RuntimeError(
            f"the aggregation worker failed ({cloud.returncode}):\n{cloud_out[-3000:]}"
        )
    return {
        "cloud": _last_json(cloud_out, "mistnet")["mistnet"],
        "edges": [_last_json(out, "edge") for out in outputs],
    }


def run_baseline(*, epochs: int, learning_rate: float) -> float:
    """Test accuracy of the CNN trained on edge 1's split alone."""
    sys.path.insert(0, str(HERE))
    import mistnet_digits as digits  # noqa: PLC0415 - this folder's module

    x, y = digits.edge_split(1)
    model = digits.build_model()
    digits.train_locally(model, x, y, epochs=epochs, learning_rate=learning_rate)
    return float(digits.accuracy(model, *digits.test_split()))


def main() -> None:
    """Parse the arguments, run, print."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--epsilon",
        nargs="+",
        default=["100", "300", "1000"],
        help="privacy budgets to run MistNet with",
    )
    parser.add_argument("--edges", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30, help="cloud epochs per round")
    parser.add_argument("--learning-rate", type=float, default=0.005)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per job")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    results: dict[str, Any] = {"mistnet": {}}
    for value in args.epsilon:
        eps = float(value)
        results["mistnet"][value] = run_mistnet(
            eps,
            edges=args.edges,
            epochs=args.epochs,
            learning_rate=args.learning_rate,
            timeout=args.timeout,
        )
    results["edge_1_alone"] = run_baseline(epochs=args.epochs, learning_rate=0.05)
    if args.json:
        print(json.dumps(results))
        return
    print(f"{'model':<40} test accuracy")
    for value, result in results["mistnet"].items():
        cloud = result["cloud"]
        label = f"MistNet, {args.edges} edges, epsilon={value}"
        print(f"{label:<40} {cloud['eval_accuracy']:.3f}")
    print(f"{'edge 1 alone (no privacy noise)':<40} {results['edge_1_alone']:.3f}")


if __name__ == "__main__":
    main()
