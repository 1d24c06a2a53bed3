"""S3WeightsObjects against a moto S3 server: streamed reads, writes, and what it refuses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from support.s3_server import S3Endpoint, moto_s3

from sedna.algorithms.transmitter import S3Transmitter
from sedna.algorithms.transmitter.safetensors_codec import encode
from sedna_aggregator.adapters.s3_objects import ObjectStoreUnavailableError, S3WeightsObjects
from sedna_aggregator.core import InvalidRequestError, MalformedUpdateError

pytest.importorskip("minio")

BASE = "s3://fl-data/job-a"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    with moto_s3({"fl-data/ready": b"x", "other/ready": b"x"}, authenticated=True) as endpoint:
        yield endpoint


def _objects(s3: S3Endpoint, secret: str | None = None) -> S3WeightsObjects:
    return S3WeightsObjects(
        BASE, endpoint_url=s3.url, access_key=s3.access_key, secret_key=secret or s3.secret_key
    )


def _put(s3: S3Endpoint, key: str, body: bytes, bucket: str = "fl-data") -> None:
    import boto3

    boto3.client(
        "s3",
        endpoint_url=s3.url,
        region_name="us-east-1",
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
    ).put_object(Bucket=bucket, Key=key, Body=body)


async def _read(objects: S3WeightsObjects, uri: str, max_bytes: int = 1 << 30) -> list[Any]:
    return [item async for item in objects.read(uri, max_bytes=max_bytes)]


async def test_an_aggregate_written_here_is_what_a_trainer_reads(s3: S3Endpoint) -> None:
    objects = _objects(s3)
    uri = objects.object_uri("default/fl-job", 2)
    assert uri == f"{BASE}/default/fl-job/global/round-000002.safetensors"
    rng = np.random.default_rng(0)
    layers = [(f"layer.{i}", rng.standard_normal((i + 2, 3))) for i in range(11)]
    await objects.write(uri, layers)
    trainer = S3Transmitter(s3.url, s3.access_key, s3.secret_key, BASE)
    got = trainer.recv(uri)
    assert [name for name, _ in got] == [name for name, _ in layers]
    for (_, a), (_, b) in zip(got, layers, strict=True):
        np.testing.assert_array_equal(a, b)
    # And what a trainer sends is what the aggregator reads, one tensor at a time.
    update = trainer.update_uri("default/fl-job", 3, "c1")
    trainer.send([w for _, w in layers], update)
    stream = objects.read(update, max_bytes=1 << 30)
    first = await anext(stream)
    assert first[0] == "layer.0"
    np.testing.assert_array_equal(first[1], layers[0][1])
    rest = [item async for item in stream]
    assert len(rest) == 10


@pytest.mark.parametrize(
    "uri",
    [
        "s3://other/job-a/x.safetensors",  # another bucket
        "s3://fl-data/job-ab/x.safetensors",  # a sibling prefix, not under job-a/
        "s3://fl-data/x.safetensors",
        "https://fl-data/job-a/x.safetensors",
        "s3://fl-data/job-a/../job-b/x.safetensors",
        "s3://fl-data/job-a/",
    ],
)
async def test_objects_outside_agg_data_path_are_refused(s3: S3Endpoint, uri: str) -> None:
    objects = _objects(s3)
    with pytest.raises(InvalidRequestError, match="weights_uri"):
        await _read(objects, uri)
    with pytest.raises(InvalidRequestError, match="weights_uri"):
        await objects.write(uri, [("layer.0", np.zeros(1))])


async def test_bad_objects_are_malformed_updates_naming_the_problem(s3: S3Endpoint) -> None:
    objects = _objects(s3)
    with pytest.raises(MalformedUpdateError, match="no such object"):
        await _read(objects, f"{BASE}/missing.safetensors")
    _put(s3, "job-a/garbage.safetensors", b"PK\x03\x04 not tensors at all")
    with pytest.raises(MalformedUpdateError, match="header length prefix says"):
        await _read(objects, f"{BASE}/garbage.safetensors")
    text = b'{"layer.0": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}'
    _put(s3, "job-a/short.safetensors", len(text).to_bytes(8, "little") + text + b"\0" * 12)
    with pytest.raises(MalformedUpdateError, match=r"'layer\.0': data_offsets"):
        await _read(objects, f"{BASE}/short.safetensors")
    blob = encode([np.zeros(1000, np.float32)])
    _put(s3, "job-a/big.safetensors", blob)
    with pytest.raises(MalformedUpdateError, match="over the limit of 1000"):
        await _read(objects, f"{BASE}/big.safetensors", max_bytes=1000)
    with pytest.raises(MalformedUpdateError, match="no safetensors form"):
        await objects.write(f"{BASE}/s.safetensors", [("layer.0", np.array(["x"]))])


async def test_an_unreachable_or_refusing_store_is_unavailable(s3: S3Endpoint) -> None:
    wrong = _objects(s3, secret="wrong-secret-never-shown")
    with pytest.raises(ObjectStoreUnavailableError) as info:
        await _read(wrong, f"{BASE}/x.safetensors")
    assert info.value.code == "UNAVAILABLE"
    assert "wrong-secret-never-shown" not in str(info.value)
    assert "wrong-secret-never-shown" not in repr(wrong)
    with pytest.raises(ObjectStoreUnavailableError, match="cannot write"):
        await wrong.write(f"{BASE}/x.safetensors", [("layer.0", np.zeros(1))])
    closed = S3WeightsObjects(BASE, endpoint_url="http://127.0.0.1:1")
    with pytest.raises(ObjectStoreUnavailableError):
        await _read(closed, f"{BASE}/x.safetensors")
