"""The TensorFlow backends (SavedModel, Keras ``.keras``/``.h5``): directly, through the OIP
server, and as remote archives (HTTP ``.tar.gz``, S3 ``.zip``) or an S3 prefix.

The models are built once per module (importing TensorFlow takes seconds).
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client import CollectorRegistry

tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed (the dev extras)")
keras = pytest.importorskip("keras", reason="Keras 3 is not installed (the dev extras)")

from support.http_files import http_files  # noqa: E402
from support.s3_server import moto_s3  # noqa: E402

from sedna.api.oip.v2 import grpc_service_pb2 as pb  # noqa: E402
from sedna.serving.errors import BackendError  # noqa: E402
from sedna.serving.metrics import InferenceMetrics  # noqa: E402
from sedna_inference.backends import load_backend  # noqa: E402
from sedna_inference.repository import InputTensor, ModelConfig, ModelRepository  # noqa: E402

pytestmark = pytest.mark.filterwarnings(  # Keras building the test models under NumPy 2
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

Served = Any  # conftest.Served (test modules cannot import conftest in importlib mode)
Arrays = dict[str, npt.NDArray[Any]]

RNG = np.random.default_rng(5)
WEIGHT = RNG.standard_normal((4, 3)).astype(np.float32)
BIAS = RNG.standard_normal(3).astype(np.float32)


class Scorer(tf.Module):  # type: ignore[misc]
    """``y = x @ W + b + offset`` and ``label = argmax(y)``: two inputs, two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(WEIGHT)
        self.b = tf.Variable(BIAS)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 4], tf.float32, name="x"),
            tf.TensorSpec([None, 3], tf.float32, name="offset"),
        ]
    )
    def serve(self, x: Any, offset: Any) -> dict[str, Any]:
        y = tf.matmul(x, self.w) + self.b + offset
        return {"y": y, "label": tf.argmax(y, axis=1)}


@dataclass(frozen=True)
class Artifact:
    """A model on disk, what its metadata must say, and the model itself to call directly."""

    path: Path
    platform: str
    inputs: list[tuple[str, str, list[int]]]
    outputs: list[tuple[str, str, list[int]]]
    reference: Callable[[Arrays], Arrays]


def _keras_model() -> Any:
    keras.utils.set_random_seed(3)
    x = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(x)
    scores = keras.layers.Dense(3, name="scores")(hidden)
    probs = keras.layers.Softmax(name="probs")(scores)
    return keras.Model(x, [scores, probs])


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Artifact]:
    root = tmp_path_factory.mktemp("tf-models")
    scorer = Scorer()
    saved = root / "scorer"
    tf.saved_model.save(scorer, str(saved), signatures={"serving_default": scorer.serve})

    def call_scorer(inputs: Arrays) -> Arrays:
        result = scorer.serve(x=tf.constant(inputs["x"]), offset=tf.constant(inputs["offset"]))
        return {name: value.numpy() for name, value in result.items()}

    model = _keras_model()
    model.save(root / "net.keras")
    model.save(root / "net.h5")

    def call_keras(inputs: Arrays) -> Arrays:
        scores, probs = model(inputs["x"], training=False)
        return {"scores": np.asarray(scores), "probs": np.asarray(probs)}

    keras_io = {
        "inputs": [("x", "FP32", [-1, 4])],
        "outputs": [("scores", "FP32", [-1, 3]), ("probs", "FP32", [-1, 3])],
    }
    return {
        "savedmodel": Artifact(
            saved,
            "tensorflow_savedmodel",
            [("offset", "FP32", [-1, 3]), ("x", "FP32", [-1, 4])],
            [("label", "INT64", [-1]), ("y", "FP32", [-1, 3])],
            call_scorer,
        ),
        "keras": Artifact(root / "net.keras", "tensorflow_keras", **keras_io, reference=call_keras),
        "h5": Artifact(root / "net.h5", "tensorflow_keras", **keras_io, reference=call_keras),
    }


@pytest.fixture(params=["savedmodel", "keras", "h5"])
def artifact(request: pytest.FixtureRequest, artifacts: dict[str, Artifact]) -> Artifact:
    return artifacts[request.param]


@pytest.fixture
def model_path(artifact: Artifact) -> Path:
    """Overrides conftest's ONNX model: ``served`` then serves this TensorFlow model."""
    return artifact.path


def sample(artifact: Artifact, rows: int, seed: int = 0) -> Arrays:
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal([rows if d == -1 else d for d in shape]).astype(np.float32)
        for name, _, shape in artifact.inputs
    }


def request_of(inputs: Arrays) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="linear")
    for name, array in inputs.items():
        request.inputs.add(name=name, datatype="FP32", shape=list(array.shape))
        request.raw_input_contents.append(array.tobytes())
    return request


def outputs_of(response: pb.ModelInferResponse) -> Arrays:
    dtypes = {"FP32": "<f4", "INT64": "<i8"}
    return {
        out.name: np.frombuffer(raw, dtype=dtypes[out.datatype]).reshape(list(out.shape))
        for out, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }


def assert_same(got: Arrays, want: Arrays) -> None:
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype, name
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


async def test_metadata_comes_from_the_model(served: Served, artifact: Artifact) -> None:
    meta = await served.stub.ModelMetadata(pb.ModelMetadataRequest(name="linear"))
    assert meta.platform == artifact.platform
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == artifact.inputs
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == artifact.outputs


async def test_infer_matches_the_model_called_directly(served: Served, artifact: Artifact) -> None:
    inputs = sample(artifact, rows=5, seed=1)
    response = await served.stub.ModelInfer(request_of(inputs))
    assert_same(outputs_of(response), artifact.reference(inputs))


