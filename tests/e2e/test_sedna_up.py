"""The issue's "done when", as a new user would do it: ``sedna up``, apply, append, delete.

``sedna up`` runs as a child process exactly as typed in a shell; everything else goes
through the ``sedna`` CLI. Two runs of the stack share one data directory: state survives.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

NODES = "cloud,edge-1"


class Up:
    """One ``sedna up`` run (Ctrl-C is SIGINT)."""

    def __init__(self, cluster_tools: Any, data_dir: Path, port: int) -> None:
        self.tools = cluster_tools
        self.data_dir = data_dir
        self.port = port
        self.log = (data_dir.parent / "up.log").open("ab")
        self.process = subprocess.Popen(
            [
                self.tools.script("sedna"),
                "up",
                "--nodes",
                NODES,
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**self.tools.clean_env(), "COLUMNS": "200"},
        )

    def sedna(self, *args: str) -> str:
        result = subprocess.run(
            [self.tools.script("sedna"), *args, "--server", f"127.0.0.1:{self.port}"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**self.tools.clean_env(), "COLUMNS": "200"},
            check=False,
        )
        assert result.returncode == 0, f"sedna {args}: {result.stdout}\n{result.stderr}"
        # Tables and JSON go to stdout; notes such as "No datasets found" to stderr.
        return result.stdout + result.stderr

    def wait_ready(self) -> None:
        def nodes_connected() -> bool:
            assert self.process.poll() is None, "sedna up exited early"
            try:
                table = self.sedna("nodes")
            except AssertionError:
                return False
            rows = [line.split() for line in table.splitlines()[1:]]
            return sorted(row[0] for row in rows if row[1:2] == ["yes"]) == ["cloud", "edge-1"]

        self.tools.eventually(nodes_connected, 90, "both nodes connected")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        assert self.process.wait(timeout=90) == 0
        self.log.close()


def samples(up: Up, name: str) -> int | None:
    data = json.loads(up.sedna("get", "datasets", name, "-o", "json"))
    value = data.get("status", {}).get("numberOfSamples")
    return None if value is None else int(value)


def test_dataset_lifecycle_through_sedna_up(tmp_path: Path, e2e_tools: Any) -> None:
    data_dir = tmp_path / ".sedna"
    port = e2e_tools.free_port()
    train = tmp_path / "train.txt"
    train.write_text("a.jpg 0\nb.jpg 1\nc.jpg 0\n")
    manifest = tmp_path / "dataset.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "sedna.io/v1alpha1",
                "kind": "Dataset",
                "metadata": {"name": "helmet"},
                "spec": {"url": str(train), "format": "txt", "nodeName": "edge-1"},
            }
        )
    )

    up = Up(e2e_tools, data_dir, port)
    try:
        up.wait_ready()
        assert "created" in up.sedna("apply", "-f", str(manifest))
        e2e_tools.eventually(lambda: samples(up, "helmet") == 3, 30, "3 samples")
        with train.open("a") as f:
            f.write("d.jpg 1\ne.jpg 0\n")
        began = time.monotonic()
        e2e_tools.eventually(lambda: samples(up, "helmet") == 5, 30, "5 samples")
        print(f"appended lines visible in `sedna get` after {time.monotonic() - began:.1f}s")
        table = up.sedna("get", "datasets")
        assert table.split("\n")[0].split()[:5] == ["NAME", "NODE", "FORMAT", "SAMPLES", "PHASE"]
        assert table.split("\n")[1].split()[:5] == ["helmet", "edge-1", "txt", "5", "Ready"]
    finally:
        up.stop()

    # A second run on the same data directory: the object, its status and the monitor survive.
    up = Up(e2e_tools, data_dir, port)
    try:
        up.wait_ready()
        assert samples(up, "helmet") == 5
        with train.open("a") as f:
            f.write("f.jpg 1\n")
        e2e_tools.eventually(lambda: samples(up, "helmet") == 6, 30, "6 samples after restart")

        assert 'dataset.sedna.io "helmet" deleted' in up.sedna("delete", "dataset", "helmet")
        e2e_tools.eventually(
            lambda: "No datasets" in up.sedna("get", "datasets"), 30, "dataset gone"
        )
        monitor_state = data_dir / "nodes" / "edge-1" / "datasets.json"
        e2e_tools.eventually(
            lambda: json.loads(monitor_state.read_text()) == {}, 30, "edge-1 forgot the dataset"
        )

        def edge_holds_nothing() -> bool:
            rows = [line.split() for line in up.sedna("nodes").splitlines()[1:]]
            return any(row[0] == "edge-1" and row[4] == "0" for row in rows)

        e2e_tools.eventually(edge_holds_nothing, 30, "edge-1 holds no resources")
    finally:
        up.stop()
