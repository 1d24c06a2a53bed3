"""Server-optimiser aggregations: FedAvgM, FedAdagrad, FedAdam, FedYogi.

All are streaming: the round keeps the running sample-weighted sum, and :meth:`finish` turns
the weighted average ``avg`` of the client weights into a step from the global weights ``x``.

* FedAvgM (Hsu et al. 2019, Flower's form): ``d = x - avg``, ``u = mu * u + d``,
  ``x' = x - lr * u``.
* FedAdagrad / FedAdam / FedYogi (Reddi et al. 2021, "Adaptive Federated Optimization",
  Algorithm 2): pseudo-gradient ``D = avg - x``; ``m = beta_1 * m + (1 - beta_1) * D``;

  - Adagrad: ``v = v + D**2``
  - Adam: ``v = beta_2 * v + (1 - beta_2) * D**2``
  - Yogi: ``v = v - (1 - beta_2) * D**2 * sign(v - D**2)``

  and ``x' = x + eta * m / (sqrt(v) + tau)``. ``m`` and ``v`` start at zero (as Flower; the
  paper allows ``v_{-1} >= tau**2``). There is no Adam bias correction (as the paper; Flower's
  FedAdam scales ``eta`` by ``sqrt(1 - beta_2**t) / (1 - beta_1**t)``).

Defaults are those of Flower's ``flwr.server.strategy`` classes. ``eta_l`` (the client
learning rate) is carried for the clients and unused by the server.

Every class takes ``accumulate_dtype`` (see :class:`StreamingAggregation`). The optimiser
state (``u``, ``m``, ``v``) is float64, one or two copies of the model; :meth:`finish` works
layer by layer so its temporaries are a few layers, not whole models.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import numpy as np

from sedna.algorithms.aggregation._params import param_float
from sedna.algorithms.aggregation.aggregation import (
    AggregationError,
    Array,
    StreamingAggregation,
    _same_shapes,
    get_arrays,
    put_arrays,
)
from sedna.common.class_factory import ClassFactory, ClassType

__all__ = ["FedAdagrad", "FedAdam", "FedAvgM", "FedOpt", "FedYogi"]


@ClassFactory.register(ClassType.FL_AGG)
class FedAvgM(StreamingAggregation):
    """FedAvg with server momentum.

    ``d = x - avg``; ``u = server_momentum * u + d`` (``u`` starts at 0);
    ``x' = x - server_learning_rate * u``. With the defaults (Flower's: lr 1, momentum 0)
    this is FedAvg.

    Parameters
    ----------
    server_learning_rate : float or str, default 1.0
        Server step size, > 0.
    server_momentum : float or str, default 0.0
        Momentum factor, in [0, 1).
    accumulate_dtype : {"auto", "float32", "float64"}, default "auto"
        dtype of the running sum.
    """

    def __init__(
        self,
        server_learning_rate: float | str = 1.0,
        server_momentum: float | str = 0.0,
        accumulate_dtype: str | None = None,
    ) -> None:
        super().__init__(accumulate_dtype=accumulate_dtype)
        self.server_learning_rate = param_float(
            server_learning_rate, "server_learning_rate", low=0.0, low_open=True
        )
        self.server_momentum = param_float(
            server_momentum, "server_momentum", low=0.0, high=1.0, high_open=True
        )
        self.momentum: list[Array] | None = None

    def _result(self) -> list[Array]:
        average = self._take_average()
        if self._global is None:
            return self._as_model_dtype(average)
        assert self._template is not None
        lr, mu = self.server_learning_rate, self.server_momentum
        previous = self.momentum
        momentum: list[Array] = []
        out: list[Array] = []
        average.reverse()
        for index, (_shape, dtype) in enumerate(self._template):
            x = np.asarray(self._global[index], dtype=np.float64)
            d = x - average.pop()
            u = d if previous is None else mu * previous[index] + d
            momentum.append(u)
            out.append((x - lr * u).astype(dtype, copy=False))
        self.momentum = momentum
        return out

    def _extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        put_arrays(state, "momentum", self.momentum)
        return state

    def _parse_extra_state(
        self, state: Mapping[str, Any], weights: list[Array] | None
    ) -> dict[str, Any]:
        momentum = get_arrays(state, "momentum", dtype=np.float64)
        _same_shapes(momentum, weights, "momentum and weights")
        return {"momentum": momentum}

    def _apply_extra_state(self, extra: dict[str, Any]) -> None:
        self.momentum = extra["momentum"]


class FedOpt(StreamingAggregation, abc.ABC):
    """Base of FedAdagrad, FedAdam and FedYogi (see the module docstring for the formulas).

    Parameters
    ----------
    eta : float or str
        Server learning rate, > 0.
    eta_l : float or str
        Client learning rate, > 0 (carried, not used by the server).
    beta_1 : float or str
        First-moment decay, in [0, 1).
    beta_2 : float or str
        Second-moment decay, in [0, 1) (unused by FedAdagrad).
    tau : float or str
        Adaptivity (denominator offset), > 0.
    accumulate_dtype : {"auto", "float32", "float64"}, default "auto"
        dtype of the running sum.
    """

    def __init__(
        self,
        eta: float | str,
        eta_l: float | str,
        beta_1: float | str,
        beta_2: float | str,
        tau: float | str,
        *,
        accumulate_dtype: str | None = None,
    ) -> None:
        super().__init__(accumulate_dtype=accumulate_dtype)
        self.eta = param_float(eta, "eta", low=0.0, low_open=True)
        self.eta_l = param_float(eta_l, "eta_l", low=0.0, low_open=True)
        self.beta_1 = param_float(beta_1, "beta_1", low=0.0, high=1.0, high_open=True)
        self.beta_2 = param_float(beta_2, "beta_2", low=0.0, high=1.0, high_open=True)
        self.tau = param_float(tau, "tau", low=0.0, low_open=True)
        self.m: list[Array] | None = None
        self.v: list[Array] | None = None

    @abc.abstractmethod
    def _second_moment(self, v: Array, delta: Array) -> Array:
        """The new ``v`` from the previous ``v`` and the pseudo-gradient ``delta``."""

    def _result(self) -> list[Array]:
        average = self._take_average()
        if self._global is None:
            return self._as_model_dtype(average)
        assert self._template is not None
        b1 = self.beta_1
        m: list[Array] = []
        v: list[Array] = []
        out: list[Array] = []
        average.reverse()
        for index, (_shape, dtype) in enumerate(self._template):
            x = np.asarray(self._global[index], dtype=np.float64)
            delta = average.pop() - x
            m_prev = self.m[index] if self.m is not None else np.zeros_like(delta)
            v_prev = self.v[index] if self.v is not None else np.zeros_like(delta)
            mt = b1 * m_prev + (1.0 - b1) * delta
            vt = self._second_moment(v_prev, delta)
            m.append(mt)
            v.append(vt)
            out.append((x + self.eta * mt / (np.sqrt(vt) + self.tau)).astype(dtype, copy=False))
        self.m, self.v = m, v
        return out

    def _extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        put_arrays(state, "m", self.m)
        put_arrays(state, "v", self.v)
        return state

    def _parse_extra_state(
        self, state: Mapping[str, Any], weights: list[Array] | None
    ) -> dict[str, Any]:
        m = get_arrays(state, "m", dtype=np.float64)
        v = get_arrays(state, "v", dtype=np.float64)
        if (m is None) != (v is None):
            raise AggregationError("state must hold both m and v, or neither")
        _same_shapes(m, v, "m and v")
        _same_shapes(m, weights, "m and weights")
        if v is not None and any(bool((layer < 0).any()) for layer in v):
            raise AggregationError("state: v must not be negative")
        return {"m": m, "v": v}

    def _apply_extra_state(self, extra: dict[str, Any]) -> None:
        self.m = extra["m"]
        self.v = extra["v"]


@ClassFactory.register(ClassType.FL_AGG)
class FedAdagrad(FedOpt):
    """FedAdagrad: ``v = v + D**2``. Flower's defaults: eta 0.1, eta_l 0.1, beta_1 0, tau 1e-9."""

    def __init__(
        self,
        eta: float | str = 1e-1,
        eta_l: float | str = 1e-1,
        tau: float | str = 1e-9,
        beta_1: float | str = 0.0,
        *,
        accumulate_dtype: str | None = None,
    ) -> None:
        super().__init__(
            eta=eta,
            eta_l=eta_l,
            beta_1=beta_1,
            beta_2=0.0,
            tau=tau,
            accumulate_dtype=accumulate_dtype,
        )

    def _second_moment(self, v: Array, delta: Array) -> Array:
        result: Array = v + delta * delta
        return result


