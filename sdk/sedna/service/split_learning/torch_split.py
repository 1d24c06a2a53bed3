"""Torch models cut in two for MistNet: the edge front and the cloud back.

**The model contract.** MistNet needs to run "the first ``cut_layer`` layers" on the edge
and "the rest" in the cloud, so the model must be a sequence of layers whose composition is
its forward pass:

* a ``torch.nn.Sequential`` (the layers are its children), or
* any ``nn.Module`` with a ``layers`` attribute that is an ``nn.Sequential`` or
  ``nn.ModuleList`` and whose ``forward`` applies those layers in order and nothing else, or
* an estimator object with a ``model`` attribute that is one of those (upstream's
  ``FederatedLearningV2`` estimators expose ``.model`` and ``.hyperparameters``).

Layer ``i`` counts from 0; ``cut_layer = k`` puts layers ``0 .. k-1`` on the edge. The
weights exchanged are the full model's ``state_dict`` values (parameters and buffers), in
``state_dict`` order, as numpy arrays: edge and cloud build the same architecture and load
them by position, each shape checked.

Importing this module imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

__all__ = [
    "TorchSplitModel",
    "get_state_arrays",
    "resolve_module",
    "set_state_arrays",
    "split_layers",
]

Array = npt.NDArray[Any]


def resolve_module(estimator: Any) -> nn.Module:
    """The ``nn.Module`` of ``estimator`` (itself, or its ``model`` attribute).

    Raises
    ------
    TypeError
        If neither is an ``nn.Module``.
    """
    if isinstance(estimator, nn.Module):
        return estimator
    inner = getattr(estimator, "model", None)
    if isinstance(inner, nn.Module):
        return inner
    raise TypeError(
        f"MistNet needs a torch model: an nn.Module (or an estimator whose .model is one), "
        f"got {type(estimator).__name__}"
    )


def _layers(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        return list(module.children())
    inner = getattr(module, "layers", None)
    if isinstance(inner, (nn.Sequential, nn.ModuleList)):
        return list(inner.children())
    raise TypeError(
        f"MistNet cuts the model between layers: pass an nn.Sequential, or a module whose "
        f"'layers' attribute is an nn.Sequential/nn.ModuleList applied in order "
        f"({type(module).__name__} is neither)"
    )


def split_layers(module: nn.Module, cut_layer: int) -> tuple[nn.Sequential, nn.Sequential]:
    """``(front, back)``: layers ``[0, cut_layer)`` and ``[cut_layer, n)``, sharing parameters.

    Raises
    ------
    TypeError
        The model does not follow the contract (module docstring).
    ValueError
        ``cut_layer`` leaves no layer to the cloud, or is negative.
    """
    layers = _layers(module)
    if not 0 <= cut_layer < len(layers):
        raise ValueError(
            f"cut_layer={cut_layer} must be between 0 and {len(layers) - 1}: the model has "
            f"{len(layers)} layers and the cloud needs at least one"
        )
    return nn.Sequential(*layers[:cut_layer]), nn.Sequential(*layers[cut_layer:])


def get_state_arrays(module: nn.Module) -> list[Array]:
    """The ``state_dict`` values as numpy copies, in ``state_dict`` order."""
    return [t.detach().cpu().numpy().copy() for t in module.state_dict().values()]


def set_state_arrays(module: nn.Module, arrays: Sequence[Array]) -> None:
    """Load ``arrays`` (as :func:`get_state_arrays` gives them) into ``module``.

    Raises
    ------
    ValueError
        A count or a shape differs; the message names the entry.
    """
    state = module.state_dict()
    if len(arrays) != len(state):
        raise ValueError(
            f"the weights have {len(arrays)} tensors, the model's state_dict has {len(state)}: "
            "edge and cloud must build the same architecture"
        )
    new: dict[str, torch.Tensor] = {}
    for (name, tensor), array in zip(state.items(), arrays, strict=True):
        if tuple(array.shape) != tuple(tensor.shape):
            raise ValueError(
                f"weights entry {name!r} has shape {tuple(array.shape)}, the model's is "
                f"{tuple(tensor.shape)}"
            )
        new[name] = torch.as_tensor(np.ascontiguousarray(array), dtype=tensor.dtype)
    module.load_state_dict(new)


class TorchSplitModel:
    """The cloud's :class:`~sedna.service.split_learning.session.ServerModel` for torch.

    Trains the layers after ``cut_layer`` on uploaded features; the front layers are never
    changed (they are the edge's feature extractor, so the published front stays the one the
    edges run).

    Parameters
    ----------
    model
        The full model (module docstring's contract).
    cut_layer
        Where it is cut.
    epochs, batch_size, learning_rate, momentum
        SGD over each round's features.
    loss_fn
        ``loss_fn(outputs, labels)``; cross-entropy for integer labels, MSE for float labels
        by default.
    eval_data
        Optional ``(x, y)`` raw inputs and labels: after each round the full model is
        evaluated on them and ``eval_accuracy`` / ``eval_loss`` join the round's metrics.
    seed
        Seeds the batch order.
    """

    def __init__(
        self,
        model: nn.Module,
        cut_layer: int,
        *,
        epochs: int = 5,
        batch_size: int = 32,
        learning_rate: float = 0.05,
        momentum: float = 0.9,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        eval_data: tuple[Any, Any] | None = None,
        seed: int = 0,
    ) -> None:
        if epochs < 1 or batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
        if not (math.isfinite(learning_rate) and learning_rate > 0):
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        self.model = model
        self.cut_layer = cut_layer
        self.front, self.back = split_layers(model, cut_layer)
        self.epochs = epochs
        self.batch_size = batch_size
        self.loss_fn = loss_fn
        self.eval_data = eval_data
        self._generator = torch.Generator().manual_seed(seed)
        self._optimizer = torch.optim.SGD(
            self.back.parameters(), lr=learning_rate, momentum=momentum
        )

    def get_weights(self) -> list[Array]:
        """The full model's ``state_dict`` arrays."""
        return get_state_arrays(self.model)

    def set_weights(self, weights: Sequence[Array]) -> None:
        """Load full-model weights (e.g. a pretrained model)."""
        set_state_arrays(self.model, weights)

    def _loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.loss_fn is not None:
            return self.loss_fn(outputs, labels)
        if labels.dtype.is_floating_point:
            return nn.functional.mse_loss(outputs.reshape(labels.shape), labels)
        return nn.functional.cross_entropy(outputs, labels.long())

    def train_round(self, features: Array, labels: Array, round_number: int) -> Mapping[str, float]:
        """SGD on the back layers over ``features``; returns the mean training loss and, with
        ``eval_data``, the full model's accuracy and loss on it."""
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        y = torch.from_numpy(np.ascontiguousarray(labels))
        self.back.train()
        total, seen = 0.0, 0
        for _epoch in range(self.epochs):
            order = torch.randperm(x.shape[0], generator=self._generator)
            for start in range(0, x.shape[0], self.batch_size):
                index = order[start : start + self.batch_size]
                self._optimizer.zero_grad()
                loss = self._loss(self.back(x[index]), y[index])
                loss.backward()  # type: ignore[no-untyped-call]
                self._optimizer.step()
                total += float(loss.detach()) * len(index)
                seen += len(index)
        metrics = {"train_loss": total / max(seen, 1), "samples": float(x.shape[0])}
        if self.eval_data is not None:
            metrics.update(self.evaluate(*self.eval_data))
        return metrics

    @torch.no_grad()
    def evaluate(self, x: Any, y: Any) -> dict[str, float]:
        """The full model's ``eval_accuracy`` (integer labels) and ``eval_loss`` on ``(x, y)``."""
        self.model.eval()
        inputs = torch.as_tensor(np.asarray(x, dtype=np.float32))
        labels = torch.as_tensor(np.asarray(y))
        outputs = self.back(self.front(inputs))
        out = {"eval_loss": float(self._loss(outputs, labels))}
        if not labels.dtype.is_floating_point:
            out["eval_accuracy"] = float((outputs.argmax(dim=1) == labels).float().mean())
        return out
