"""Set up the joint-inference example: train, export, write the dataset and the manifest.

Usage (from anywhere; scikit-learn, PyTorch and ONNX come with ``make install``)::

    .venv/bin/python examples/joint_inference/prepare.py --out /tmp/sedna-joint-inference

writes into ``--out``:

- ``models/little.onnx`` (edge), ``models/big.onnx``, ``models/big.pt`` + ``big.pt.json``
  (cloud; ``--keras`` adds ``big.keras`` and ``big_savedmodel/``) and ``models/train.json``;
- ``data/test.csv``: the held-out test samples (``label,p0..p63``), the edge worker's input;
- ``workers/``: copies of ``edge_worker.py`` and ``cloud_worker.py`` (the "image" contents);
- ``joint-inference.yaml``: the manifests to ``sedna apply``, rendered for this directory;
- ``summary.json``: what was written and the offline accuracies of both models.

Models already trained with the same seed are reused (``--force`` retrains). The previous run's
``output/results.jsonl`` is removed, so the edge worker starts over.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from digits import load_split, write_csv
from manifests import CLOUD_WORKERS, TEMPLATE_ROOT, dump, render, service_name

__all__ = ["main", "prepare"]

HERE = Path(__file__).resolve().parent
WORKER_SCRIPTS = ("edge_worker.py", "cloud_worker.py")
TRAIN_VERSION = 1
"""Bump when training changes, so cached models are retrained."""


def _confidence(probabilities: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """The CrossEntropy rule's normalised confidence ``1 + sum(p ln p) / ln N`` per row."""
    p = probabilities.astype(np.float64)
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    out: npt.NDArray[np.float64] = 1.0 + plogp.sum(axis=1) / np.log(p.shape[1])
    return out


def _train(models: Path, seed: int, keras: bool, log: Any) -> None:
    from models import (  # noqa: PLC0415 - torch/sklearn only when training
        export_big,
        export_keras,
        little_onnx,
        torch_predict,
        train_big,
        train_little,
    )

    split = load_split(seed)
    began = time.monotonic()
    little = train_little(split.train_x, split.train_y, seed)
    models.mkdir(parents=True, exist_ok=True)
    (models / "little.onnx").write_bytes(little_onnx(little))
    log(f"little model trained in {time.monotonic() - began:.1f}s")
    began = time.monotonic()
    big = train_big(split.train_x, split.train_y, seed)
    export_big(big, models)
    log(f"big model trained in {time.monotonic() - began:.1f}s")
    if keras:
        export_keras(big, models, check_images=split.test_x)
    # The exports must agree with the in-memory models.
    from models import onnx_predict  # noqa: PLC0415

    np.testing.assert_allclose(
        onnx_predict(models / "little.onnx", split.test_x),
        little.predict_proba(split.test_x),
        atol=1e-4,
    )
    np.testing.assert_allclose(
        onnx_predict(models / "big.onnx", split.test_x),
        torch_predict(big, split.test_x),
        atol=1e-4,
    )
    stamp = {"seed": seed, "version": TRAIN_VERSION, "keras": keras}
    (models / "train.json").write_text(json.dumps(stamp) + "\n")


def _cached(models: Path, seed: int, keras: bool) -> bool:
    try:
        stamp = json.loads((models / "train.json").read_text())
    except (OSError, ValueError):
        return False
    needed = ["little.onnx", "big.onnx", "big.pt", "big.pt.json"]
    if keras:
        needed.append("big.keras")
    return (
        stamp.get("seed") == seed
        and stamp.get("version") == TRAIN_VERSION
        and all((models / name).exists() for name in needed)
    )


