"""An ``s3://`` Dataset end to end: Secret manifest → GM → node → real S3 → status.

The GlobalManager (SQLite store, local runtime, ``secrets_dir``) and a LocalController run in
this process; S3 is moto's server mode on loopback with request authentication on, so wrong
keys fail the way real S3 fails them. The Secrets are the YAML a user would ``kubectl apply``,
in the GM's secrets directory. A Dataset naming a good Secret gets its sample count; one with
wrong keys, a missing Secret or a Secret without a key gets a condition that says why; fixing
a Secret file reaches the node without touching the Dataset; no key ever reaches the logs or
the status.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from support import k8s_emulator
from support.embedded import embedded_stack
from support.s3_server import S3Endpoint, moto_s3

from sedna.resources.objects import ResourceObject
from sedna_gm.app import GlobalManager
from sedna_lc.app import LocalController

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
CRDS = sorted((REPO / "crds").glob("sedna.io_*.yaml"))
SAMPLES = 1234
WRONG_SECRET = "wrong-secret-key-never-logged"


def secret_manifest(
    name: str, endpoint: S3Endpoint, *, access: str | None = None, secret: str | None = None
) -> str:
    """A Secret as upstream Sedna documents it: annotations for the endpoint, base64 data."""
    data = {}
    if access is not None:
        data["ACCESS_KEY_ID"] = base64.b64encode(access.encode()).decode()
    if secret is not None:
        data["SECRET_ACCESS_KEY"] = base64.b64encode(secret.encode()).decode()
    lines = [
        "apiVersion: v1",
        "kind: Secret",
        "metadata:",
        f"  name: {name}",
        "  annotations:",
        f'    s3-endpoint: "{endpoint.host_port}"',
        '    s3-usehttps: "0"',
        "type: Opaque",
        "data:" if data else "data: {}",
        *(f"  {k}: {v}" for k, v in data.items()),
    ]
    return "\n".join(lines) + "\n"


def s3_dataset(name: str, credential: str, url: str = "s3://bucket/train.txt") -> ResourceObject:
    return ResourceObject(
        api_version="sedna.io/v1alpha1",
        kind="Dataset",
        name=name,
        spec={"url": url, "format": "txt", "nodeName": "edge-1", "credentialName": credential},
    )


def condition(obj: ResourceObject, type_: str) -> dict[str, Any]:
    for cond in obj.status.get("conditions", []):
        if cond.get("type") == type_:
            return dict(cond)
    return {}


@dataclass
class Stack:
    gm: GlobalManager
    lc: LocalController
    s3: S3Endpoint
    secrets_dir: Path

    async def status_until(
        self, name: str, check: Callable[[ResourceObject], bool], what: str, within: float = 30
    ) -> ResourceObject:
        return await status_until(self.gm, name, check, what, within)


async def status_until(
    gm: GlobalManager,
    name: str,
    check: Callable[[ResourceObject], bool],
    what: str,
    within: float = 30,
) -> ResourceObject:
    """Poll the Dataset ``name`` until ``check`` holds."""
    deadline = time.monotonic() + within
    while True:
        obj = await gm.store.get("Dataset", "default", name)
        if check(obj):
            return obj
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {obj.status}"
        await asyncio.sleep(0.05)


async def node_connected(gm: GlobalManager, node: str = "edge-1", within: float = 30) -> None:
    """Wait until the node's stream is up (a Dataset created earlier waits out a NodeNotFound
    retry before its NodeReady turns True)."""
    deadline = time.monotonic() + within
    while (info := gm.hub.get_node(node)) is None or not info.connected:
        assert time.monotonic() < deadline, f"node {node} never connected"
        await asyncio.sleep(0.05)


@pytest.fixture
def s3() -> Iterator[S3Endpoint]:
    """Authenticating S3 with ``s3://bucket/train.txt`` (SAMPLES lines)."""
    body = b"".join(b"images/%05d.jpg %d\n" % (i, i % 2) for i in range(SAMPLES))
    with moto_s3({"bucket/train.txt": body}, authenticated=True) as endpoint:
        yield endpoint


@pytest.fixture
async def stack(tmp_path: Path, s3: S3Endpoint) -> AsyncIterator[Stack]:
    """GM (local runtime, ``secrets_dir``) and LC ``edge-1`` in this process."""
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    async with embedded_stack(
        tmp_path, secrets_dir=secrets_dir, secret_refresh_seconds=0.2
    ) as running:
        await node_connected(running.gm)
        yield Stack(running.gm, running.lc, s3, secrets_dir)


