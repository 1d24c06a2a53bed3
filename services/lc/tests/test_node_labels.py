"""Node labels: the LC's ``node_labels`` setting, its hello, and placement on the GM side.

The last test runs a real GM hub and a real LocalController over loopback gRPC: the LC
announces its labels, the hub records them, and a worker waiting for a ``gpu: "true"`` node
is placed on it when it connects and runs there.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from sedna.api.gm.v1 import hub_service_pb2, hub_service_pb2_grpc
from sedna.cli.stack import StackError, component_command, plan_stack
from sedna.cli.up import node_labels_option
from sedna.resources.objects import ResourceObject
from sedna.resources.worker import WorkerOwner, WorkerPhaseName, WorkerSpec
from sedna.runtime import ServiceServer, ServiceSettings
from sedna.runtime.entrypoint import parse_settings
from sedna_gm.hub import HubConfig, HubServicer, NodeHub
from sedna_gm.workloads import worker_labels
from sedna_gm.workloads.local import LocalWorkloadRuntime
from sedna_lc.app import LocalController
from sedna_lc.settings import HOSTNAME_LABEL, LCSettings, parse_node_labels

pytestmark = pytest.mark.timeout(60)


# ------------------------------------------------------------------ settings


def test_labels_from_flag_env_and_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings, _ = parse_settings(
        LCSettings,
        ["--node-name", "edge-1", "--node-labels", " zone=a , gpu=true,example.com/tier="],
        "sedna-lc",
        "",
    )
    assert settings.node_labels == {"zone": "a", "gpu": "true", "example.com/tier": ""}
    assert settings.hello_labels() == {**settings.node_labels, HOSTNAME_LABEL: "edge-1"}

    monkeypatch.setenv("SEDNA_LC_NODE_LABELS", '{"gpu": "false", "kubernetes.io/hostname": "e"}')
    assert LCSettings(node_name="e").hello_labels() == {"gpu": "false", HOSTNAME_LABEL: "e"}
    monkeypatch.delenv("SEDNA_LC_NODE_LABELS")

    config = tmp_path / "lc.yaml"
    config.write_text("node_name: edge-2\nnode_labels:\n  gpu: true\n  cores: 16\n")
    settings, _ = parse_settings(LCSettings, ["--config", str(config)], "sedna-lc", "")
    assert settings.node_labels == {"gpu": "true", "cores": "16"}
    assert LCSettings(node_name="n").hello_labels() == {HOSTNAME_LABEL: "n"}


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("zone", "'zone': expected KEY=VALUE"),
        ("=a", "'=a': expected KEY=VALUE"),
        ("{not json", "not a valid JSON object"),
        ("[1]", "'[1]': expected KEY=VALUE"),
        ("bad key=a", "label key 'bad key'"),
        ("Example.com/a=b", "the prefix before '/' must be a DNS subdomain"),
        ("zone=a b", "label zone='a b': a value must be at most 63 characters"),
        (f"zone={'x' * 64}", "a value must be at most 63 characters"),
        ({"zone": ["a"]}, "label 'zone': the value must be a string, not list"),
    ],
)
def test_bad_labels_are_clear_errors(value: Any, error: str) -> None:
    with pytest.raises(ValueError) as info:  # noqa: PT011 - the message is checked below
        parse_node_labels(value)
    assert error in str(info.value)


def test_hostname_label_is_the_node_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValidationError, match="always the node name"):
        LCSettings(node_name="edge-1", node_labels={HOSTNAME_LABEL: "other"})
    assert LCSettings(node_name="edge-1", node_labels={HOSTNAME_LABEL: "edge-1"}).node_labels
    with pytest.raises(SystemExit):
        parse_settings(LCSettings, ["--node-name", "e", "--node-labels", "gpu"], "sedna-lc", "")
    assert "node_labels (--node-labels): 'gpu': expected KEY=VALUE" in capsys.readouterr().err


# ------------------------------------------------------------------ LC -> GM


async def _eventually(check: Callable[[], Any], what: str, within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class _Gm:
    """The GM parts placement needs: the hub and the local runtime behind it."""

    def __init__(self) -> None:
        self.runtime: LocalWorkloadRuntime | None = None

    async def desired_objects(
        self, node_name: str
    ) -> Sequence[tuple[ResourceObject, Mapping[str, str]]]:
        assert self.runtime is not None
        return await self.runtime.desired_objects(node_name)

    async def handle_report(self, node_name: str, report: hub_service_pb2.NodeReport) -> None:
        if report.WhichOneof("payload") == "worker_state" and self.runtime is not None:
            await self.runtime.observe_worker_state(
                node_name, report.worker_state, namespace=report.owner.namespace or None
            )


async def test_lc_announces_labels_and_gets_the_worker_that_needs_them(tmp_path: Path) -> None:
    gm = _Gm()
    hub = NodeHub(gm, gm, HubConfig(heartbeat_seconds=0.5))
    runtime = LocalWorkloadRuntime(hub, nodes=hub)
    gm.runtime = runtime
    server = ServiceServer(
        ServiceSettings(host="127.0.0.1", port=0, metrics_port=None, drain_seconds=1.0)
    )
    server.add_servicer(
        hub_service_pb2_grpc.add_HubServiceServicer_to_server,
        HubServicer(hub),
        "sedna.api.gm.v1.HubService",
    )
    await server.start()

    owner = WorkerOwner(
        api_version="sedna.io/v1alpha1", kind="FederatedLearningJob", name="fl", namespace="ns"
    )
    spec = WorkerSpec(
        owner=owner,
        worker_type="train",
        command=[sys.executable, "-c", "import time; time.sleep(60)"],
        labels=worker_labels(owner, "train"),
        template={"spec": {"containers": [{"name": "t"}], "nodeSelector": {"gpu": "true"}}},
    )
    status = await runtime.ensure_worker("fl-train-abcde", spec)
    assert status.message == (
        "no node matches nodeSelector {gpu: true}: no node has connected to the GlobalManager yet"
    )

    settings = LCSettings(
        node_name="edge-1",
        gm_address=f"127.0.0.1:{server.port}",
        http_port=0,
        metrics_port=None,
        data_dir=tmp_path / "lc",
        node_labels="gpu=true,zone=a",
    )
    lc = LocalController(settings, CollectorRegistry())
    await lc.restore()
    try:
        await lc.connect("127.0.0.1:1")
        info = await _eventually(
            lambda: (node := hub.get_node("edge-1")) is not None and node.connected and node,
            "edge-1 to connect",
        )
        assert dict(info.labels) == {"gpu": "true", "zone": "a", HOSTNAME_LABEL: "edge-1"}

        # The full resync of the new node carried the waiting worker; the LC runs it.
        await _eventually(
            lambda: [w.name for w in lc.workers.list_workers("ns")] == ["fl-train-abcde"],
            "the worker on edge-1",
        )

        async def phase() -> tuple[str, WorkerPhaseName]:
            [s] = await runtime.list_workers(owner)
            return s.node_name, s.phase

        deadline = time.monotonic() + 20
        while await phase() != ("edge-1", WorkerPhaseName.RUNNING):
            assert time.monotonic() < deadline, await phase()
            await asyncio.sleep(0.05)
    finally:
        await lc.stop()
        await hub.close(1.0)
        await server.stop(0)


# ------------------------------------------------------------------ sedna up


def test_sedna_up_passes_each_nodes_labels_to_its_lc(tmp_path: Path) -> None:
    nodes = ["cloud", "edge-1"]
    labels = node_labels_option(["edge-1:gpu=true", "edge-1: zone=a", "cloud:gpu=false"], nodes)
    assert labels == {"edge-1": "gpu=true,zone=a", "cloud": "gpu=false"}
    for bad, error in [
        ("gpu=true", "expected NODE:KEY=VALUE"),
        ("edge-9:gpu=true", "'edge-9' is not one of --nodes (cloud, edge-1)"),
        ("edge-1:gpu", "expected NODE:KEY=VALUE"),
        ("edge-1:", "expected NODE:KEY=VALUE"),
    ]:
        with pytest.raises(StackError) as info:
            node_labels_option([bad], nodes)
        assert error in str(info.value)

    plan = plan_stack(tmp_path, nodes, 0)
    plan.node_labels = {"edge-1": "gpu=true,zone=a"}
    by_node = {c.node: c for c in plan.components if c.role == "lc"}
    edge_args = component_command(plan, by_node["edge-1"])[1:]
    assert edge_args[-2:] == ["--node-labels", "gpu=true,zone=a"]
    settings, _ = parse_settings(LCSettings, edge_args, "sedna-lc", "")
    assert settings.hello_labels() == {"gpu": "true", "zone": "a", HOSTNAME_LABEL: "edge-1"}
    assert "--node-labels" not in component_command(plan, by_node["cloud"])