def prepare(
    out: Path,
    *,
    seed: int = 0,
    samples: int = 0,
    threshold: float | None = None,
    cloud_worker: str = "inference-server",
    cloud_port: int | None = None,
    keras: bool = False,
    force: bool = False,
    log: Any = print,
) -> dict[str, Any]:
    """Do everything ``prepare.py`` does; returns the summary also written to ``summary.json``.

    Parameters
    ----------
    out
        The data directory (created).
    seed
        Seed of the split and of the training.
    samples
        Test samples written to the dataset (the first N of the held-out split); 0 for all.
    threshold
        The CrossEntropy rule's ``threshold_cross_entropy``; None keeps the manifest's 0.4.
    cloud_worker
        ``inference-server`` or ``script`` (see ``manifests.CLOUD_WORKERS``).
    cloud_port
        Pin the big model's port in the manifest; None lets the controller choose one.
    keras
        Also export the big model to Keras and a SavedModel (imports TensorFlow).
    force
        Retrain even when models for this seed exist.
    log
        Called with progress lines.
    """
    from models import onnx_predict  # noqa: PLC0415

    out = out.resolve()
    models = out / "models"
    if force or not _cached(models, seed, keras):
        _train(models, seed, keras, log)
    else:
        log(f"models for seed {seed} found in {models}; reusing them (--force retrains)")
    split = load_split(seed)
    test_x, test_y = split.test_x, split.test_y
    if samples:
        test_x, test_y = test_x[:samples], test_y[:samples]
    dataset = out / "data" / "test.csv"
    write_csv(dataset, test_x, test_y)
    workers = out / "workers"
    workers.mkdir(parents=True, exist_ok=True)
    for name in WORKER_SCRIPTS:
        shutil.copyfile(HERE / name, workers / name)
    output = out / "output"
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.jsonl").unlink(missing_ok=True)

    bin_dir = Path(sys.executable).parent
    server = bin_dir / "sedna-inference"
    docs = render(
        out,
        python=sys.executable,
        inference_server=str(server if server.exists() else "sedna-inference"),
        threshold=threshold,
        cloud_worker=cloud_worker,
        cloud_port=cloud_port,
    )
    manifest = out / "joint-inference.yaml"
    manifest.write_text(dump(docs))

    little_p = onnx_predict(models / "little.onnx", test_x)
    big_p = onnx_predict(models / "big.onnx", test_x)
    used = 0.4 if threshold is None else threshold
    hard = _confidence(little_p) < used
    joint = np.where(hard, big_p.argmax(axis=1), little_p.argmax(axis=1))
    summary: dict[str, Any] = {
        "seed": seed,
        "samples": len(test_y),
        "service": service_name(docs),
        "cloud_port": cloud_port,
        "manifest": str(manifest),
        "dataset": str(dataset),
        "results": str(output / "results.jsonl"),
        "models": {p.name: str(p) for p in sorted(models.iterdir()) if p.name != "train.json"},
        "threshold_cross_entropy": used,
        "offline": {
            "little_accuracy": float((little_p.argmax(axis=1) == test_y).mean()),
            "big_accuracy": float((big_p.argmax(axis=1) == test_y).mean()),
            "offload_ratio": float(hard.mean()),
            "joint_accuracy": float((joint == test_y).mean()),
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prepare.py",
        description="Train the little and big digits models, export them, write the test "
        "dataset and the manifests of the joint-inference example.",
    )
    parser.add_argument(
        "--out", type=Path, default=Path(TEMPLATE_ROOT), help="data directory (%(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="split/training seed (%(default)s)")
    parser.add_argument(
        "--samples", type=int, default=0, help="test samples in the dataset; 0: all (450)"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="CrossEntropy threshold_cross_entropy in [0, 1] (manifest default 0.4)",
    )
    parser.add_argument(
        "--cloud-worker",
        choices=CLOUD_WORKERS,
        default="inference-server",
        help="what serves the big model (%(default)s)",
    )
    parser.add_argument(
        "--cloud-port",
        type=int,
        default=None,
        help="pin the big model's port (BIG_MODEL_BIND_PORT); default: the controller picks",
    )
    parser.add_argument(
        "--keras", action="store_true", help="also export Keras and SavedModel (slow)"
    )
    parser.add_argument("--force", action="store_true", help="retrain cached models")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints the summary as JSON on the last line."""
    args = _parser().parse_args(argv)
    if args.samples < 0:
        _parser().error("--samples must be >= 0")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        _parser().error("--threshold must be in [0, 1]")
    if args.cloud_port is not None and not 0 < args.cloud_port < 65536:
        _parser().error("--cloud-port must be in 1-65535")
    summary = prepare(
        args.out,
        seed=args.seed,
        samples=args.samples,
        threshold=args.threshold,
        cloud_worker=args.cloud_worker,
        cloud_port=args.cloud_port,
        keras=args.keras,
        force=args.force,
        log=lambda line: print(line, flush=True),
    )
    offline = summary["offline"]
    print(
        f"little {offline['little_accuracy']:.3f}, big {offline['big_accuracy']:.3f}, "
        f"offline joint {offline['joint_accuracy']:.3f} at offload {offline['offload_ratio']:.2f}"
        f"\napply: sedna apply -f {summary['manifest']}",
        flush=True,
    )
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
