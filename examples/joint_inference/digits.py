"""The data of the example: scikit-learn's handwritten digits, split once with a fixed seed.

Every image is 8x8 pixels with intensities 0..16 (as scikit-learn ships them); both models take
that raw image as FP32 ``image`` of shape ``[N, 8, 8]`` and return ``probabilities`` of shape
``[N, 10]``, so the edge worker sends the cloud exactly what its little model saw.

The held-out test split is written as a CSV dataset (``label,p0,...,p63``, one sample a row, the
format Sedna's ``Dataset`` counts as ``csv``) that the edge worker reads.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "IMAGE_SHAPE",
    "INPUT_NAME",
    "NUM_CLASSES",
    "OUTPUT_NAME",
    "Split",
    "load_split",
    "read_csv",
    "write_csv",
]

IMAGE_SHAPE = (8, 8)
NUM_CLASSES = 10
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]


@dataclass(frozen=True)
class Split:
    """Train and held-out test images (``[N, 8, 8]`` float32, 0..16) and labels (int64)."""

    train_x: npt.NDArray[np.float32]
    train_y: npt.NDArray[np.int64]
    test_x: npt.NDArray[np.float32]
    test_y: npt.NDArray[np.int64]


def load_split(seed: int, test_size: float = 0.25) -> Split:
    """Load the digits and split them, stratified by label, with ``seed``.

    Parameters
    ----------
    seed
        Seed of the split (the same seed gives the same split on every machine).
    test_size
        Share of the samples held out for the test set.

    Returns
    -------
    Split
        The two parts; 1,797 samples in all.
    """
    from sklearn.datasets import load_digits  # noqa: PLC0415 - heavy, only when training
    from sklearn.model_selection import train_test_split  # noqa: PLC0415

    images, labels = load_digits(return_X_y=True)
    x = np.asarray(images, dtype=np.float32).reshape(-1, *IMAGE_SHAPE)
    y = np.asarray(labels, dtype=np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y
    )
    return Split(train_x, train_y, test_x, test_y)


def write_csv(path: Path, images: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]) -> None:
    """Write ``label,p0,...,p63`` rows (pixels as integers 0..16), atomically.

    Parameters
    ----------
    path
        The CSV file; its directory is created.
    images
        ``[N, 8, 8]`` images with integral intensities.
    labels
        ``[N]`` true labels.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", *(f"p{i}" for i in range(PIXELS))])
        for image, label in zip(images, labels, strict=True):
            writer.writerow([int(label), *(round(float(v)) for v in image.reshape(-1))])
    tmp.replace(path)


def read_csv(path: Path) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Read a CSV written by :func:`write_csv`.

    Returns
    -------
    tuple
        ``[N, 8, 8]`` float32 images and ``[N]`` int64 labels.

    Raises
    ------
    ValueError
        A row does not have a label and 64 pixels.
    """
    images: list[list[float]] = []
    labels: list[int] = []
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)  # header
        for number, row in enumerate(reader, start=2):
            if len(row) != PIXELS + 1:
                raise ValueError(f"{path}:{number}: expected {PIXELS + 1} values, got {len(row)}")
            labels.append(int(row[0]))
            images.append([float(v) for v in row[1:]])
    x = np.asarray(images, dtype=np.float32).reshape(-1, *IMAGE_SHAPE)
    return x, np.asarray(labels, dtype=np.int64)
