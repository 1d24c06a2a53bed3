"""FedProx's proximal term and the built-in torch training loop of :class:`FederatedLearning`.

FedProx (Li et al. 2020, *Federated Optimization in Heterogeneous Networks*) adds
``mu/2 * sum ||w - w_global||^2`` over the model's trainable parameters to every local loss,
so a client's model does not drift far from the round's global model. ``torch`` is imported
when these functions are called, not when the module is imported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["global_parameters", "proximal_term", "train_torch_module"]


def global_parameters(
    model: torch.nn.Module, global_weights: Sequence[Any] | Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """The global weights of ``model``'s trainable parameters, as tensors on their devices.

    Parameters
    ----------
    model
        The local model.
    global_weights
        Either a list in ``model.state_dict()`` order (what ``get_weights`` returns and the
        aggregator sends; buffers included), or a mapping from state-dict key to array.

    Returns
    -------
    dict
        Parameter name → detached tensor of the parameter's dtype and device.

    Raises
    ------
    ValueError
        If the list's length differs from the state dict's, a parameter is missing from the
        mapping, or a shape differs.
    """
    import torch  # noqa: PLC0415 - torch only when used

    if isinstance(global_weights, Mapping):
        by_name = dict(global_weights)
    else:
        keys = list(model.state_dict().keys())
        if len(keys) != len(global_weights):
            raise ValueError(
                f"global_weights has {len(global_weights)} arrays, the model's state dict "
                f"{len(keys)}"
            )
        by_name = dict(zip(keys, global_weights, strict=True))
    out: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name not in by_name:
            raise ValueError(f"global_weights has no value for parameter {name!r}")
        value = torch.as_tensor(np.asarray(by_name[name]))
        if tuple(value.shape) != tuple(param.shape):
            raise ValueError(
                f"global weight {name!r} has shape {tuple(value.shape)}, the model "
                f"{tuple(param.shape)}"
            )
        out[name] = value.to(device=param.device, dtype=param.dtype).detach()
    return out


def proximal_term(
    model: torch.nn.Module,
    global_weights: Sequence[Any] | Mapping[str, Any] | Mapping[str, torch.Tensor],
    mu: float,
) -> torch.Tensor:
    """FedProx's ``mu/2 * sum_p ||p - p_global||^2`` over the trainable parameters.

    Add it to the local loss before ``backward()``::

        loss = criterion(model(x), y) + proximal_term(model, fl.global_weights, fl.proximal_mu)

    Parameters
    ----------
    model
        The local model (its parameters carry the gradient).
    global_weights
        The round's global weights: a list in ``state_dict()`` order, a mapping from
        state-dict key to array, or :func:`global_parameters`' result (converted once per
        round: cheaper for many batches).
    mu
        The proximal coefficient (>= 0). 0 gives a zero tensor.

    Returns
    -------
    torch.Tensor
        A scalar with a gradient path to the parameters.

    Raises
    ------
    ValueError
        If ``mu`` is negative or not finite, or the weights do not match the model.
    """
    import torch  # noqa: PLC0415

    if not math.isfinite(mu) or mu < 0:
        raise ValueError(f"mu must be a finite number >= 0, not {mu}")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    first = params[0][1] if params else None
    zero = torch.zeros((), device=first.device if first is not None else None)
    if mu == 0 or first is None:
        return zero
    ready = (
        global_weights
        if isinstance(global_weights, Mapping)
        and all(isinstance(v, torch.Tensor) for v in global_weights.values())
        and all(n in global_weights for n, _ in params)
        else global_parameters(model, global_weights)
    )
    total = zero.to(first.dtype)
    for name, param in params:
        total = total + torch.sum((param - ready[name]) ** 2)
    return (mu / 2.0) * total


def _batches(train_data: Any, batch_size: int, device: str) -> Iterable[tuple[Any, Any]]:
    import torch  # noqa: PLC0415

    if isinstance(train_data, tuple) and len(train_data) == 2:
        x = torch.as_tensor(
            np.asarray(train_data[0])
            if not isinstance(train_data[0], torch.Tensor)
            else train_data[0]
        )
        y = torch.as_tensor(
            np.asarray(train_data[1])
            if not isinstance(train_data[1], torch.Tensor)
            else train_data[1]
        )
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size].to(device), y[start : start + batch_size].to(device)
        return
    for batch in train_data:
        x, y = batch[0], batch[1]
        yield torch.as_tensor(x).to(device), torch.as_tensor(y).to(device)


def train_torch_module(
    model: torch.nn.Module,
    train_data: Any,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float = 0.01,
    momentum: float = 0.0,
    loss_fn: Any = None,
    optimizer: Any = None,
    proximal_mu: float = 0.0,
    global_weights: Sequence[Any] | Mapping[str, Any] | None = None,
    device: str | None = None,
) -> dict[str, float]:
    """Train a bare ``nn.Module`` locally for one round (FederatedLearning's built-in path).

    Parameters
    ----------
    model
        The module; trained in place.
    train_data
        A ``(x, y)`` tuple of arrays or tensors (batched here, in order), or an iterable of
        ``(x, y)`` batches such as a ``DataLoader``.
    epochs, batch_size, learning_rate, momentum
        The local training (SGD unless ``optimizer`` is given).
    loss_fn
        ``loss_fn(output, y)``; cross-entropy for integer targets, MSE otherwise.
    optimizer
        An optimizer over ``model.parameters()`` (kept across rounds by the caller), or None
        for a fresh SGD.
    proximal_mu, global_weights
        FedProx: with ``mu > 0`` and the round's global weights, :func:`proximal_term` is
        added to every batch's loss.
    device
        Where to train; the model's device by default.

    Returns
    -------
    dict
        ``{"loss": mean data loss of the last epoch (without the proximal term)}``.
    """
    import torch  # noqa: PLC0415

    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be >= 1")
    params = list(model.parameters())
    where = device or (str(params[0].device) if params else "cpu")
    opt = optimizer or torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=momentum)
    anchor = (
        global_parameters(model, global_weights)
        if proximal_mu > 0 and global_weights is not None
        else None
    )
    model.train()
    last = math.nan
    for _epoch in range(epochs):
        total, count = 0.0, 0
        for x, y in _batches(train_data, batch_size, where):
            if loss_fn is not None:
                criterion = loss_fn
            elif not torch.is_floating_point(y):
                criterion = torch.nn.functional.cross_entropy
            else:
                criterion = torch.nn.functional.mse_loss
            out = model(x.float() if torch.is_floating_point(x) else x)
            data_loss = criterion(out, y.long() if not torch.is_floating_point(y) else y)
            loss = data_loss
            if anchor is not None:
                loss = loss + proximal_term(model, anchor, proximal_mu)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(data_loss.detach()) * len(x)
            count += len(x)
        last = total / count if count else math.nan
    return {"loss": last}