async def test_s3_dataset_counted_with_secret_from_the_secrets_dir(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    s3 = stack.s3
    good = secret_manifest("s3-creds", s3, access=s3.access_key, secret=s3.secret_key)
    (stack.secrets_dir / "s3-creds.yaml").write_text(good)
    (stack.secrets_dir / "wrong.yaml").write_text(
        secret_manifest("wrong-creds", s3, access=s3.access_key, secret=WRONG_SECRET)
    )
    (stack.secrets_dir / "incomplete.yaml").write_text(
        secret_manifest("no-secret-key", s3, access=s3.access_key)
    )
    store = stack.gm.store
    await store.create(s3_dataset("train", "s3-creds"))
    await store.create(s3_dataset("wrong", "wrong-creds"))
    await store.create(s3_dataset("missing", "absent"))
    await store.create(s3_dataset("incomplete", "no-secret-key"))

    # The good Secret: the node reads the object from S3 and the count lands in the status.
    train = await stack.status_until(
        "train", lambda o: o.status.get("numberOfSamples") == SAMPLES, "the sample count"
    )
    assert train.status["phase"] == "Ready"
    assert condition(train, "CredentialsReady")["status"] == "True"
    assert condition(train, "DataReady")["status"] == "True"

    # Wrong keys: the Secret resolves, S3 refuses, the node's error is the condition.
    wrong = await stack.status_until(
        "wrong", lambda o: condition(o, "DataReady").get("status") == "False", "S3 refusal"
    )
    assert wrong.status["phase"] == "Failed"
    data_ready = condition(wrong, "DataReady")
    assert data_ready["reason"] == "DataUnreadable"
    assert "s3://bucket/train.txt" in data_ready["message"]
    assert "SignatureDoesNotMatch" in data_ready["message"]
    assert condition(wrong, "CredentialsReady")["status"] == "True"

    # No such Secret: the GM says which one and where it looked; nothing goes to the node.
    missing = await stack.status_until(
        "missing",
        lambda o: condition(o, "CredentialsReady").get("reason") == "SecretNotFound",
        "SecretNotFound",
    )
    message = condition(missing, "CredentialsReady")["message"]
    assert "secret default/absent not found" in message
    assert str(stack.secrets_dir) in message
    assert missing.status["phase"] == "Failed"

    # A Secret without SECRET_ACCESS_KEY: InvalidSecret naming the key.
    incomplete = await stack.status_until(
        "incomplete",
        lambda o: condition(o, "CredentialsReady").get("reason") == "InvalidSecret",
        "InvalidSecret",
    )
    message = condition(incomplete, "CredentialsReady")["message"]
    assert "secret default/no-secret-key" in message
    assert "SECRET_ACCESS_KEY" in message

    placed = {k.name for k in stack.lc.datasets.keys()}  # noqa: SIM118 - a method, not a dict
    assert placed == {"train", "wrong"}

    # Fix the wrong Secret's file: the GM's next read sends the new keys, the node recounts.
    (stack.secrets_dir / "wrong.yaml").write_text(
        secret_manifest("wrong-creds", s3, access=s3.access_key, secret=s3.secret_key)
    )
    fixed = await stack.status_until(
        "wrong", lambda o: o.status.get("numberOfSamples") == SAMPLES, "the count after the fix"
    )
    assert fixed.status["phase"] == "Ready"
    assert fixed.generation == wrong.generation  # the Dataset itself never changed

    # Create the missing Secret: the retry places that Dataset too.
    (stack.secrets_dir / "absent.yaml").write_text(good.replace("s3-creds", "absent"))
    await stack.status_until(
        "missing", lambda o: o.status.get("numberOfSamples") == SAMPLES, "the late Secret"
    )

    # Keys never reach the status or the logs (GM, LC and moto share this process's logs).
    everything = [await store.get("Dataset", "default", n) for n in ("train", "wrong")]
    dumped = json.dumps([o.status for o in everything])
    for value in (s3.secret_key, WRONG_SECRET):
        assert value not in dumped
        assert value not in caplog.text
    for obj in everything:
        for event in stack.gm.recorder.events_for(obj.key):
            assert s3.secret_key not in event.message


async def test_kubernetes_runtime_reads_the_secret_from_the_cluster(
    tmp_path: Path, s3: S3Endpoint
) -> None:
    """--runtime kubernetes: the Secret comes from the API server the GM already talks to."""
    async with k8s_emulator.emulated_api_server(
        crds=CRDS, builtin_resources=True, namespaces=("default",)
    ) as cluster:
        config = k8s_emulator.write_kubeconfig(tmp_path / "kubeconfig", cluster.host)
        manifest = yaml.safe_load(
            secret_manifest("s3-creds", s3, access=s3.access_key, secret=s3.secret_key)
        )
        await asyncio.to_thread(
            lambda: k8s.CoreV1Api(cluster.api_client).create_namespaced_secret(
                "default", manifest, _preload_content=False
            )
        )
        async with embedded_stack(
            tmp_path,
            store_url=f"kubernetes://{config}",
            runtime="kubernetes",
            kubeconfig=config,
            hub_state_url=f"sqlite:///{tmp_path / 'hub.db'}",
            secret_refresh_seconds=0.2,
        ) as running:
            await node_connected(running.gm)
            await running.gm.store.create(s3_dataset("train", "s3-creds"))
            await running.gm.store.create(s3_dataset("missing", "absent"))
            train = await status_until(
                running.gm,
                "train",
                lambda o: o.status.get("numberOfSamples") == SAMPLES,
                "the sample count in the CR status",
            )
            assert train.status["phase"] == "Ready"
            missing = await status_until(
                running.gm,
                "missing",
                lambda o: condition(o, "CredentialsReady").get("reason") == "SecretNotFound",
                "SecretNotFound from the cluster",
            )
            assert (
                "secret default/absent not found"
                in (condition(missing, "CredentialsReady")["message"])
            )
