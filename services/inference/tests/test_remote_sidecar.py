"""Remote TorchScript models (``http(s)://``, ``s3://``) bring their ``<url>.json`` sidecar.

The sidecar is downloaded next to the cached model, its absence fails the load with an error
naming the file to add, and the fingerprint covers it: editing only the sidecar reloads.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

torch = pytest.importorskip("torch", reason="PyTorch is not installed (the dev extras)")

from support.http_files import http_files  # noqa: E402
from support.model_reloads import reloads, until, watching  # noqa: E402
from support.s3_server import moto_s3  # noqa: E402

from sedna.serving.metrics import InferenceMetrics  # noqa: E402
from sedna_inference.repository import (  # noqa: E402
    InputTensor,
    ModelConfig,
    ModelRepository,
    ModelState,
)
from sedna_inference.sources import LocalSource  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.(script|save)` is deprecated:DeprecationWarning"
)

INTERVAL = 0.05


def sidecar(output: str = "y") -> bytes:
    spec = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": output, "datatype": "FP32", "shape": [-1, 3]}],
    }
    return json.dumps(spec).encode()


def _linear() -> Any:
    torch.manual_seed(3)
    return torch.nn.Linear(4, 3)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("torch") / "linear.pt"
    torch.jit.save(torch.jit.script(_linear()), str(path))
    return path.read_bytes()


def reference(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    with torch.no_grad():
        result: np.ndarray[Any, Any] = _linear()(torch.from_numpy(x)).numpy()
    return result


def _repository(
    cache: Path, location: str, env: dict[str, str] | None = None
) -> tuple[ModelRepository, CollectorRegistry]:
    registry = CollectorRegistry()
    repo = ModelRepository(InferenceMetrics(registry), cache_dir=cache, environ=dict(env or {}))
    repo.configure(ModelConfig("m", location, reload_interval_s=INTERVAL))
    return repo, registry


async def _infer(repo: ModelRepository) -> dict[str, np.ndarray[Any, Any]]:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    outputs = await repo.get("m").infer([InputTensor("x", "FP32", (2, 4), x)])
    return {o.spec.name: np.asarray(o.data) for o in outputs}


def _cached(cache: Path, pattern: str) -> list[Path]:
    return sorted(p for p in cache.glob(pattern) if not p.name.startswith("."))


async def test_http_model_brings_its_sidecar_and_a_sidecar_edit_reloads(
    tmp_path: Path, scripted: bytes
) -> None:
    cache = tmp_path / "cache"
    files = {"models/linear.pt": scripted, "models/linear.pt.json": sidecar("y")}
    async with http_files(files) as base:
        repo, registry = _repository(cache, f"{base}/models/linear.pt")
        await repo.load("m")
        async with watching(repo):
            x = np.arange(8, dtype=np.float32).reshape(2, 4)
            got = await _infer(repo)
            np.testing.assert_allclose(got["y"], reference(x), rtol=1e-5, atol=1e-6)
            assert len(_cached(cache, "*.pt")) == 1
            assert len(_cached(cache, "*.pt.json")) == 1
            # Only the sidecar changes: the watcher sees it and the new names serve.
            files["models/linear.pt.json"] = sidecar("scores")
            await until(lambda: reloads(registry, "success") == 1, "the reload")
            assert [t.name for t in repo.get("m").metadata.outputs] == ["scores"]
            assert list(await _infer(repo)) == ["scores"]
            # The previous copy went with its sidecar.
            assert len(_cached(cache, "*.pt")) == 1
            assert len(_cached(cache, "*.pt.json")) == 1


async def test_http_model_without_sidecar_fails_naming_it(tmp_path: Path, scripted: bytes) -> None:
    async with http_files({"models/linear.pt": scripted}) as base:
        url = f"{base}/models/linear.pt"
        repo, _ = _repository(tmp_path / "cache", url)
        assert not await repo.load_all()
    message = repo._errors["m"]
    assert url in message
    assert "needs a metadata file" in message
    assert "URL plus '.json'" in message
    assert repo.state("m") is ModelState.FAILED


def _s3_env(s3: Any) -> dict[str, str]:
    return {
        "S3_ENDPOINT_URL": s3.url,
        "ACCESS_KEY_ID": s3.access_key,
        "SECRET_ACCESS_KEY": s3.secret_key,
    }


async def test_s3_model_brings_its_sidecar(tmp_path: Path, scripted: bytes) -> None:
    objects = {"models/net/linear.pth": scripted, "models/net/linear.pth.json": sidecar("y")}
    with moto_s3(objects, authenticated=True) as s3:
        repo, _ = _repository(tmp_path / "cache", "s3://models/net/linear.pth", _s3_env(s3))
        try:
            await repo.load("m")
            x = np.arange(8, dtype=np.float32).reshape(2, 4)
            got = await _infer(repo)
            np.testing.assert_allclose(got["y"], reference(x), rtol=1e-5, atol=1e-6)
            assert repo.get("m").metadata.platform == "pytorch_libtorch"
        finally:
            await repo.close()


async def test_s3_sidecar_removed_keeps_the_old_version_serving(
    tmp_path: Path, scripted: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    objects = {"models/linear.pt": scripted, "models/linear.pt.json": sidecar("y")}
    with moto_s3(objects, authenticated=True) as s3:
        env = _s3_env(s3)
        repo, registry = _repository(tmp_path / "cache", "s3://models/linear.pt", env)
        await repo.load("m")
        async with watching(repo):
            import boto3

            client = boto3.client(
                "s3",
                endpoint_url=s3.url,
                region_name="us-east-1",
                aws_access_key_id=s3.access_key,
                aws_secret_access_key=s3.secret_key,
            )
            await asyncio.to_thread(client.delete_object, Bucket="models", Key="linear.pt.json")
            await until(lambda: reloads(registry, "error") == 1, "the failed reload")
            assert repo.model_ready("m")
            assert list(await _infer(repo)) == ["y"]
    failures = [r.getMessage() for r in caplog.records if "reload failed" in r.getMessage()]
    assert failures
    assert "needs a metadata file" in failures[0]
    assert s3.secret_key not in failures[0]


def test_local_sidecar_edit_changes_the_fingerprint(tmp_path: Path, scripted: bytes) -> None:
    model = tmp_path / "linear.pt"
    model.write_bytes(scripted)
    source = LocalSource(model)
    without = source.fingerprint()
    spec = tmp_path / "linear.pt.json"
    spec.write_bytes(sidecar("y"))
    with_sidecar = source.fingerprint()
    assert with_sidecar != without
    stat = spec.stat()
    spec.write_bytes(sidecar("scores"))
    # A new size; and a new mtime too, even on coarse clocks.
    next_ns = stat.st_mtime_ns + 10**9
    os.utime(spec, ns=(next_ns, next_ns))
    assert source.fingerprint() not in (without, with_sidecar)
