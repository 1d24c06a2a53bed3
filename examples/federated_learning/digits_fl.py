"""Data, model and training shared by the federated-learning example's scripts.

The "image contents" of the example: ``prepare.py`` copies this file next to ``train.py`` and
``aggregate.py`` into ``<out>/workers``, where the LocalControllers start the workers.

- Data: scikit-learn's digits (1,797 8x8 images, shipped inside the package: nothing is
  downloaded). A stratified 30 % is held out for testing; the rest is dealt to three nodes,
  non-IID: each class goes mostly (``DOMINANT_SHARE``) to the node that "owns" it
  (``NODE_CLASSES``), the rest is shared evenly by the other nodes.
- Files: CSV, one sample per line, ``label,p0,...,p63`` (pixel values 0-16), with a header.
- Model: a small MLP (64 -> 64 -> 10); weights travel as the state dict's arrays, in order.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "DOMINANT_SHARE",
    "NODES",
    "NODE_CLASSES",
    "Split",
    "accuracy",
    "build_model",
    "load_weights",
    "make_split",
    "read_csv",
    "save_weights",
    "train_epochs",
    "write_csv",
]

NODES = ("edge-1", "edge-2", "edge-3")
NODE_CLASSES: tuple[tuple[int, ...], ...] = ((0, 1, 2, 3), (4, 5, 6), (7, 8, 9))
"""The classes each node holds most of (its "dominant" classes)."""
DOMINANT_SHARE = 0.9
"""The fraction of a class's training samples that go to the node owning it."""
TEST_FRACTION = 0.3

Images = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Split:
    """The held-out test set and the three nodes' training sets."""

    test_x: Images
    test_y: Labels
    nodes: tuple[tuple[Images, Labels], ...]


def make_split(seed: int) -> Split:
    """The seeded non-IID split of scikit-learn's digits (see the module docstring)."""
    from sklearn.datasets import load_digits  # noqa: PLC0415 - only prepare.py needs it
    from sklearn.model_selection import train_test_split  # noqa: PLC0415

    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=seed, stratify=y
    )
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in NODES]
    for cls in range(10):
        owner = next(i for i, classes in enumerate(NODE_CLASSES) if cls in classes)
        index = rng.permutation(np.flatnonzero(train_y == cls))
        cut = round(len(index) * DOMINANT_SHARE)
        parts[owner].extend(index[:cut].tolist())
        others = [i for i in range(len(NODES)) if i != owner]
        for j, chunk in enumerate(np.array_split(index[cut:], len(others))):
            parts[others[j]].extend(chunk.tolist())
    nodes = tuple(
        (train_x[np.sort(p)], train_y[np.sort(p)]) for p in (np.asarray(q) for q in parts)
    )
    return Split(test_x=test_x, test_y=test_y, nodes=nodes)


def write_csv(path: Path, x: Images, y: Labels) -> None:
    """Write samples as ``label,p0..p63`` rows (with a header)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", *(f"p{i}" for i in range(x.shape[1]))])
        for label, row in zip(y, x, strict=True):
            writer.writerow([int(label), *(f"{v:g}" for v in row)])


def read_csv(path: str | Path) -> tuple[Images, Labels]:
    """Read a file written by :func:`write_csv`.

    Raises
    ------
    ValueError
        A row that is not a label and 64 pixel values (the message names the line).
    """
    labels: list[int] = []
    rows: list[list[float]] = []
    with Path(path).open(newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for number, row in enumerate(reader, start=2):
            if len(row) != 65:
                raise ValueError(f"{path}:{number}: expected 65 values, got {len(row)}")
            try:
                labels.append(int(row[0]))
                rows.append([float(v) for v in row[1:]])
            except ValueError:
                raise ValueError(f"{path}:{number}: not a number") from None
    return np.asarray(rows, dtype=np.float32).reshape(-1, 64), np.asarray(labels, np.int64)


def build_model(seed: int = 0) -> Any:
    """The MLP, initialised from ``seed`` (every trainer starts from the same weights)."""
    import torch  # noqa: PLC0415

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def _inputs(x: Images) -> Any:
    import torch  # noqa: PLC0415

    return torch.as_tensor(x / 16.0, dtype=torch.float32)


def train_epochs(
    model: Any,
    x: Images,
    y: Labels,
    *,
    epochs: int,
    batch_size: int = 32,
    learning_rate: float = 0.1,
    seed: int = 0,
) -> dict[str, float]:
    """Train ``model`` in place with SGD (a fresh optimiser, shuffled batches from ``seed``).

    Returns
    -------
    dict
        ``loss`` (mean of the last epoch) and ``accuracy`` (on ``x``, after training).
    """
    import torch  # noqa: PLC0415

    inputs, targets = _inputs(x), torch.as_tensor(y)
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    loss_fn = torch.nn.CrossEntropyLoss()
    mean = 0.0
    model.train()
    for _ in range(max(1, epochs)):
        order = torch.randperm(len(inputs), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(inputs[batch]), targets[batch])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        mean = total / len(order)
    return {"loss": mean, "accuracy": accuracy(model, x, y)}


def accuracy(model: Any, x: Images, y: Labels) -> float:
    """The fraction of ``x`` that ``model`` labels as ``y``."""
    import torch  # noqa: PLC0415

    model.eval()
    with torch.no_grad():
        predicted = model(_inputs(x)).argmax(dim=1).numpy()
    return float((predicted == y).mean())


def save_weights(path: Path, weights: Sequence[npt.NDArray[Any]]) -> None:
    """Save a list of arrays as ``.npz`` (``layer.0``, ``layer.1``, ...), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **{f"layer.{i}": np.asarray(w) for i, w in enumerate(weights)})
    tmp.replace(path)


def load_weights(path: Path) -> list[npt.NDArray[Any]]:
    """The arrays :func:`save_weights` wrote (no pickle)."""
    with np.load(path, allow_pickle=False) as data:
        return [data[f"layer.{i}"] for i in range(len(data.files))]
