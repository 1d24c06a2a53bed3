"""Model directories and archives, with ONNX models (no TensorFlow needed).

How :func:`load_backend` picks the model inside a directory, remote archives unpacked (and
their old copies removed on reload), unsafe archives refused, directory fingerprints, and
model formats naming the backend of a file without a suffix.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import tarfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from support.http_files import http_files  # noqa: E402
from support.model_reloads import scale_model  # noqa: E402
from support.s3_server import moto_s3  # noqa: E402

from sedna.runtime import ServiceServer  # noqa: E402
from sedna.serving.errors import BackendError  # noqa: E402
from sedna.serving.metrics import InferenceMetrics  # noqa: E402
from sedna_inference import app  # noqa: E402
from sedna_inference.backends import load_backend, model_formats  # noqa: E402
from sedna_inference.repository import (  # noqa: E402
    InputTensor,
    ModelConfig,
    ModelRepository,
    ModelState,
)
from sedna_inference.settings import InferenceSettings  # noqa: E402
from sedna_inference.sources import LocalSource, archive_suffix  # noqa: E402

DEADLINE_S = 15.0


def factor_of(backend_infer: Callable[..., dict[str, np.ndarray]]) -> float:
    out = backend_infer({"x": np.ones((1, 4), np.float32)})
    return float(out["y"][0, 0])


def tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            bundle.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


def tar_with_link(name: str, target: str) -> bytes:
    """A tar holding one symbolic link ``name`` → ``target``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        info = tarfile.TarInfo(name)
        info.type = tarfile.SYMTYPE
        info.linkname = target
        bundle.addfile(info)
    return buffer.getvalue()


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, body in members.items():
            bundle.writestr(name, body)
    return buffer.getvalue()


# ---- directories ----------------------------------------------------------------------------


