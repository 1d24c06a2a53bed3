"""The issue's "done when", as a new user would do it: ``sedna up``, apply, append, delete.

``sedna up`` runs as a child process exactly as typed in a shell; everything else goes
through the ``sedna`` CLI. Two runs of the stack share one data directory: state survives.

Waiting for a state (nodes connected, a count, a deletion) polls the GlobalManager's gRPC API
that the CLI talks to, which answers in milliseconds where each ``sedna`` command takes a
second or two to start; every state waited for is then read once through the CLI, so what the
user sees is still what is checked.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from sedna.api.gm.v1 import node_service_pb2 as npb
from sedna.api.gm.v1 import node_service_pb2_grpc as npb_grpc
from sedna.api.gm.v1 import resource_service_pb2 as pb
from sedna.api.gm.v1 import resource_service_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

NODES = "cloud,edge-1"
MISSING = -1
"""``Api.samples`` of a Dataset that does not exist."""


class Api:
    """The GlobalManager's gRPC API on ``port``: cheap reads to poll for a state."""

    def __init__(self, port: int) -> None:
        self.target = f"127.0.0.1:{port}"

    def nodes(self) -> list[npb.Node]:
        """The nodes the GM knows ([] while it is not up)."""
        with grpc.insecure_channel(self.target) as channel:
            try:
                reply = npb_grpc.NodeServiceStub(channel).ListNodes(
                    npb.ListNodesRequest(), timeout=2
                )
            except grpc.RpcError:
                return []
        return list(reply.nodes)

    def connected(self) -> list[str]:
        return sorted(node.name for node in self.nodes() if node.connected)

    def resource_count(self, node_name: str) -> int | None:
        return next((n.resource_count for n in self.nodes() if n.name == node_name), None)

    def samples(self, name: str) -> int | None:
        """The Dataset's ``numberOfSamples``: None before it is counted, MISSING once deleted."""
        with grpc.insecure_channel(self.target) as channel:
            try:
                reply = pb_grpc.ResourceServiceStub(channel).Get(
                    pb.GetRequest(kind="Dataset", namespace="default", name=name), timeout=2
                )
            except grpc.RpcError as exc:
                return MISSING if exc.code() == grpc.StatusCode.NOT_FOUND else None
        value = json.loads(reply.resource.status_json or b"{}").get("numberOfSamples")
        return None if value is None else int(value)


class Up:
    """One ``sedna up`` run (Ctrl-C is SIGINT)."""

    def __init__(self, cluster_tools: Any, data_dir: Path, port: int) -> None:
        self.tools = cluster_tools
        self.data_dir = data_dir
        self.port = port
        self.api = Api(port)
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
            return self.api.connected() == ["cloud", "edge-1"]

        self.tools.eventually(nodes_connected, 90, "both nodes connected")
        rows = [line.split() for line in self.sedna("nodes").splitlines()[1:]]
        assert sorted(row[0] for row in rows if row[1:2] == ["yes"]) == ["cloud", "edge-1"], rows

    def wait_samples(self, name: str, count: int, what: str) -> None:
        """Wait until the Dataset is counted ``count`` (or gone, for MISSING)."""
        self.tools.eventually(lambda: self.api.samples(name) == count, 30, what)

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
        up.wait_samples("helmet", 3, "3 samples")
        assert samples(up, "helmet") == 3
        with train.open("a") as f:
            f.write("d.jpg 1\ne.jpg 0\n")
        began = time.monotonic()
        up.wait_samples("helmet", 5, "5 samples")
        print(f"appended lines counted after {time.monotonic() - began:.1f}s")
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
        up.wait_samples("helmet", 6, "6 samples after restart")
        assert samples(up, "helmet") == 6

        assert 'dataset.sedna.io "helmet" deleted' in up.sedna("delete", "dataset", "helmet")
        up.wait_samples("helmet", MISSING, "dataset gone")
        assert "No datasets" in up.sedna("get", "datasets")
        monitor_state = data_dir / "nodes" / "edge-1" / "datasets.json"
        e2e_tools.eventually(
            lambda: json.loads(monitor_state.read_text()) == {}, 30, "edge-1 forgot the dataset"
        )

        e2e_tools.eventually(
            lambda: up.api.resource_count("edge-1") == 0, 30, "edge-1 holds no resources"
        )
        # Split on spaces, "LAST SEEN" and its value ("3s ago") are both two cells.
        header, *rows = [line.split() for line in up.sedna("nodes").splitlines()]
        column = header.index("RESOURCES")
        assert any(row[0] == "edge-1" and row[column] == "0" for row in rows), rows
    finally:
        up.stop()
