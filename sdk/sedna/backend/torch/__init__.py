"""PyTorch backend (upstream ``sedna.backend.torch.TorchBackend``), ``BACKEND_TYPE=TORCH``.

Importing this module imports ``torch``; :func:`sedna.backend.set_backend` does so only when
the backend is chosen.

Besides user estimators (classes with ``load``/``predict``/...), a bare ``torch.nn.Module``
works: :meth:`TorchBackend.predict` runs its forward pass on the input as a tensor (no grad,
eval mode) and returns numpy; :meth:`~TorchBackend.load` reads a state dict (``torch.save``
of ``module.state_dict()``, loaded with ``weights_only=True``) or a TorchScript file;
:meth:`~TorchBackend.save` writes the state dict; :meth:`~TorchBackend.get_weights` /
:meth:`~TorchBackend.set_weights` use the state dict as a list of numpy arrays.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from sedna.backend.base import BackendBase

__all__ = ["TorchBackend"]

_log = logging.getLogger(__name__)


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, Mapping):
        return {key: _to_numpy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_numpy(item) for item in value)
    return value


class TorchBackend(BackendBase):
    """PyTorch backend.

    Parameters
    ----------
    estimator : class, factory or instance
        A user estimator, or a ``torch.nn.Module`` (class or instance). A class is
        instantiated here without arguments, as upstream.
    fine_tune : bool, default True
        See :class:`~sedna.backend.base.BackendBase`.
    **kwargs
        See :class:`~sedna.backend.base.BackendBase`; ``use_cuda`` selects ``cuda`` when
        available.

    Attributes
    ----------
    device : str
        ``"cuda"`` or ``"cpu"``.
    """

    def __init__(self, estimator: Any, fine_tune: bool = True, **kwargs: Any) -> None:
        super().__init__(estimator=estimator, fine_tune=fine_tune, **kwargs)
        self.framework = "pytorch"
        self.device = "cuda" if self.use_cuda and torch.cuda.is_available() else "cpu"
        self.instantiate()
        if isinstance(self.estimator, torch.nn.Module):
            self.estimator.to(self.device)

    @property
    def _module(self) -> torch.nn.Module | None:
        return self.estimator if isinstance(self.estimator, torch.nn.Module) else None

    def _own(self, name: str) -> bool:
        """Whether the estimator has a ``name`` method of its own (not ``nn.Module``'s)."""
        method = getattr(self.estimator, name, None)
        if not callable(method):
            return False
        if self._module is None:
            return True
        return getattr(type(self.estimator), name, None) is not getattr(torch.nn.Module, name, None)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """Train with the estimator's ``fit`` or own ``train``.

        Upstream's TorchBackend.train does nothing; a bare ``nn.Module`` (whose ``train``
        only switches the training mode) cannot be trained here.

        Raises
        ------
        NotImplementedError
            If the estimator has neither ``fit`` nor its own ``train``.
        """
        if self._own("fit"):
            return self._call(("fit",), *args, **kwargs)
        if self._own("train"):
            return self._call(("train",), *args, **kwargs)
        raise NotImplementedError(
            f"TorchBackend cannot train a bare {type(self.estimator).__name__}: give the "
            "estimator a fit() or train(train_data, valid_data=None, **kwargs) method"
        )

    def predict(self, data: Any, **kwargs: Any) -> Any:
        """Load the model on first use, then predict.

        Parameters
        ----------
        data : array_like
            The input; for a bare ``nn.Module`` it becomes a tensor (floating inputs are cast
            to the module's parameter dtype) on :attr:`device`.
        **kwargs
            Passed to the estimator's ``predict`` (the names it accepts).

        Returns
        -------
        Any
            The estimator's result; for a bare module, its output as numpy.
        """
        if not self.has_load:
            self.load()
        if self._own("predict"):
            return self._call(("predict",), data, **kwargs)
        module = self._module
        if module is None:
            raise AttributeError(f"the estimator {type(self.estimator).__name__} has no predict()")
        module.eval()
        with torch.no_grad():
            return _to_numpy(module(self._tensor(data)))

    def _tensor(self, data: Any) -> torch.Tensor:
        tensor = data if isinstance(data, torch.Tensor) else torch.as_tensor(np.asarray(data))
        module = self._module
        if tensor.is_floating_point() and module is not None:
            param = next(iter(module.parameters()), None)
            if param is not None and param.is_floating_point():
                tensor = tensor.to(param.dtype)
        return tensor.to(self.device)

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        """Load the model on first use, then ``estimator.evaluate`` (upstream)."""
        if not self.has_load:
            self.load()
        return self._call(("evaluate",), *args, **kwargs)

    def _load_local(self, path: str) -> Any:
        if self._own("load"):
            return super()._load_local(path)
        module = self._module
        if module is None:
            return None
        try:
            with warnings.catch_warnings():
                # A TorchScript archive is dispatched to torch.jit.load with a warning.
                warnings.filterwarnings("ignore", message=".*TorchScript archive.*")
                state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception:
            # Not a state dict: a TorchScript archive replaces the module.
            scripted = torch.jit.load(path, map_location=self.device)  # type: ignore[no-untyped-call]
            self.estimator = scripted
            return scripted
        if isinstance(state, torch.nn.Module):
            self.estimator = state.to(self.device)
            return self.estimator
        if not isinstance(state, Mapping):
            raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
        return module.load_state_dict(state)

    def _save_local(self, path: str) -> None:
        if self._own("save"):
            super()._save_local(path)
            return
        module = self._module
        if module is None:
            raise AttributeError(f"the estimator {type(self.estimator).__name__} has no save()")
        torch.save(module.state_dict(), path)

    def get_weights(self) -> list[np.ndarray[Any, Any]]:
        """The state dict's tensors as numpy arrays, in state-dict order."""
        if self._own("get_weights") or self._module is None:
            return super().get_weights()  # type: ignore[no-any-return]
        return [t.detach().cpu().numpy() for t in self._module.state_dict().values()]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Load arrays (in state-dict order) into the module.

        Raises
        ------
        ValueError
            If the number of arrays differs from the state dict's.
        """
        module = self._module
        if self._own("set_weights") or module is None:
            super().set_weights(weights)
            return
        keys = list(module.state_dict().keys())
        if len(keys) != len(weights):
            raise ValueError(f"expected {len(keys)} weight arrays, got {len(weights)}")
        state = {key: torch.as_tensor(np.asarray(w)) for key, w in zip(keys, weights, strict=True)}
        module.load_state_dict(state)
