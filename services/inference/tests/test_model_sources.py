"""Model URLs (local, http, s3) and hot reload, through the core with real ONNX models."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from sedna.serving.metrics import InferenceMetrics
from sedna_inference.repository import InputTensor, ModelConfig, ModelRepository, ModelState
from sedna_inference.sources import redact_url

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from support.http_files import http_files  # noqa: E402
from support.model_reloads import reloads, scale_model, until, watching  # noqa: E402
from support.s3_server import moto_s3  # noqa: E402

INTERVAL = 0.05


def _repository(
    tmp_path: Path, location: str, **env: str
) -> tuple[ModelRepository, CollectorRegistry]:
    registry = CollectorRegistry()
    repo = ModelRepository(
        InferenceMetrics(registry), cache_dir=tmp_path / "cache", environ=dict(env)
    )
    repo.configure(ModelConfig("m", location, reload_interval_s=INTERVAL))
    return repo, registry


async def _factor(repo: ModelRepository) -> float:
    x = np.ones((1, 4), dtype=np.float32)
    outputs = await repo.get("m").infer([InputTensor("x", "FP32", (1, 4), x)])
    return float(np.asarray(outputs[0].data)[0, 0])


def _replace(path: Path, body: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(body)
    old = path.stat().st_mtime_ns
    os.utime(tmp, ns=(old + 10**9, old + 10**9))  # a new mtime even on coarse clocks
    os.replace(tmp, path)


async def test_local_file_replaced_is_reloaded(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(scale_model(2))
    repo, registry = _repository(tmp_path, str(model))
    await repo.load("m")
    async with watching(repo):
        assert await _factor(repo) == 2
        _replace(model, scale_model(3))
        await until(lambda: reloads(registry, "success") == 1, "the reload")
        assert repo.generation("m") == 2
        assert await _factor(repo) == 3


async def test_corrupt_replacement_keeps_the_old_model(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(scale_model(2))
    repo, registry = _repository(tmp_path, str(model))
    await repo.load("m")
    async with watching(repo):
        _replace(model, b"this is not an onnx model")
        await until(lambda: reloads(registry, "error") == 1, "the failed reload")
        assert repo.model_ready("m")
        assert repo.generation("m") == 1
        assert await _factor(repo) == 2
        # The same broken version is not retried; a fixed one is loaded.
        _replace(model, scale_model(5))
        await until(lambda: reloads(registry, "success") == 1, "the reload")
        assert reloads(registry, "error") == 1
        assert await _factor(repo) == 5


async def test_in_flight_requests_finish_on_the_old_model(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(scale_model(2))
    repo, _ = _repository(tmp_path, str(model))
    await repo.load("m")
    try:
        old = repo.get("m")
        pending = [asyncio.create_task(_factor(repo)) for _ in range(5)]
        await asyncio.sleep(0)  # let them queue on the old instance
        _replace(model, scale_model(3))
        assert await repo.reload("m")
        assert await asyncio.gather(*pending) == [2.0] * 5
        assert repo.get("m") is not old
        assert await _factor(repo) == 3
    finally:
        await repo.close()


async def test_http_model_is_downloaded_and_reloaded(tmp_path: Path) -> None:
    files = {"models/m.onnx": scale_model(2)}
    async with http_files(files) as base:
        repo, registry = _repository(tmp_path, f"{base}/models/m.onnx")
        await repo.load("m")
        async with watching(repo):
            assert await _factor(repo) == 2
            assert list((tmp_path / "cache").glob("*.onnx"))
            files["models/m.onnx"] = scale_model(4)
            await until(lambda: reloads(registry, "success") == 1, "the reload")
            assert await _factor(repo) == 4
            assert len(list((tmp_path / "cache").glob("*.onnx"))) == 1  # old copy removed


async def test_http_failure_names_the_url_not_the_credentials(tmp_path: Path) -> None:
    async with http_files({}) as base:
        url = base.replace("http://", "http://user:hunter2@") + "/models/missing.onnx?token=t0p"
        repo, _ = _repository(tmp_path, url)
        with pytest.raises(Exception, match="404") as info:
            await repo.load("m")
    message = str(info.value)
    assert redact_url(url) in message
    assert "hunter2" not in message
    assert "t0p" not in message
    assert repo.state("m") is ModelState.FAILED
    assert not repo.model_ready("m")


async def test_s3_model_is_downloaded_and_reloaded(tmp_path: Path) -> None:
    with moto_s3({"models/m.onnx": scale_model(2)}) as s3:
        env = {
            "S3_ENDPOINT_URL": s3.url,
            "ACCESS_KEY_ID": s3.access_key,
            "SECRET_ACCESS_KEY": s3.secret_key,
        }
        repo, registry = _repository(tmp_path, "s3://models/m.onnx", **env)
        await repo.load("m")
        async with watching(repo):
            assert await _factor(repo) == 2
            import boto3

            client = boto3.client(
                "s3",
                endpoint_url=s3.url,
                region_name="us-east-1",
                aws_access_key_id=s3.access_key,
                aws_secret_access_key=s3.secret_key,
            )
            await asyncio.to_thread(
                client.put_object, Bucket="models", Key="m.onnx", Body=scale_model(6)
            )
            await until(lambda: reloads(registry, "success") == 1, "the reload")
            assert await _factor(repo) == 6


async def test_missing_s3_object_stays_not_ready(tmp_path: Path) -> None:
    with moto_s3({}, authenticated=True) as s3:
        env = {
            "S3_ENDPOINT_URL": s3.url,
            "ACCESS_KEY_ID": s3.access_key,
            "SECRET_ACCESS_KEY": s3.secret_key,
        }
        repo, _ = _repository(tmp_path, "s3://models/missing.onnx", **env)
        assert not await repo.load_all()
    message = repo._errors["m"]
    assert "s3://models/missing.onnx" in message
    assert s3.secret_key not in message
    assert not repo.model_ready("m")
