"""Data and model shared by the MistNet example's scripts (the "image contents").

- Data: scikit-learn's digits (1,797 8x8 images shipped inside the package: nothing is
  downloaded), scaled to [0, 1]. A stratified 30 % is held out as the cloud's test set; the
  rest is dealt to ``EDGES`` edge nodes, non-IID: each class goes mostly
  (``DOMINANT_SHARE``) to the node that "owns" it (``NODE_CLASSES``), the rest is shared
  evenly by the other nodes. Every script derives the same split from the same seed.
- Model: a small CNN as an ``nn.Sequential`` (MistNet's contract: the cut is between two of
  its layers). The first ``CUT_LAYER`` = 3 layers (conv, ReLU, max-pool: 16 x 4 x 4 = 256
  features per image) run on the edge; the rest (batch norm, two linear layers) is trained in
  the cloud.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

__all__ = [
    "CLIP_BOUND",
    "CUT_LAYER",
    "EDGES",
    "NODE_CLASSES",
    "accuracy",
    "build_model",
    "edge_split",
    "test_split",
    "train_locally",
]

EDGES = 3
NODE_CLASSES: tuple[tuple[int, ...], ...] = ((0, 1, 2, 3), (4, 5, 6), (7, 8, 9))
DOMINANT_SHARE = 0.95
TEST_FRACTION = 0.3
SEED = 0
CUT_LAYER = 3
CLIP_BOUND = 32.0
"""L1 bound of a feature vector before the Laplace noise (chosen a priori, not from data)."""

Images = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]


def _all() -> tuple[Images, Labels, Images, Labels]:
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, stratify=y, random_state=SEED
    )
    return x_train, y_train, x_test, y_test


def test_split() -> tuple[Images, Labels]:
    """The held-out test set (the cloud's evaluation data; no edge trains on it)."""
    _x, _y, x_test, y_test = _all()
    return x_test, y_test


def edge_split(index: int) -> tuple[Images, Labels]:
    """Edge ``index``'s (1-based, upstream's ``-i``) non-IID training split."""
    if not 1 <= index <= EDGES:
        raise ValueError(f"edge index must be 1..{EDGES}, got {index}")
    x, y, _xt, _yt = _all()
    rng = np.random.default_rng(SEED)
    owner = {c: node for node, classes in enumerate(NODE_CLASSES) for c in classes}
    chosen: list[int] = []
    for label in range(10):
        idx = rng.permutation(np.flatnonzero(y == label))
        dominant = round(DOMINANT_SHARE * len(idx))
        if owner[label] == index - 1:
            chosen.extend(idx[:dominant].tolist())
        else:
            others = [n for n in range(EDGES) if n != owner[label]]
            rest = idx[dominant:]
            chosen.extend(rest[others.index(index - 1) :: len(others)].tolist())
    order = np.array(sorted(chosen))
    return x[order], y[order]


def build_model(seed: int = SEED) -> nn.Sequential:
    """The CNN; every process builds it from the same seed (the cloud's copy is authoritative:
    edges load its weights before their first upload)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        # ---- cut_layer = 3: the edge runs the layers above, the cloud those below ----
        nn.Flatten(),
        nn.BatchNorm1d(16 * 4 * 4),
        nn.Linear(16 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


@torch.no_grad()
def accuracy(model: nn.Module, x: Images, y: Labels) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``."""
    model.eval()
    predicted = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    return float((predicted == y).mean())


def train_locally(
    model: nn.Module, x: Images, y: Labels, *, epochs: int, learning_rate: float, seed: int = SEED
) -> Any:
    """The baseline: train the whole model on one edge's data alone (no cloud, no noise)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.9)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xs), generator=generator)
        for start in range(0, len(xs), 32):
            index = order[start : start + 32]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(xs[index]), ys[index])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    return model
