"""The benchmark's models, built with a fixed seed and exported to ONNX once.

``vgg`` (the default big model): a VGG-style network, a small strided conv stem and a
large fully connected head. ``cnn``: a conv-only small CNN. ``mlp``: a perceptron.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_MODEL",
    "INPUT_NAME",
    "INPUT_SHAPE",
    "MODEL_KINDS",
    "NUM_CLASSES",
    "OUTPUT_NAME",
    "default_cache_dir",
    "ensure_model",
    "make_input",
    "session_options",
]

INPUT_SHAPE: Final = (3, 224, 224)
"""One sample: channels, height, width (float32). Requests carry a batch of 1."""
INPUT_NAME: Final = "input"
OUTPUT_NAME: Final = "logits"
NUM_CLASSES: Final = 10
SEED: Final = 20240604
MODEL_KINDS: Final = ("vgg", "cnn", "mlp")
"""``vgg``: the default big model (weight-bound head). ``cnn``: a conv-only, compute-bound
contrast. ``mlp``: a weight-bound perceptron (see :func:`ensure_model`)."""
DEFAULT_MODEL: Final = "vgg"
_LAYERS: Final = ((3, 16), (16, 32), (32, 64), (64, 64))
"""(in, out) channels of the CNN's 3x3 stride-2 convolutions (each + BatchNorm + ReLU)."""
_MLP_HIDDEN: Final = 1024
_VGG_STEM: Final = ((3, 16, 4, 4, 0), (16, 32, 3, 2, 1))
"""(in, out, kernel, stride, padding) of the VGG-style stem's convolutions (each + ReLU),
followed by 2x2 max pooling: 3x224x224 -> 16x56x56 -> 32x28x28 -> 32x14x14 (6,272)."""
_VGG_HIDDEN: Final = 4096
"""Width of the two hidden fully connected layers, as in VGG-16's classifier."""
_VERSION: Final = "v1"
"""Bump when an architecture or the export changes: it is part of the cache file name."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/sedna-bench`` (or ``~/.cache``), else a folder under ``$TMPDIR``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "sedna-bench"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        path = Path(tempfile.gettempdir()) / "sedna-bench"
        path.mkdir(parents=True, exist_ok=True)
    return path


def _model_file(cache_dir: Path, kind: str) -> Path:
    spec = f"{_VERSION}:{kind}:{SEED}:{_LAYERS}:{_MLP_HIDDEN}:{NUM_CLASSES}:{INPUT_SHAPE}" + (
        f":{_VGG_STEM}:{_VGG_HIDDEN}" if kind == "vgg" else ""
    )
    digest = hashlib.sha256(spec.encode()).hexdigest()[:12]
    return cache_dir / f"ji-{kind}-{digest}.onnx"


def _network(kind: str) -> Any:
    import torch  # noqa: PLC0415 - only needed to build the file once
    from torch import nn  # noqa: PLC0415

    torch.manual_seed(SEED)
    if kind == "vgg":
        stem: list[nn.Module] = []
        for c_in, c_out, k, stride, pad in _VGG_STEM:
            stem += [nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad), nn.ReLU()]
        _, height, width = INPUT_SHAPE
        features = _VGG_STEM[-1][1] * (height // 16) * (width // 16)
        return nn.Sequential(
            *stem,
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(features, _VGG_HIDDEN),
            nn.ReLU(),
            nn.Linear(_VGG_HIDDEN, _VGG_HIDDEN),
            nn.ReLU(),
            nn.Linear(_VGG_HIDDEN, NUM_CLASSES),
        ).eval()
    if kind == "mlp":
        channels, height, width = INPUT_SHAPE
        return nn.Sequential(
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(channels * (height // 2) * (width // 2), _MLP_HIDDEN),
            nn.ReLU(),
            nn.Linear(_MLP_HIDDEN, NUM_CLASSES),
        ).eval()
    layers: list[nn.Module] = []
    for c_in, c_out in _LAYERS:
        layers += [
            nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        ]
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(_LAYERS[-1][1], NUM_CLASSES)
    ).eval()


def ensure_model(cache_dir: Path | None = None, kind: str = DEFAULT_MODEL) -> Path:
    """Return the ONNX file of one of the benchmark's models, exporting it on first use.

    ``vgg`` (the default big model): VGG-style, a small strided conv stem (4x4 stride-4
    conv to 16 channels, 3x3 stride-2 conv to 32, each with ReLU, 2x2 max pooling) then
    VGG-16's classifier shape, 6,272 -> 4,096 -> 4,096 -> 10 fully connected with ReLU;
    42.5 M weights (170 MB), about 48 M multiply-adds per image, 90 % of them in the
    head, so weight-bandwidth-bound at batch size 1 like VGG/AlexNet classifier heads.
    ``cnn`` (a conv-only contrast): four 3x3 stride-2 convolutions (3->16->32->64->64
    channels, each with BatchNorm and ReLU), global average pooling and a linear layer to
    10 classes; about 35 MFLOP-pairs per image and 48 K weights, so compute-bound.
    ``mlp`` (another weight-bound contrast): 2x2 average pooling, then a
    37,632 -> 1,024 -> 10 perceptron; 38.5 M weights (154 MB) read once per backend call,
    so weight-bandwidth-bound at batch size 1, where batching pays off even on a CPU.
    Both: weights from a fixed seed, exported with ``torch.onnx.export`` (opset 17) with a
    dynamic batch dimension, input ``input`` [-1, 3, 224, 224] float32, output ``logits``
    [-1, 10]. The file is written atomically (temporary name, then rename).

    Parameters
    ----------
    cache_dir
        Where the file is cached; :func:`default_cache_dir` when None.
    kind
        One of :data:`MODEL_KINDS`.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind {kind!r}: expected one of {', '.join(MODEL_KINDS)}")
    folder = cache_dir or default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = _model_file(folder, kind)
    if path.exists():
        return path
    import torch  # noqa: PLC0415

    net = _network(kind)
    example = torch.zeros((1, *INPUT_SHAPE))
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript-based exporter deprecation notices
        torch.onnx.export(
            net,
            (example,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    tmp.replace(path)
    return path


def make_input(seed: int = 0) -> npt.NDArray[np.float32]:
    """One request's tensor: shape [1, 3, 224, 224], float32 uniform in [0, 1)."""
    rng = np.random.default_rng(seed)
    return rng.random((1, *INPUT_SHAPE), dtype=np.float32)


def session_options(intra_op_threads: int, *, spinning: bool = True) -> object:
    """``onnxruntime.SessionOptions`` as ``sedna-inference``'s ONNX backend sets them.

    Parameters
    ----------
    intra_op_threads
        ``intra_op_num_threads``; 0 lets ONNX Runtime choose (one per physical core).
    spinning
        ONNX Runtime's default (True) lets idle intra-op threads spin-wait for work;
        False sets ``session.intra_op.allow_spinning`` to ``"0"`` (``sedna-inference``'s
        default, ``--no-ort-spinning``).
    """
    import onnxruntime as ort  # type: ignore[import-untyped]  # noqa: PLC0415

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options
