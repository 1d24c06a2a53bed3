"""The Dataset controller resolves ``spec.credentialName`` and sends the S3 credentials."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from sedna.resources.objects import ObjectKey, ResourceObject
from sedna_gm.controllers import (
    DesiredStateRegistry,
    Manager,
    MemoryEventRecorder,
    ReportRouter,
    find_condition,
    setup_dataset_controller,
    update_object,
)
from sedna_gm.controllers.dataset import DatasetController, s3_credentials
from sedna_gm.workloads.port import WorkloadError
from sedna_gm.workloads.storage import S3Secret, StaticSecretSource

KEY = ObjectKey("Dataset", "default", "ds1")
ACCESS = "AKIA-unit-access-key"
SECRET = "unit-secret-value-do-not-leak"
EXPECTED = {
    "s3-endpoint": "minio.local:9000",
    "s3-usehttps": "0",
    "ACCESS_KEY_ID": ACCESS,
    "SECRET_ACCESS_KEY": SECRET,
}


def s3_secret(name: str = "creds", *, access: str = ACCESS, secret: str = SECRET) -> S3Secret:
    return S3Secret(
        name=name,
        endpoint="minio.local:9000",
        use_https=False,
        access_key_id=access,
        secret_access_key=secret,
    )


class RecordingMessenger:
    """NodeMessenger recording ``(op, node, key, generation, credentials)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, ObjectKey, int, dict[str, str]]] = []

    async def upsert(
        self, node_name: str, obj: ResourceObject, credentials: Mapping[str, str] | None = None
    ) -> None:
        self.calls.append(("upsert", node_name, obj.key, obj.generation, dict(credentials or {})))

    async def remove(self, node_name: str, obj: ResourceObject) -> None:
        self.calls.append(("remove", node_name, obj.key, obj.generation, {}))

    def upserts(self) -> list[dict[str, str]]:
        return [c[4] for c in self.calls if c[0] == "upsert"]


class FlakySource:
    """A SecretSource whose reads fail like an unreachable API server."""

    async def get_s3_secret(self, namespace: str, name: str) -> S3Secret:
        raise WorkloadError(f"reading secret {namespace}/{name}: the API server is unreachable")


@dataclass
class Env:
    store: Any
    messenger: RecordingMessenger
    recorder: MemoryEventRecorder
    desired: DesiredStateRegistry
    datasets: DatasetController
    secrets: StaticSecretSource
    enqueued: list[ObjectKey] = field(default_factory=list)


@pytest.fixture
async def env(store: Any, nodes: Any) -> AsyncIterator[Env]:
    messenger = RecordingMessenger()
    manager = Manager(store)
    desired = DesiredStateRegistry()
    recorder = MemoryEventRecorder()
    secrets = StaticSecretSource()
    datasets, _ = setup_dataset_controller(
        manager,
        ReportRouter(),
        desired,
        messenger=messenger,
        nodes=nodes,
        recorder=recorder,
        secrets=secrets,
        secret_retry=0.05,
        secret_refresh=0.05,
    )
    await manager.start()
    try:
        yield Env(store, messenger, recorder, desired, datasets, secrets)
    finally:
        await manager.stop()


def s3_dataset(name: str = "ds1", **spec: Any) -> ResourceObject:
    return ResourceObject(
        kind="Dataset",
        name=name,
        spec={
            "url": "s3://bucket/train.txt",
            "format": "txt",
            "nodeName": "edge0",
            "credentialName": "creds",
            **spec,
        },
    )


async def _status(store: Any, key: ObjectKey = KEY) -> dict[str, Any]:
    obj = await store.get(key.kind, key.namespace, key.name)
    return dict(obj.status)


def _credentials_condition(status: Mapping[str, Any]) -> dict[str, Any] | None:
    return find_condition(dict(status), "CredentialsReady")


def assert_no_leak(env: Env, status: Mapping[str, Any], logs: str) -> None:
    """No secret value in the status, the events or the logs."""
    events = " ".join(f"{e.reason} {e.message}" for e in env.recorder.events_for(KEY))
    for text in (json.dumps(status), events, logs):
        assert SECRET not in text
        assert ACCESS not in text


def test_mapping_has_the_keys_the_lc_reads() -> None:
    assert s3_credentials(s3_secret()) == EXPECTED
    https = S3Secret(name="x", endpoint="https://s3.example", use_https=True)
    assert s3_credentials(https)["s3-usehttps"] == "1"
    assert s3_credentials(https)["s3-endpoint"] == "https://s3.example"