@ClassFactory.register(ClassType.FL_AGG)
class FedAdam(FedOpt):
    """FedAdam: ``v = beta_2 v + (1 - beta_2) D**2``.

    Flower's defaults: eta 0.1, eta_l 0.1, beta_1 0.9, beta_2 0.99, tau 1e-9.
    """

    def __init__(
        self,
        eta: float | str = 1e-1,
        eta_l: float | str = 1e-1,
        beta_1: float | str = 0.9,
        beta_2: float | str = 0.99,
        tau: float | str = 1e-9,
        *,
        accumulate_dtype: str | None = None,
    ) -> None:
        super().__init__(
            eta=eta,
            eta_l=eta_l,
            beta_1=beta_1,
            beta_2=beta_2,
            tau=tau,
            accumulate_dtype=accumulate_dtype,
        )

    def _second_moment(self, v: Array, delta: Array) -> Array:
        return self.beta_2 * v + (1.0 - self.beta_2) * delta * delta


@ClassFactory.register(ClassType.FL_AGG)
class FedYogi(FedOpt):
    """FedYogi: ``v = v - (1 - beta_2) D**2 sign(v - D**2)``.

    Flower's defaults: eta 0.01, eta_l 0.0316, beta_1 0.9, beta_2 0.99, tau 1e-3.
    """

    def __init__(
        self,
        eta: float | str = 1e-2,
        eta_l: float | str = 0.0316,
        beta_1: float | str = 0.9,
        beta_2: float | str = 0.99,
        tau: float | str = 1e-3,
        *,
        accumulate_dtype: str | None = None,
    ) -> None:
        super().__init__(
            eta=eta,
            eta_l=eta_l,
            beta_1=beta_1,
            beta_2=beta_2,
            tau=tau,
            accumulate_dtype=accumulate_dtype,
        )

    def _second_moment(self, v: Array, delta: Array) -> Array:
        squared = delta * delta
        result: Array = v - (1.0 - self.beta_2) * squared * np.sign(v - squared)
        return result
