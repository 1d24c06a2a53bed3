"""The GM in Kubernetes mode: resources in an (emulated) API server, a real LC on a node.

The same GlobalManager the ``sedna-gm`` command runs, configured with
``--store-url kubernetes:///KUBECONFIG --runtime kubernetes``, against a Kubernetes API
emulator on loopback with the repository's CRDs; a LocalController connects to its hub. A
Dataset applied through the GM's ResourceService reaches the node, its sample count lands in
the custom resource's status subresource, and deleting it releases the finalizer.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from support import k8s_emulator
from support.embedded import embedded_stack

from sedna.api.gm.v1 import resource_service_pb2 as pb
from sedna.api.gm.v1 import resource_service_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
CRDS = sorted((REPO / "crds").glob("sedna.io_*.yaml"))


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.1)


async def test_dataset_round_trip_with_resources_in_kubernetes(tmp_path: Path) -> None:
    async with k8s_emulator.emulated_api_server(crds=CRDS, namespaces=("default",)) as cluster:
        config = k8s_emulator.write_kubeconfig(tmp_path / "kubeconfig", cluster.host)
        stack = embedded_stack(
            tmp_path,
            store_url=f"kubernetes://{config}",
            runtime="kubernetes",
            kubeconfig=config,
            hub_state_url=f"sqlite:///{tmp_path / 'hub.db'}",
            heartbeat_seconds=0.5,
        )
        async with stack as running, grpc.aio.insecure_channel(running.gm_address) as channel:
            await dataset_round_trip(
                running.gm, running.lc, pb_grpc.ResourceServiceStub(channel), tmp_path
            )


async def dataset_round_trip(gm: Any, lc: Any, api: Any, tmp_path: Path) -> None:
    """Apply a Dataset, grow its file, read the status back, delete it."""
    samples = tmp_path / "train.csv"
    samples.write_text("image,label\na.jpg,0\nb.jpg,1\n")
    manifest = {
        "apiVersion": "sedna.io/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": "helmet", "namespace": "default"},
        "spec": {"url": str(samples), "format": "csv", "nodeName": "edge-1"},
    }
    await api.Apply(pb.ApplyRequest(manifest_json=json.dumps(manifest).encode()))

    async def counted(expected: int) -> bool:
        reply = await api.Get(pb.GetRequest(kind="Dataset", name="helmet"))
        status = json.loads(reply.resource.status_json or b"{}")
        return bool(status.get("numberOfSamples") == expected)

    await eventually(lambda: counted(2), 30, "2 samples in the CR status")
    with samples.open("a") as f:
        f.write("c.jpg,1\n")
    await eventually(lambda: counted(3), 30, "3 samples in the CR status")

    # The status lives in the API server's object, written through the subresource.
    stored = await gm.store.get("Dataset", "default", "helmet")
    assert stored.status["numberOfSamples"] == 3
    assert "sedna.io/cleanup" in stored.finalizers

    await api.Delete(pb.DeleteRequest(kind="Dataset", name="helmet"))

    async def gone() -> bool:
        try:
            await api.Get(pb.GetRequest(kind="Dataset", name="helmet"))
        except grpc.aio.AioRpcError as exc:
            return exc.code() is grpc.StatusCode.NOT_FOUND
        return False

    await eventually(gone, 30, "the finalizer released and the Dataset gone")

    async def forgotten() -> bool:
        return not lc.datasets.keys()

    await eventually(forgotten, 30, "the node forgot the Dataset")