@pytest.fixture
def max_queue_delay_ms() -> int:
    """Long enough that concurrent requests meet in the queue even on a loaded machine (at
    5 ms, a fast CI machine served all 24 one by one)."""
    return 250


async def test_concurrent_requests_are_batched(
    served: Served, artifact: Artifact, hold_first_call: Any
) -> None:
    hold_first_call(served)
    batches = [sample(artifact, rows=1 + i % 3, seed=i) for i in range(16)]
    responses = await asyncio.gather(*(served.stub.ModelInfer(request_of(b)) for b in batches))
    for inputs, response in zip(batches, responses, strict=True):
        assert_same(outputs_of(response), artifact.reference(inputs))
    registry = served.server.registry
    calls = registry.get_sample_value("sedna_inference_batch_size_count", {"model": "linear"})
    assert calls is not None
    assert 1 <= calls < len(batches)  # at least one backend call served several requests


async def test_wrong_shape_is_invalid_argument_naming_the_input(
    served: Served, artifact: Artifact
) -> None:
    inputs = sample(artifact, rows=2)
    inputs["x"] = np.zeros((2, 5), np.float32)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.ModelInfer(request_of(inputs))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details() or ""
    for needle in ("'x'", "[2, 5]", "[-1, 4]"):
        assert needle in details, (needle, details)


def test_saved_model_pb_file_loads_its_directory(artifacts: dict[str, Artifact]) -> None:
    artifact = artifacts["savedmodel"]
    backend = load_backend(artifact.path / "saved_model.pb")
    inputs = sample(artifact, rows=3)
    assert_same(backend.infer(inputs), artifact.reference(inputs))


def test_model_format_picks_the_backend_of_a_file_without_suffix(
    tmp_path: Path, artifacts: dict[str, Artifact]
) -> None:
    bare = tmp_path / "download"
    bare.write_bytes(artifacts["keras"].path.read_bytes())
    with pytest.raises(BackendError, match="no backend for model file 'download'"):
        load_backend(bare)
    assert load_backend(bare, model_format="keras").metadata().platform == "tensorflow_keras"


def test_frozen_graph_is_refused_clearly(tmp_path: Path) -> None:
    frozen = tmp_path / "frozen.pb"
    frozen.write_bytes(b"\x0a\x00")
    with pytest.raises(BackendError, match=r"'frozen\.pb' is not a SavedModel"):
        load_backend(frozen)


def test_keras_file_with_python_code_is_refused(tmp_path: Path) -> None:
    x = keras.Input((2,), name="x")
    model = keras.Model(x, keras.layers.Lambda(lambda t: t * 2, name="twice")(x))
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(BackendError, match=r"Keras cannot load 'lambda\.keras'.*Lambda"):
        load_backend(tmp_path / "lambda.keras")


def test_server_starts_without_importing_tensorflow(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from sedna_inference import app\n"
        "from sedna_inference.backends import load_backend\n"
        "from sedna_inference.sources import open_source\n"
        "bad = [m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr


# ---- remote SavedModels: archives and S3 prefixes ------------------------------------------


def _files(directory: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            yield path.relative_to(directory).as_posix(), path


def tar_gz(directory: Path, top: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        bundle.add(directory, arcname=top)
    return buffer.getvalue()


def zipped(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, path in _files(directory):
            bundle.write(path, name)
    return buffer.getvalue()


async def _served_by_repository(
    location: str, cache: Path, artifact: Artifact, env: dict[str, str] | None = None
) -> None:
    repo = ModelRepository(
        InferenceMetrics(CollectorRegistry()), cache_dir=cache, environ=dict(env or {})
    )
    repo.configure(ModelConfig("m", location))
    try:
        model = await repo.load("m")
        assert model.metadata.platform == "tensorflow_savedmodel"
        inputs = sample(artifact, rows=4, seed=9)
        tensors = [InputTensor(n, "FP32", a.shape, a) for n, a in inputs.items()]
        outputs = await model.infer(tensors)
        assert_same({o.spec.name: o.data for o in outputs}, artifact.reference(inputs))
    finally:
        await repo.close()


async def test_http_tar_gz_saved_model_is_unpacked(
    tmp_path: Path, artifacts: dict[str, Artifact]
) -> None:
    artifact = artifacts["savedmodel"]
    files = {"models/scorer.tar.gz": tar_gz(artifact.path, "scorer")}
    async with http_files(files) as base:
        await _served_by_repository(f"{base}/models/scorer.tar.gz", tmp_path / "cache", artifact)
    assert not list((tmp_path / "cache").glob(".download-*"))  # the work folder is gone


def _s3_env(s3: Any) -> dict[str, str]:
    return {
        "S3_ENDPOINT_URL": s3.url,
        "ACCESS_KEY_ID": s3.access_key,
        "SECRET_ACCESS_KEY": s3.secret_key,
    }


async def test_s3_zip_saved_model_is_unpacked(
    tmp_path: Path, artifacts: dict[str, Artifact]
) -> None:
    artifact = artifacts["savedmodel"]
    with moto_s3({"models/scorer.zip": zipped(artifact.path)}) as s3:
        await _served_by_repository(
            "s3://models/scorer.zip", tmp_path / "cache", artifact, _s3_env(s3)
        )


async def test_s3_prefix_saved_model_is_downloaded_as_a_directory(
    tmp_path: Path, artifacts: dict[str, Artifact]
) -> None:
    artifact = artifacts["savedmodel"]
    objects = {f"models/v1/scorer/{n}": p.read_bytes() for n, p in _files(artifact.path)}
    with moto_s3(objects) as s3:
        await _served_by_repository(
            "s3://models/v1/scorer/", tmp_path / "cache", artifact, _s3_env(s3)
        )
