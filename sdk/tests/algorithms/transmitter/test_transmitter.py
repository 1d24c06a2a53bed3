"""WSTransmitter / S3Transmitter: upstream names, real S3 objects on a moto server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from support.s3_server import S3Endpoint, moto_s3

from sedna.algorithms.transmitter import (
    S3Transmitter,
    TransmitterError,
    WSTransmitter,
    get_transmitter_from_config,
)
from sedna.algorithms.transmitter.safetensors_codec import encode

pytest.importorskip("minio")

BASE = "s3://fl-data/jobs"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    with moto_s3({"fl-data/ready": b"x"}, authenticated=True) as endpoint:
        yield endpoint


def _transmitter(s3: S3Endpoint, **kwargs: Any) -> S3Transmitter:
    return S3Transmitter(s3.url, s3.access_key, s3.secret_key, BASE, **kwargs)


def _boto(s3: S3Endpoint) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3.url,
        region_name="us-east-1",
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
    )


def test_send_and_recv_a_tensor_set_in_order(s3: S3Endpoint) -> None:
    transmitter = _transmitter(s3)
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((i + 1, 3)).astype(np.float32) for i in range(12)]
    uri = transmitter.update_uri("default/fl-job", 3, "trainer 1")
    assert uri == "s3://fl-data/jobs/default/fl-job/round-000003/trainer%201.safetensors"
    assert transmitter.send(weights, uri, metadata={"round": "3"}) == uri
    received = transmitter.recv(uri)
    assert [name for name, _ in received] == [f"layer.{i}" for i in range(12)]
    for (_, got), want in zip(received, weights, strict=True):
        np.testing.assert_array_equal(got, want)
    # iter_recv yields the same, one at a time.
    first = next(transmitter.iter_recv(uri))
    np.testing.assert_array_equal(first[1], weights[0])
    # The object is plain safetensors (readable by anyone with the package).
    body = _boto(s3).get_object(Bucket="fl-data", Key=uri.removeprefix("s3://fl-data/"))
    st = pytest.importorskip("safetensors.numpy")
    np.testing.assert_array_equal(st.load(body["Body"].read())["layer.11"], weights[11])
    # A mapping keeps its names; send replaces the object.
    transmitter.send({"w": np.arange(3)}, uri)
    assert [name for name, _ in transmitter.recv(uri)] == ["w"]


def test_missing_corrupt_and_oversized_objects_are_named(s3: S3Endpoint) -> None:
    transmitter = _transmitter(s3)
    missing = transmitter.object_uri("nothing", "here.safetensors")
    with pytest.raises(TransmitterError, match=f"{missing}: no such object"):
        transmitter.recv(missing)
    client = _boto(s3)
    client.put_object(Bucket="fl-data", Key="jobs/bad.safetensors", Body=b"\x10" + b"\0" * 7 + b"{")
    with pytest.raises(TransmitterError, match="prefix says 16 bytes but the object has only 9"):
        transmitter.recv(f"{BASE}/bad.safetensors")
    blob = encode({"w": np.zeros(64, np.float32)})
    client.put_object(Bucket="fl-data", Key="jobs/big.safetensors", Body=blob)
    with pytest.raises(TransmitterError, match=f"holds {len(blob)} bytes, over the limit of 100"):
        transmitter.recv(f"{BASE}/big.safetensors", max_bytes=100)
    with pytest.raises(ValueError, match="names a bucket or prefix"):
        transmitter.recv("s3://fl-data/jobs/")
    with pytest.raises(TransmitterError, match="dtype <U4 has no safetensors form"):
        transmitter.send({"s": np.array(["text"])}, f"{BASE}/s.safetensors")


def test_wrong_keys_fail_without_showing_them(s3: S3Endpoint) -> None:
    wrong = S3Transmitter(s3.url, s3.access_key, "wrong-secret-never-shown", BASE)
    with pytest.raises(TransmitterError, match=r"cannot write s3://fl-data/jobs/x\.safetensors"):
        wrong.send([np.zeros(2)], f"{BASE}/x.safetensors")
    with pytest.raises(TransmitterError) as info:
        wrong.recv(f"{BASE}/x.safetensors")
    assert "wrong-secret-never-shown" not in str(info.value)
    assert "wrong-secret-never-shown" not in repr(wrong)
    assert "secret_key='***'" in repr(wrong)
    # Upstream's parameters dict (what Plato consumed) still carries them.
    assert wrong.parameters["s3_bucket"] == BASE
    assert wrong.parameters["secret_key"] == "wrong-secret-never-shown"


def test_from_env_and_get_transmitter_from_config(s3: S3Endpoint) -> None:
    env = {
        "TRANSMITTER": "s3",
        "AGG_DATA_PATH": BASE,
        "S3_ENDPOINT_URL": s3.url,
        "ACCESS_KEY_ID": s3.access_key,
        "SECRET_ACCESS_KEY": s3.secret_key,
    }
    transmitter = get_transmitter_from_config(env)
    assert isinstance(transmitter, S3Transmitter)
    assert transmitter.by_reference
    uri = transmitter.send([np.ones(2)], f"{BASE}/env.safetensors")
    np.testing.assert_array_equal(transmitter.recv(uri)[0][1], np.ones(2))
    assert isinstance(get_transmitter_from_config({}), WSTransmitter)
    assert isinstance(get_transmitter_from_config({"TRANSMITTER": "ws"}), WSTransmitter)
    with pytest.raises(TransmitterError, match="TRANSMITTER='carrier-pigeon'"):
        get_transmitter_from_config({"TRANSMITTER": "carrier-pigeon"})
    with pytest.raises(TransmitterError, match="needs AGG_DATA_PATH"):
        get_transmitter_from_config({"TRANSMITTER": "s3"})
    with pytest.raises(TransmitterError, match="AGG_DATA_PATH '/data/fl' is not an s3://"):
        get_transmitter_from_config({"TRANSMITTER": "s3", "AGG_DATA_PATH": "/data/fl"})


def test_object_names_and_the_ws_transmitter() -> None:
    transmitter = S3Transmitter("http://127.0.0.1:1", "", "", "s3://bucket/")
    assert transmitter.object_uri("a/b", "c") == "s3://bucket/a/b/c"
    with pytest.raises(ValueError, match=r"'..'"):
        transmitter.object_uri("..", "x")
    with pytest.raises(ValueError, match="s3://bucket/key"):
        S3Transmitter("", "", "", "http://bucket/x")
    ws = WSTransmitter()
    assert ws.parameters == {}
    assert not ws.by_reference
    with pytest.raises(TransmitterError, match=r"AggregationClient.push"):
        ws.send([np.zeros(1)])
    with pytest.raises(TransmitterError, match=r"AggregationClient.pull"):
        ws.recv()