async def test_resolved_secret_travels_with_the_upsert_and_the_resync(
    env: Env, eventually: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    env.secrets.put("default", s3_secret())
    await env.store.create(s3_dataset())
    await eventually(lambda: env.messenger.upserts() == [EXPECTED], what="upsert with creds")

    async def ready() -> bool:
        cond = _credentials_condition(await _status(env.store))
        return cond is not None and cond["status"] == "True"

    await eventually(ready, what="CredentialsReady=True")
    cond = _credentials_condition(await _status(env.store))
    assert cond is not None
    assert cond["reason"] == "SecretFound"
    assert "default/creds" in cond["message"]
    # The full resync reads the Secret again and sends the same mapping.
    desired = await env.desired.desired_objects("edge0")
    assert [(o.key, dict(c)) for o, c in desired] == [(KEY, EXPECTED)]
    # The periodic refresh finds nothing new: no second upsert.
    await eventually(lambda: len(env.recorder.events_for(KEY)) >= 1, what="event")
    assert env.messenger.upserts() == [EXPECTED]
    assert_no_leak(env, await _status(env.store), caplog.text)


async def test_missing_secret_is_a_condition_then_placed_once_created(
    env: Env, eventually: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await env.store.create(s3_dataset())

    async def not_found() -> bool:
        cond = _credentials_condition(await _status(env.store))
        return cond is not None and cond["reason"] == "SecretNotFound"

    await eventually(not_found, what="SecretNotFound")
    status = await _status(env.store)
    cond = _credentials_condition(status)
    assert cond is not None
    assert cond["status"] == "False"
    assert "secret default/creds" in cond["message"]
    assert "spec.credentialName" in cond["message"]
    assert status["phase"] == "Failed"
    assert env.messenger.calls == []  # nothing placed without credentials
    assert env.datasets.placement(KEY) is None
    assert env.recorder.events_for(KEY)[-1].reason == "SecretNotFound"
    assert await env.desired.desired_objects("edge0") == []

    # The Secret appears: the retry places the Dataset with it.
    env.secrets.put("default", s3_secret())
    await eventually(lambda: env.messenger.upserts() == [EXPECTED], what="placed")

    async def recovered() -> bool:
        st = await _status(env.store)
        c = _credentials_condition(st)
        return c is not None and c["status"] == "True" and st["phase"] == "Pending"

    await eventually(recovered, what="CredentialsReady=True, phase Pending")
    assert_no_leak(env, await _status(env.store), caplog.text)


@pytest.mark.parametrize(
    ("secret", "missing"),
    [
        (s3_secret(secret=""), "data key SECRET_ACCESS_KEY is missing"),
        (s3_secret(access=""), "data key ACCESS_KEY_ID is missing"),
        (
            s3_secret(access="", secret=""),
            "data keys ACCESS_KEY_ID and SECRET_ACCESS_KEY are missing",
        ),
    ],
)
async def test_secret_without_a_key_is_invalid(
    env: Env, eventually: Any, secret: S3Secret, missing: str
) -> None:
    env.secrets.put("default", secret)
    await env.store.create(s3_dataset())

    async def invalid() -> bool:
        cond = _credentials_condition(await _status(env.store))
        return cond is not None and cond["reason"] == "InvalidSecret"

    await eventually(invalid, what="InvalidSecret")
    cond = _credentials_condition(await _status(env.store))
    assert cond is not None
    assert "secret default/creds" in cond["message"]
    assert missing in cond["message"]
    assert env.messenger.calls == []


async def test_secret_change_is_resent_and_secret_loss_unplaces(
    env: Env, eventually: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    env.secrets.put("default", s3_secret())
    await env.store.create(s3_dataset())
    await eventually(lambda: env.messenger.upserts() == [EXPECTED], what="first upsert")

    # Rotated keys reach the node on the next refresh, same generation.
    env.secrets.put("default", s3_secret(secret="rotated-secret-value"))
    rotated = {**EXPECTED, "SECRET_ACCESS_KEY": "rotated-secret-value"}
    await eventually(lambda: env.messenger.upserts()[-1] == rotated, what="rotated upsert")
    assert env.messenger.calls[-1][3] == 1
    assert "changed" in env.recorder.events_for(KEY)[-1].message
    assert "rotated-secret-value" not in caplog.text

    # The Secret is deleted: the Dataset leaves the node and the condition says why.
    env.secrets._secrets.clear()
    await eventually(lambda: env.messenger.calls[-1][0] == "remove", what="removal")
    assert env.datasets.placement(KEY) is None

    async def not_found() -> bool:
        cond = _credentials_condition(await _status(env.store))
        return cond is not None and cond["reason"] == "SecretNotFound"

    await eventually(not_found, what="SecretNotFound after deletion")


async def test_unreadable_secret_source_is_retried_not_raised(
    store: Any, nodes: Any, eventually: Any
) -> None:
    messenger = RecordingMessenger()
    manager = Manager(store)
    recorder = MemoryEventRecorder()
    setup_dataset_controller(
        manager,
        ReportRouter(),
        DesiredStateRegistry(),
        messenger=messenger,
        nodes=nodes,
        recorder=recorder,
        secrets=FlakySource(),
        secret_retry=0.05,
    )
    await manager.start()
    try:
        await store.create(s3_dataset())

        async def unreadable() -> bool:
            cond = _credentials_condition(await _status(store))
            return cond is not None and cond["reason"] == "SecretUnreadable"

        await eventually(unreadable, what="SecretUnreadable")
        cond = _credentials_condition(await _status(store))
        assert cond is not None
        assert "unreachable" in cond["message"]
        # Retried on a timer, not raised: the same event repeats.
        await eventually(lambda: recorder.events_for(KEY)[-1].count >= 3, what="retries")
        assert messenger.calls == []
    finally:
        await manager.stop()


async def test_no_secret_source_configured(store: Any, nodes: Any, eventually: Any) -> None:
    manager = Manager(store)
    setup_dataset_controller(
        manager,
        ReportRouter(),
        DesiredStateRegistry(),
        messenger=RecordingMessenger(),
        nodes=nodes,
        recorder=MemoryEventRecorder(),
    )
    await manager.start()
    try:
        await store.create(s3_dataset())

        async def not_found() -> bool:
            cond = _credentials_condition(await _status(store))
            return cond is not None and "no secret source configured" in cond["message"]

        await eventually(not_found, what="no secret source")
    finally:
        await manager.stop()


async def test_resync_leaves_out_a_dataset_whose_secret_vanished(env: Env, eventually: Any) -> None:
    # Refresh off, so only the resync notices the loss.
    env.datasets.secret_refresh = 0
    env.secrets.put("default", s3_secret())
    await env.store.create(s3_dataset())
    await eventually(lambda: env.datasets.placement(KEY) is not None, what="placed")
    env.secrets._secrets.clear()
    asked: list[ObjectKey] = []
    enqueue = env.datasets.enqueue
    assert enqueue is not None

    def spy(key: ObjectKey) -> None:
        asked.append(key)
        enqueue(key)

    env.datasets.enqueue = spy
    assert await env.desired.desired_objects("edge0") == []
    assert asked == [KEY]
    assert env.datasets.placement(KEY) is None

    async def not_found() -> bool:
        cond = _credentials_condition(await _status(env.store))
        return cond is not None and cond["reason"] == "SecretNotFound"

    await eventually(not_found, what="condition written by the queued reconcile")
    # Back again: the retry places it with the credentials.
    env.secrets.put("default", s3_secret())
    await eventually(lambda: env.datasets.placement(KEY) is not None, what="placed again")
    assert env.messenger.upserts()[-1] == EXPECTED


async def test_dropping_credential_name_drops_the_condition(
    env: Env, eventually: Any, make_dataset: Callable[..., ResourceObject]
) -> None:
    env.secrets.put("default", s3_secret())
    await env.store.create(s3_dataset())

    async def has_condition() -> bool:
        return _credentials_condition(await _status(env.store)) is not None

    await eventually(has_condition, what="CredentialsReady")

    def to_local(obj: ResourceObject) -> None:
        obj.spec.pop("credentialName")
        obj.spec["url"] = "/data/train.txt"

    await update_object(env.store, KEY, to_local)
    await eventually(
        lambda: ("upsert", "edge0", KEY, 2, {}) in env.messenger.calls, what="resent bare"
    )

    async def gone() -> bool:
        status = await _status(env.store)
        return status.get("observedGeneration") == 2 and _credentials_condition(status) is None

    await eventually(gone, what="CredentialsReady removed")
    # A local Dataset never has the condition.
    await env.store.create(make_dataset("plain", "edge1"))
    plain = ObjectKey("Dataset", "default", "plain")
    await eventually(lambda: env.datasets.placement(plain) is not None, what="plain placed")
    assert ("upsert", "edge1", plain, 1, {}) in env.messenger.calls
