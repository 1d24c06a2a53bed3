"""The benchmark's model and "training": layer shapes, initial weights, client deltas, the
expected FedAvg result and the correctness check.

Pure NumPy and the standard library: the Flower workers import this module from
``.venv-flower``, which has neither Sedna nor the bench's other dependencies.

Every client starts from the same initial weights and, each round, "trains" by adding its own
constant ``delta(k)`` to every element of the global weights it holds. With sample counts
``n_k``, FedAvg then moves every element by ``shift = sum(n_k * delta(k)) / sum(n_k)`` per
round, so after ``R`` rounds the global model must equal ``initial + R * shift``, element by
element. A server that dropped, duplicated, misweighted or permuted an update, or mixed up
layers, misses that by far more than the tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "DTYPE",
    "TOLERANCE",
    "Shape",
    "delta",
    "initial_weights",
    "layer_shapes",
    "max_abs_error",
    "model_bytes",
    "sample_count",
    "shift",
]

Array = npt.NDArray[Any]
Shape = tuple[int, ...]

DTYPE: Final = np.float32
SEED: Final = 20260101
TOLERANCE: Final = 1e-4
"""Largest accepted |aggregate - expected| (float32 sums over a few rounds stay near 1e-6; a
wrong weighting or a missing client is off by 1e-3 or more, see :func:`delta`)."""

# Bias / normalisation vectors between the weight matrices, as in a real network.
_SMALL_SIZES: Final = (256, 512, 1024, 2048, 4096)
# Relative sizes of the weight matrices: a mix of big and small layers (embedding, attention,
# MLP and head blocks of different widths), repeated over the layers.
_WEIGHT_RATIOS: Final = (6, 1, 3, 8, 2, 4, 1, 5, 2, 3)
# Their widths (hidden sizes of common models).
_COLUMNS: Final = (1024, 4096, 768, 2048, 3072)


def layer_shapes(params: int, layers: int) -> list[Shape]:
    """Split ``params`` float32 values into ``layers`` tensors of varied sizes.

    Even positions are weight matrices whose sizes follow :data:`_WEIGHT_RATIOS` (2-D, widths
    from :data:`_COLUMNS`; 1-D when too small); odd positions are small 1-D bias vectors (the
    last one also takes what does not fill a matrix row). The shapes are deterministic and add
    up to exactly ``params``.

    Raises
    ------
    ValueError
        ``params`` or ``layers`` is not positive, or there are more layers than values.
    """
    if params <= 0:
        raise ValueError(f"--params must be > 0, not {params}")
    if layers <= 0:
        raise ValueError(f"--layers must be > 0, not {layers}")
    if layers > params:
        raise ValueError(f"--layers ({layers}) cannot exceed --params ({params})")
    n_weights = (layers + 1) // 2
    n_small = layers - n_weights
    small = [_SMALL_SIZES[i % len(_SMALL_SIZES)] for i in range(n_small)]
    # Tiny models: the bias vectors get at most a tenth of the values, one value at least.
    budget = max(params // 10, n_small)
    while sum(small) > budget:
        small = [max(1, s // 2) for s in small]
    remaining = params - sum(small)
    ratios = [_WEIGHT_RATIOS[i % len(_WEIGHT_RATIOS)] for i in range(n_weights)]
    sizes = [max(1, remaining * r // sum(ratios)) for r in ratios]
    sizes[0] += remaining - sum(sizes)  # the rounding remainder goes to the first (embedding)
    if sizes[0] <= 0:
        raise ValueError(f"--params {params} is too small for {layers} layers")
    weights: list[Shape] = []
    leftover = 0
    for i, size in enumerate(sizes):
        cols = _COLUMNS[i % len(_COLUMNS)]
        if n_small and size >= 2 * cols:
            # A rows x cols matrix; what does not fill a row goes to the last bias vector.
            weights.append((size // cols, cols))
            leftover += size % cols
        else:
            weights.append((size,))
    if leftover:
        small[-1] += leftover
    shapes: list[Shape] = []
    for i in range(layers):
        shapes.append((small[i // 2],) if i % 2 else weights[i // 2])
    assert sum(math.prod(s) for s in shapes) == params
    return shapes


def model_bytes(shapes: Sequence[Shape]) -> int:
    """Bytes of one model as float32."""
    return sum(math.prod(s) for s in shapes) * np.dtype(DTYPE).itemsize


def initial_weights(shapes: Sequence[Shape]) -> list[Array]:
    """The same pseudo-random float32 weights in every process (N(0, 0.05), fixed seed)."""
    rng = np.random.default_rng(SEED)
    out: list[Array] = []
    for shape in shapes:
        layer = rng.standard_normal(shape, dtype=DTYPE)
        layer *= DTYPE(0.05)
        out.append(layer)
    return out


def sample_count(client: int) -> int:
    """Client ``client``'s number of training samples (the FedAvg weight): 100, 200, ..."""
    return 100 * (client + 1)


def delta(client: int) -> float:
    """What client ``client`` adds to every weight in a round: 0.01, 0.02, ..."""
    return 0.01 * (client + 1)


def shift(clients: int) -> float:
    """How far FedAvg moves every weight per round with ``clients`` clients."""
    total = sum(sample_count(k) for k in range(clients))
    return sum(sample_count(k) * delta(k) for k in range(clients)) / total


def max_abs_error(got: Sequence[Any], initial: Sequence[Array], clients: int, rounds: int) -> float:
    """Largest |got - expected| over all elements; ``inf`` when the layers or shapes differ."""
    if len(got) != len(initial):
        return math.inf
    moved = rounds * shift(clients)
    worst = 0.0
    for layer, start in zip(got, initial, strict=True):
        array = np.asarray(layer)
        if array.shape != start.shape:
            return math.inf
        diff = np.abs(array.astype(np.float64) - start.astype(np.float64) - moved)
        worst = max(worst, float(diff.max(initial=0.0)))
    return worst
