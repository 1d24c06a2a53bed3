"""The node link over TLS with per-node tokens, next to admin tokens on the resource API."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry
from support.embedded import embedded_stack
from support.pki import make_pki

from sedna.api.gm.v1 import resource_service_pb2 as pb
from sedna.api.gm.v1 import resource_service_pb2_grpc as pb_grpc
from sedna.resources.objects import ResourceObject
from sedna.runtime import ChannelConfig, open_channel
from sedna_lc.app import LocalController
from sedna_lc.settings import LCSettings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

NODE_TOKEN = "edge-1-node-token-0123456789"
ADMIN_TOKEN = "admin-token-0123456789"


async def test_tls_node_tokens_and_admin_tokens(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    tokens = tmp_path / "node-tokens.yaml"
    tokens.write_text(f"edge-1: {NODE_TOKEN}\nedge-2: another-token-0123456789\n")
    stack = embedded_stack(
        tmp_path,
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
        auth_tokens=[ADMIN_TOKEN],
        node_token_file=tokens,
        lc_values={"gm_tls_ca_file": pki.ca, "gm_token": NODE_TOKEN},
    )
    async with stack as running:
        # The node connected over TLS with its own token (not an admin token).
        await asyncio.wait_for(running.lc.link.wait_connected(30), 35)  # type: ignore[union-attr]
        samples = tmp_path / "train.txt"
        samples.write_text("a\nb\n")
        await running.gm.store.create(
            ResourceObject(
                api_version="sedna.io/v1alpha1",
                kind="Dataset",
                name="ds",
                spec={"url": str(samples), "format": "txt", "nodeName": "edge-1"},
            )
        )
        deadline = time.monotonic() + 30
        while (await running.gm.store.get("Dataset", "default", "ds")).status.get(
            "numberOfSamples"
        ) != 2:
            assert time.monotonic() < deadline, "the Dataset was not counted over the TLS link"
            await asyncio.sleep(0.1)

        # The resource API wants an admin token; a node token is not one.
        for token, expected in ((None, grpc.StatusCode.UNAUTHENTICATED), (NODE_TOKEN, None)):
            channel = open_channel(
                ChannelConfig(target=running.gm_address, ca_file=pki.ca, token=token)
            )
            try:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await pb_grpc.ResourceServiceStub(channel).Get(
                        pb.GetRequest(kind="Dataset", name="ds")
                    )
                assert caught.value.code() is (expected or grpc.StatusCode.UNAUTHENTICATED)
            finally:
                await channel.close()
        channel = open_channel(
            ChannelConfig(target=running.gm_address, ca_file=pki.ca, token=ADMIN_TOKEN)
        )
        try:
            reply = await pb_grpc.ResourceServiceStub(channel).Get(
                pb.GetRequest(kind="Dataset", name="ds")
            )
            assert reply.resource.metadata.name == "ds"
        finally:
            await channel.close()

        # Another node presenting edge-1's token is refused and never registers.
        impostor = LocalController(
            LCSettings(
                host="127.0.0.1",
                port=0,
                metrics_port=None,
                log_format="console",
                node_name="edge-2",
                gm_address=running.gm_address,
                gm_tls_ca_file=pki.ca,
                gm_token=NODE_TOKEN,
                http_port=0,
                data_dir=tmp_path / "impostor",
            ),
            CollectorRegistry(),
        )
        await impostor.restore()
        await impostor.connect("127.0.0.1:1")
        try:
            with pytest.raises(TimeoutError):
                await impostor.link.wait_connected(3)  # type: ignore[union-attr]
            node = running.gm.hub.get_node("edge-2")
            assert node is None or not node.connected
        finally:
            await impostor.stop()