def test_directory_with_one_model_file_loads_it(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(scale_model(2))
    (tmp_path / "README.txt").write_text("notes", encoding="utf-8")
    assert factor_of(load_backend(tmp_path).infer) == 2


def test_single_nested_folder_is_followed(tmp_path: Path) -> None:
    nested = tmp_path / "export" / "v3"
    nested.mkdir(parents=True)
    (nested / "model.onnx").write_bytes(scale_model(3))
    assert factor_of(load_backend(tmp_path).infer) == 3


def test_ambiguous_or_empty_directory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a.onnx").write_bytes(scale_model(2))
    (tmp_path / "b.onnx").write_bytes(scale_model(3))
    with pytest.raises(BackendError, match=r"several model files \(a\.onnx, b\.onnx\)"):
        load_backend(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BackendError, match=r"holds no model.*saved_model\.pb"):
        load_backend(empty)


def test_model_format_names_the_backend_of_a_file_without_suffix(tmp_path: Path) -> None:
    bare = tmp_path / "model"
    bare.write_bytes(scale_model(4))
    assert factor_of(load_backend(bare, model_format="ONNX").infer) == 4
    with pytest.raises(BackendError, match=r"format 'caffe'.*known formats: .*onnx"):
        load_backend(bare, model_format="caffe")
    assert {"onnx", "pt", "savedmodel", "pb", "keras", "h5"} <= set(model_formats())


def test_the_suffix_wins_over_the_model_format(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(scale_model(2))
    assert factor_of(load_backend(model, model_format="keras").infer) == 2
    assert factor_of(load_backend(tmp_path, model_format="caffe").infer) == 2


def test_local_directory_fingerprint_follows_its_files(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    model = folder / "model.onnx"
    model.write_bytes(scale_model(2))
    source = LocalSource(folder)
    first = source.fingerprint()
    assert first is not None
    assert source.fingerprint() == first
    stat = model.stat()
    model.write_bytes(scale_model(3))
    os.utime(model, ns=(stat.st_mtime_ns + 10**9, stat.st_mtime_ns + 10**9))
    assert source.fingerprint() != first
    assert LocalSource(tmp_path / "missing").fingerprint() is None


# ---- archives -------------------------------------------------------------------------------


def test_archive_suffixes() -> None:
    assert archive_suffix("/m/model.TAR.GZ") == ".tar.gz"
    assert archive_suffix("/m/model.zip") == ".zip"
    assert archive_suffix("/m/model.keras") == ""
    assert archive_suffix("/m/model.onnx") == ""


def _repository(
    cache: Path,
    location: str,
    env: dict[str, str] | None = None,
    *,
    model_format: str | None = None,
) -> ModelRepository:
    repo = ModelRepository(
        InferenceMetrics(CollectorRegistry()), cache_dir=cache, environ=dict(env or {})
    )
    repo.configure(ModelConfig("m", location, format=model_format))
    return repo


async def _factor(repo: ModelRepository, name: str = "m") -> float:
    x = np.ones((1, 4), dtype=np.float32)
    outputs = await repo.get(name).infer([InputTensor("x", "FP32", (1, 4), x)])
    return float(np.asarray(outputs[0].data)[0, 0])


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if not p.name.startswith("."))


# ---- the Model resource's format, through the repository and the server --------------------


async def test_http_model_without_suffix_is_loaded_by_its_format(tmp_path: Path) -> None:
    async with http_files({"models/latest": scale_model(6)}) as base:
        url = f"{base}/models/latest"
        plain = _repository(tmp_path / "plain", url)
        with pytest.raises(BackendError, match="no backend for model file"):
            await plain.load("m")
        repo = _repository(tmp_path / "cache", url, model_format="onnx")
        try:
            await repo.load("m")
            assert await _factor(repo) == 6
        finally:
            await repo.close()


async def test_cloud_worker_serves_a_model_by_its_model_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = tmp_path / "model"
    bare.write_bytes(scale_model(7))
    monkeypatch.setenv("MODEL_URL", str(bare))
    monkeypatch.setenv("SERVICE_NAME", "big")
    monkeypatch.setenv("MODEL_FORMAT", "onnx")
    settings = InferenceSettings(host="127.0.0.1", port=0, metrics_port=None)
    assert (settings.model_name, settings.model_format) == ("big", "onnx")
    server = ServiceServer(settings)
    repo = await app.setup(server, settings)
    await server.start()
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not repo.server_ready():
            if repo.state("big") is ModelState.FAILED:
                repo.get("big")  # raises ModelNotReadyError, naming why the load failed
            assert time.monotonic() < deadline, "timed out waiting for the model"
            await asyncio.sleep(0.01)
        assert await _factor(repo, "big") == 7
    finally:
        await server.stop(grace=1)


async def test_http_archive_is_unpacked_and_a_new_version_replaces_it(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    files = {"m.tgz": tar_gz({"model/model.onnx": scale_model(2)})}
    async with http_files(files) as base:
        repo = _repository(cache, f"{base}/m.tgz")
        try:
            await repo.load("m")
            assert await _factor(repo) == 2
            (first,) = _entries(cache)
            assert first.is_dir()
            files["m.tgz"] = tar_gz({"model/model.onnx": scale_model(5)})
            assert await repo.reload("m")
            assert await _factor(repo) == 5
            (second,) = _entries(cache)  # the old unpacked copy is gone
            assert second != first
            assert not list(cache.glob(".download-*"))
        finally:
            await repo.close()


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("m.tar.gz", tar_gz({"../escaped.onnx": scale_model(2)})),
        ("m.tar.gz", tar_with_link("model.onnx", "../../escaped.onnx")),
        ("m.zip", zipped({"../escaped.onnx": scale_model(2)})),
        ("m.zip", b"not a zip file"),
    ],
)
async def test_unsafe_or_broken_archive_is_refused(tmp_path: Path, name: str, body: bytes) -> None:
    cache = tmp_path / "nested" / "cache"
    async with http_files({name: body}) as base:
        repo = _repository(cache, f"{base}/{name}")
        with pytest.raises(BackendError, match=re.escape(f"cannot unpack {base}/{name}")):
            await repo.load("m")
    assert not await asyncio.to_thread(lambda: list(tmp_path.rglob("escaped.onnx")))
    assert not await asyncio.to_thread(_entries, cache)


async def test_s3_prefix_without_objects_is_not_found(tmp_path: Path) -> None:
    with moto_s3({"models/other/model.onnx": scale_model(2)}) as s3:
        env = {
            "S3_ENDPOINT_URL": s3.url,
            "ACCESS_KEY_ID": s3.access_key,
            "SECRET_ACCESS_KEY": s3.secret_key,
        }
        repo = _repository(tmp_path / "cache", "s3://models/missing/", env)
        with pytest.raises(BackendError, match="no objects under this S3 prefix"):
            await repo.load("m")


async def test_s3_prefix_reload_follows_a_changed_object(tmp_path: Path) -> None:
    with moto_s3({"models/m/model.onnx": scale_model(2)}) as s3:
        env = {
            "S3_ENDPOINT_URL": s3.url,
            "ACCESS_KEY_ID": s3.access_key,
            "SECRET_ACCESS_KEY": s3.secret_key,
        }
        registry = CollectorRegistry()
        repo = ModelRepository(
            InferenceMetrics(registry), cache_dir=tmp_path / "cache", environ=env
        )
        repo.configure(ModelConfig("m", "s3://models/m/", reload_interval_s=0.05))
        await repo.load("m")
        watcher = asyncio.create_task(repo.watch_all())
        try:
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
                client.put_object, Bucket="models", Key="m/model.onnx", Body=scale_model(7)
            )
            deadline = time.monotonic() + DEADLINE_S
            while repo.generation("m") < 2:
                assert time.monotonic() < deadline, "timed out waiting for the reload"
                await asyncio.sleep(0.01)
            assert await _factor(repo) == 7
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await repo.close()
