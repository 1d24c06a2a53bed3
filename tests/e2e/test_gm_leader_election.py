"""Two GlobalManagers with leader election against the Kubernetes API emulator.

Both run ``sedna_gm.app.setup`` as ``sedna-gm`` does, in Kubernetes mode, competing for the
``coordination.k8s.io/v1`` Lease ``default/sedna-gm`` in the emulator (which serves Leases
with real optimistic concurrency: a stale ``resourceVersion`` is 409). One leads and reports
SERVING on gRPC health; the other stays NOT_SERVING with its store and controllers not
started. When the leader stops renewing (a crash) the standby takes over within the lease
duration; when the leader shuts down cleanly it releases the Lease and the standby takes over
at its next attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import kmock
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import k8s_emulator

from sedna.runtime import ServiceServer
from sedna_gm import app
from sedna_gm.leader import ElectionConfig, LeaderElector
from sedna_gm.leader.kubernetes import KubernetesLeasePort
from sedna_gm.settings import GMSettings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
CRDS = sorted((REPO / "crds").glob("sedna.io_*.yaml"))
LEASES = kmock.resource("coordination.k8s.io", "v1", "leases")
LEASE_SECONDS = 3.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


def lease_of(cluster: k8s_emulator.EmulatedCluster) -> dict[str, Any] | None:
    key = (LEASES, "default", "sedna-gm")
    objects = cluster.emulator.objects
    if key not in objects or objects[key].deleted:
        return None
    raw: dict[str, Any] = objects[key].raw
    return raw


def holder(cluster: k8s_emulator.EmulatedCluster) -> str | None:
    lease = lease_of(cluster)
    return None if lease is None else lease["spec"].get("holderIdentity")


@dataclass
class Replica:
    name: str
    server: ServiceServer
    gm: app.GlobalManager
    lost: list[str] = field(default_factory=list)

    async def health(self) -> int:
        async with grpc.aio.insecure_channel(self.server.address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
        return int(reply.status)


@contextlib.asynccontextmanager
async def replica(name: str, tmp_path: Path, kubeconfig: Path) -> AsyncIterator[Replica]:
    settings = GMSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        drain_seconds=1.0,
        log_format="console",
        store_url=f"kubernetes://{kubeconfig}",
        runtime="kubernetes",
        kubeconfig=kubeconfig,
        hub_state_url=f"sqlite:///{tmp_path / f'{name}-hub.db'}",
        leader_election=True,
        leader_election_identity=name,
        leader_election_namespace="default",
        leader_election_lease_seconds=LEASE_SECONDS,
        leader_election_renew_deadline_seconds=2.0,
        leader_election_retry_seconds=0.2,
    )
    server = ServiceServer(settings)
    lost: list[str] = []
    gm = await app.setup(server, settings, on_lost_leadership=lambda: lost.append(name))
    await server.start()
    try:
        yield Replica(name, server, gm, lost)
    finally:
        await server.stop()


async def test_one_gm_leads_and_the_standby_takes_over(tmp_path: Path) -> None:
    async with k8s_emulator.emulated_api_server(
        crds=CRDS, builtin_resources=True, namespaces=("default",)
    ) as cluster:
        config = k8s_emulator.write_kubeconfig(tmp_path / "kubeconfig", cluster.host)
        async with replica("gm-a", tmp_path, config) as a:

            async def a_serving() -> bool:
                return bool(await a.health() == SERVING)

            await eventually(a_serving, 20, "gm-a to lead and serve")
            assert holder(cluster) == "gm-a"
            async with replica("gm-b", tmp_path, config) as b:
                assert await b.health() == NOT_SERVING
                # While gm-a renews (the Lease's version moves on several times), gm-b waits.
                lease = lease_of(cluster)
                assert lease is not None
                seen = int(lease["metadata"]["resourceVersion"])

                async def renewed_thrice() -> bool:
                    now = lease_of(cluster)
                    assert now is not None
                    return int(now["metadata"]["resourceVersion"]) >= seen + 3

                await eventually(renewed_thrice, 10, "gm-a to renew the Lease")
                assert holder(cluster) == "gm-a"
                assert await b.health() == NOT_SERVING
                assert b.gm.leadership is not None
                assert not b.gm.leadership.leading.is_set()

                # gm-a stops renewing (as if it hung or its node went away).
                assert a.gm.leadership is not None
                task = a.gm.leadership._task
                assert task is not None
                task.cancel()
                stopped = time.monotonic()

                async def b_serving() -> bool:
                    return bool(await b.health() == SERVING)

                # It may take the lease duration, counted from b's last observation.
                await eventually(b_serving, LEASE_SECONDS + 5, "gm-b to take over")
                took = time.monotonic() - stopped
                assert holder(cluster) == "gm-b"
                lease = lease_of(cluster)
                assert lease is not None
                assert lease["spec"]["leaseTransitions"] == 1
                print(f"takeover after the leader stopped renewing: {took:.2f}s")
                assert a.lost == []
                assert b.lost == []


async def test_a_released_lease_is_taken_at_the_next_attempt(tmp_path: Path) -> None:
    async with k8s_emulator.emulated_api_server(
        builtin_resources=True, namespaces=("default",)
    ) as cluster:

        def elector(name: str) -> LeaderElector:
            port = KubernetesLeasePort(cluster.api_client, "default", "sedna-gm")
            return LeaderElector(
                port,
                ElectionConfig(
                    identity=name, lease_duration=30, renew_deadline=20, retry_period=0.1
                ),
            )

        a, b = elector("a"), elector("b")
        await asyncio.wait_for(a.acquire(), 10)
        assert not await b.try_acquire_or_renew()
        assert await a.try_acquire_or_renew()  # a renewal
        waiting = asyncio.create_task(b.acquire())
        assert await a.release()
        # The lease is 30 s long: only the release lets b in this soon.
        await asyncio.wait_for(waiting, 10)
        assert holder(cluster) == "b"
        lease = lease_of(cluster)
        assert lease is not None
        assert lease["spec"]["leaseTransitions"] == 1
        # a, now a standby, does not take the Lease back while b holds it.
        assert not await a.try_acquire_or_renew()
        assert holder(cluster) == "b"


async def test_standby_and_leader_shut_down_cleanly(tmp_path: Path) -> None:
    async with k8s_emulator.emulated_api_server(
        crds=CRDS, builtin_resources=True, namespaces=("default",)
    ) as cluster:
        config = k8s_emulator.write_kubeconfig(tmp_path / "kubeconfig", cluster.host)
        async with replica("gm-a", tmp_path, config) as a:

            async def a_serving() -> bool:
                return bool(await a.health() == SERVING)

            await eventually(a_serving, 20, "gm-a to lead and serve")
            async with replica("gm-b", tmp_path, config) as b:
                assert await b.health() == NOT_SERVING
            # The standby left without touching the Lease.
            assert holder(cluster) == "gm-a"
            assert await a.health() == SERVING
        # The leader stopped its controllers, then released the Lease for the next one.
        assert holder(cluster) == ""
        assert a.lost == []
