"""Set up the federated-learning example: data splits, initial model, baselines, manifests.

Usage (from anywhere; scikit-learn and PyTorch come with ``make install``)::

    .venv/bin/python examples/federated_learning/prepare.py --out /tmp/sedna-federated-learning

writes into ``--out``:

- ``data/edge-1.csv``, ``data/edge-2.csv``, ``data/edge-3.csv``: the nodes' non-IID training
  splits of scikit-learn's digits (``label,p0..p63``); ``data/test.csv``: the held-out test set
  (never given to a trainer; ``evaluate.py`` scores the global models on it);
- ``models/initial.npz``: the initial MLP weights every trainer starts round 1 from;
- ``workers/``: copies of ``train.py``, ``aggregate.py`` and ``digits_fl.py`` (the "image");
- ``federated-learning.yaml``: the manifests to ``sedna apply``, rendered for this directory;
- ``summary.json``: what was written, the class counts per node and, per node, the test
  accuracy of the model trained *alone* on that node's split with the federated job's whole
  epoch budget (``rounds x epochs``): the baselines the federated model must beat.

The previous run's outputs (``output/``, ``checkpoints/``, ``models/global.npz``) are removed,
so the job starts over.
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
import yaml
from digits_fl import (
    NODE_CLASSES,
    NODES,
    accuracy,
    build_model,
    make_split,
    save_weights,
    train_epochs,
    write_csv,
)

__all__ = ["JOB_KIND", "TEMPLATE", "TEMPLATE_ROOT", "main", "prepare", "render"]

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "federated-learning.yaml"
TEMPLATE_ROOT = "/tmp/sedna-federated-learning"
WORKER_FILES = ("train.py", "aggregate.py", "digits_fl.py")
JOB_KIND = "FederatedLearningJob"


def _replace_root(value: Any, root: str) -> Any:
    if isinstance(value, str):
        return root + value[len(TEMPLATE_ROOT) :] if value.startswith(TEMPLATE_ROOT) else value
    if isinstance(value, list):
        return [_replace_root(v, root) for v in value]
    if isinstance(value, dict):
        return {k: _replace_root(v, root) for k, v in value.items()}
    return value


def _set_env(container: dict[str, Any], name: str, value: str) -> None:
    env: list[dict[str, Any]] = container.setdefault("env", [])
    for item in env:
        if item.get("name") == name:
            item["value"] = value
            return
    env.append({"name": name, "value": value})


def render(
    out_dir: Path,
    *,
    python: str,
    rounds: int | None = None,
    epochs: int | None = None,
    agg_port: int | None = None,
    round_timeout: float | None = None,
    template: Path = TEMPLATE,
) -> list[dict[str, Any]]:
    """The template's documents, ready to apply for ``out_dir``.

    Parameters
    ----------
    out_dir
        The data directory (absolute).
    python
        The interpreter the workers run with (has ``sedna`` installed).
    rounds, epochs
        ``exit_round`` of the aggregator and ``epochs`` of every trainer; None keeps the
        template's.
    agg_port
        Pin the aggregator's port (``AGG_BIND_PORT``); None lets the controller pick one.
    round_timeout
        The aggregator's ``round_timeout_seconds``; None keeps the template's.
    template
        The template file.

    Raises
    ------
    ValueError
        The template has no FederatedLearningJob.
    """
    raw = [d for d in yaml.safe_load_all(template.read_text()) if d]
    docs: list[dict[str, Any]] = _replace_root(raw, str(out_dir))
    jobs = [d for d in docs if d.get("kind") == JOB_KIND]
    if not jobs:
        raise ValueError(f"{template}: no {JOB_KIND} document")
    spec = jobs[0]["spec"]
    workers = [spec["aggregationWorker"], *spec["trainingWorkers"]]
    for worker in workers:
        container = worker["template"]["spec"]["containers"][0]
        command = container.get("command") or []
        if command[:1] == ["python3"]:
            container["command"] = [python, *command[1:]]
    agg = spec["aggregationWorker"]["template"]["spec"]["containers"][0]
    if rounds is not None:
        _set_env(agg, "exit_round", str(rounds))
    if agg_port is not None:
        _set_env(agg, "AGG_BIND_PORT", str(agg_port))
    if round_timeout is not None:
        _set_env(agg, "round_timeout_seconds", f"{round_timeout:g}")
    if epochs is not None:
        for worker in spec["trainingWorkers"]:
            _set_env(worker["template"]["spec"]["containers"][0], "epochs", str(epochs))
    return docs


def _env_of(container: dict[str, Any], name: str, default: str) -> str:
    for item in container.get("env") or []:
        if item.get("name") == name:
            return str(item.get("value", default))
    return default


def prepare(
    out: Path,
    *,
    seed: int = 0,
    rounds: int | None = None,
    epochs: int | None = None,
    agg_port: int | None = None,
    round_timeout: float | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Do everything ``prepare.py`` does; returns the summary also written to ``summary.json``."""
    out = out.resolve()
    docs = render(
        out,
        python=sys.executable,
        rounds=rounds,
        epochs=epochs,
        agg_port=agg_port,
        round_timeout=round_timeout,
    )
    job = next(d for d in docs if d.get("kind") == JOB_KIND)
    agg = job["spec"]["aggregationWorker"]["template"]["spec"]["containers"][0]
    trainer = job["spec"]["trainingWorkers"][0]["template"]["spec"]["containers"][0]
    rounds = int(_env_of(agg, "exit_round", "1"))
    epochs = int(_env_of(trainer, "epochs", "1"))
    batch_size = int(_env_of(trainer, "batch_size", "32"))
    learning_rate = float(_env_of(trainer, "learning_rate", "0.1"))

    split = make_split(seed)
    data = out / "data"
    for node, (x, y) in zip(NODES, split.nodes, strict=True):
        write_csv(data / f"{node}.csv", x, y)
    write_csv(data / "test.csv", split.test_x, split.test_y)
    models = out / "models"
    initial = build_model(seed)
    save_weights(models / "initial.npz", [t.numpy() for t in initial.state_dict().values()])
    (models / "global.npz").unlink(missing_ok=True)
    for name in ("output", "checkpoints"):
        shutil.rmtree(out / name, ignore_errors=True)
    (out / "output").mkdir(parents=True)
    workers = out / "workers"
    workers.mkdir(parents=True, exist_ok=True)
    for name in WORKER_FILES:
        shutil.copyfile(HERE / name, workers / name)
    manifest = out / "federated-learning.yaml"
    manifest.write_text(yaml.safe_dump_all(docs, sort_keys=False))

    # Baselines: each node alone, from the same initial weights, for the job's epoch budget.
    alone: dict[str, float] = {}
    began = time.monotonic()
    for index, (node, (x, y)) in enumerate(zip(NODES, split.nodes, strict=True)):
        model = build_model(seed)
        train_epochs(
            model,
            x,
            y,
            epochs=rounds * epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=index,
        )
        alone[node] = accuracy(model, split.test_x, split.test_y)
    log(f"baselines trained in {time.monotonic() - began:.1f}s")
    summary: dict[str, Any] = {
        "seed": seed,
        "job": str(job["metadata"]["name"]),
        "namespace": str(job["metadata"].get("namespace", "default")),
        "rounds": rounds,
        "epochs": epochs,
        "agg_port": agg_port,
        "manifest": str(manifest),
        "test_set": str(data / "test.csv"),
        "test_samples": len(split.test_y),
        "output": str(out / "output"),
        "nodes": {
            node: {
                "dataset": str(data / f"{node}.csv"),
                "samples": len(y),
                "dominant_classes": list(NODE_CLASSES[i]),
                "class_counts": np.bincount(y, minlength=10).tolist(),
            }
            for i, (node, (_x, y)) in enumerate(zip(NODES, split.nodes, strict=True))
        },
        "alone_accuracy": alone,
        "initial_accuracy": accuracy(initial, split.test_x, split.test_y),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prepare.py",
        description="Write the non-IID digits splits, the initial model, the single-node "
        "baselines and the manifests of the federated-learning example.",
    )
    parser.add_argument(
        "--out", type=Path, default=Path(TEMPLATE_ROOT), help="data directory (%(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="split/model seed (%(default)s)")
    parser.add_argument("--rounds", type=int, default=None, help="exit_round (template: 5)")
    parser.add_argument("--epochs", type=int, default=None, help="local epochs (template: 2)")
    parser.add_argument(
        "--agg-port", type=int, default=None, help="pin the aggregator's port (AGG_BIND_PORT)"
    )
    parser.add_argument(
        "--round-timeout",
        type=float,
        default=None,
        help="seconds a round waits for a silent trainer (template: 60)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints the summary as JSON on the last line."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be >= 1")
    if args.agg_port is not None and not 0 < args.agg_port < 65536:
        parser.error("--agg-port must be in 1-65535")
    if args.round_timeout is not None and not args.round_timeout > 0:
        parser.error("--round-timeout must be > 0")
    summary = prepare(
        args.out,
        seed=args.seed,
        rounds=args.rounds,
        epochs=args.epochs,
        agg_port=args.agg_port,
        round_timeout=args.round_timeout,
        log=lambda line: print(line, flush=True),
    )
    alone = ", ".join(f"{n} {a:.3f}" for n, a in summary["alone_accuracy"].items())
    print(
        f"each node alone ({summary['rounds']} x {summary['epochs']} epochs): {alone}"
        f"\napply: sedna apply -f {summary['manifest']}",
        flush=True,
    )
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
