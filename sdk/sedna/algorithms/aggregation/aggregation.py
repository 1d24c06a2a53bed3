"""Aggregation algorithms for federated learning, compatible with upstream Sedna.

Upstream's API is kept: :class:`AggClient` (``num_samples``, ``weights``),
:class:`BaseAggregation` (``total_size``, ``weights``, ``aggregate(clients)``) and the
algorithms registered under :attr:`ClassType.FL_AGG <sedna.common.class_factory.ClassType>`
by class name (``ClassFactory.get_cls(ClassType.FL_AGG, "FedAvg")``).

Beyond upstream, every algorithm offers a *round* interface for an aggregation server::

    agg.begin_round(global_weights)        # the weights the clients started from (or None)
    agg.add("node-a", weights, num_samples) # validated; AggregationError if rejected
    agg.add("node-b", weights, num_samples)
    new_global = agg.finish()
    checkpoint = agg.state_dict()           # scalars and np.ndarray values only

Algorithms with ``streaming = True`` keep running float64 weighted sums, so their memory does
not grow with the number of clients; the others buffer the round's updates.
``aggregate(clients)`` is ``begin_round(self.weights)``, one ``add`` per client, ``finish()``.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from sedna.algorithms.aggregation._params import param_float, param_int
from sedna.common.class_factory import ClassFactory, ClassType

__all__ = [
    "AggClient",
    "AggregationError",
    "Array",
    "BaseAggregation",
    "BufferedAggregation",
    "FedAvg",
    "FedAvgV2",
    "MistNet",
    "RoundStateError",
    "StreamingAggregation",
]

_log = logging.getLogger(__name__)

Array = npt.NDArray[Any]
"""One layer of weights."""

_Template = list[tuple[tuple[int, ...], np.dtype[Any]]]


class AggregationError(ValueError):
    """A rejected update, weight list or checkpoint; the message names the client and layer.

    A rejected :meth:`BaseAggregation.add` leaves the round exactly as it was.
    """


class RoundStateError(AggregationError):
    """A round call out of order: ``add``/``finish`` with no open round."""


@dataclass(eq=False)
class AggClient:
    """One client's update (upstream ``AggClient``).

    Parameters
    ----------
    num_samples : int
        Number of training samples behind the update (the FedAvg weight); must be > 0.
    weights : list
        The weights, one array-like per layer (ndarrays, or nested lists as upstream sends).
    """

    num_samples: int = 0
    weights: Sequence[Any] = field(default_factory=list)


# --------------------------------------------------------------------------- validation


def _is_float_dtype(dtype: np.dtype[Any]) -> bool:
    return bool(np.issubdtype(dtype, np.floating))


def _as_layer(layer: object, where: str) -> Array:
    """An ndarray of floats for ``layer``; nested lists of numbers are converted to float64."""
    if isinstance(layer, np.ndarray):
        array = layer
        if not _is_float_dtype(array.dtype):
            raise AggregationError(
                f"{where} has dtype {array.dtype}; weights must be floating point "
                "(float16, float32 or float64)"
            )
    else:
        try:
            array = np.asarray(layer)
        except (TypeError, ValueError) as err:
            raise AggregationError(f"{where} is not a numeric array: {err}") from None
        if array.dtype.kind not in "iuf":
            raise AggregationError(
                f"{where} is not an array of numbers (got {type(layer).__name__} "
                f"of dtype {array.dtype})"
            )
        if not _is_float_dtype(array.dtype):
            array = array.astype(np.float64)
    if not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise AggregationError(f"{where} holds {bad} NaN or infinite value(s)")
    return array


def _as_layers(weights: object, what: str) -> list[Array]:
    if isinstance(weights, np.ndarray | str | bytes | Mapping) or not isinstance(weights, Sequence):
        raise AggregationError(
            f"{what} must be a list of arrays (one per layer), got {type(weights).__name__}"
        )
    return [_as_layer(layer, f"{what} layer {index}") for index, layer in enumerate(weights)]


def _check_template(layers: list[Array], template: _Template, what: str) -> None:
    if len(layers) != len(template):
        raise AggregationError(f"{what} has {len(layers)} layers, expected {len(template)}")
    for index, (layer, (shape, _dtype)) in enumerate(zip(layers, template, strict=True)):
        if layer.shape != shape:
            raise AggregationError(
                f"{what} layer {index} has shape {layer.shape}, expected {shape}"
            )


def _num_samples(value: object, client_id: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise AggregationError(
            f"client {client_id!r}: num_samples must be an integer, got {value!r}"
        )
    if value <= 0:
        raise AggregationError(f"client {client_id!r}: num_samples must be > 0, got {value}")
    return int(value)


def put_arrays(state: dict[str, Any], name: str, arrays: Sequence[Array] | None) -> None:
    """Store ``arrays`` in a flat state dict as ``name.count`` and ``name.0``, ``name.1``...

    Nothing is stored for None, so :func:`get_arrays` gives None back.
    """
    if arrays is None:
        return
    state[f"{name}.count"] = len(arrays)
    for index, array in enumerate(arrays):
        state[f"{name}.{index}"] = array


def get_arrays(
    state: Mapping[str, Any], name: str, *, dtype: type[np.floating[Any]] | None = None
) -> list[Array] | None:
    """The arrays :func:`put_arrays` stored under ``name`` (None if absent); validated."""
    count = state.get(f"{name}.count")
    if count is None:
        return None
    count = param_int(count, f"state[{name + '.count'!r}]", low=0)
    arrays: list[Array] = []
    for index in range(count):
        key = f"{name}.{index}"
        if key not in state:
            raise AggregationError(f"state is missing {key!r} ({name}.count is {count})")
        array = _as_layer(state[key], f"state[{key!r}]")
        arrays.append(array.astype(dtype, copy=False) if dtype is not None else array)
    return arrays


def _same_shapes(first: Sequence[Array] | None, second: Sequence[Array] | None, what: str) -> None:
    if first is None or second is None:
        return
    if [a.shape for a in first] != [b.shape for b in second]:
        raise AggregationError(f"state: {what} do not have the same layer shapes")


# --------------------------------------------------------------------------- base


class BaseAggregation(abc.ABC):  # noqa: B024 (upstream is an ABC; plug-ins may override aggregate only)
    """Base of the aggregation algorithms (upstream ``BaseAggregation``).

    Attributes
    ----------
    total_size : int
        Total ``num_samples`` of the last finished round (upstream).
    weights : list of ndarray or None
        The last aggregate (upstream); the previous weights :meth:`aggregate` starts from.
    round_number : int
        Number of finished rounds that had at least one update.
    streaming : bool
        Class attribute: True when memory does not grow with the number of clients.

    Notes
    -----
    A plug-in written for upstream that only overrides :meth:`aggregate` still works with the
    round interface: its updates are buffered and handed to its ``aggregate`` at
    :meth:`finish`.
    """

    streaming: ClassVar[bool] = False

    def __init__(self) -> None:
        self.total_size: int = 0
        self.weights: list[Array] | None = None
        self.round_number: int = 0
        self._open = False
        self._global: list[Array] | None = None
        self._template: _Template | None = None
        self._clients: list[str] = []
        self._seen: set[str] = set()
        self._round_samples = 0
        self._buffer: list[tuple[str, list[Array], int]] = []

    # ------------------------------------------------------------------ round interface

    @property
    def round_open(self) -> bool:
        """Whether a round was begun and not yet finished."""
        return self._open

    @property
    def round_clients(self) -> list[str]:
        """The clients whose update the open (or last) round accepted, in arrival order."""
        return list(self._clients)

    def begin_round(self, global_weights: Sequence[Any] | None = None) -> None:
        """Open a round; a round still open is discarded.

        Parameters
        ----------
        global_weights : list of ndarray, optional
            The weights the clients trained from. Updates must match their layer count and
            shapes, and the aggregate has their dtypes. Server optimisers (FedAvgM, FedAdam,
            ...) need them to take a step; without them (upstream's first round, where every
            client starts from its own initialisation) the round's result is the plain
            weighted average and the optimiser state is left alone. The arrays are not copied
            and must not be modified until :meth:`finish`.

        Raises
        ------
        AggregationError
            If ``global_weights`` is not a list of finite floating-point arrays.
        """
        layers = None if global_weights is None else _as_layers(global_weights, "global_weights")
        self._global = layers
        self._template = (
            None if layers is None else [(layer.shape, layer.dtype) for layer in layers]
        )
        self._clients = []
        self._seen = set()
        self._round_samples = 0
        self._reset_round()
        self._open = True

    def add(self, client_id: str, weights: Sequence[Any], num_samples: int) -> None:
        """Add one client's update to the open round.

        Parameters
        ----------
        client_id : str
            Who sent it; each client may contribute once per round.
        weights : list of ndarray
            One floating-point array per layer (nested lists are converted to float64).
        num_samples : int
            Training samples behind the update, > 0.

        Raises
        ------
        RoundStateError
            If no round is open.
        AggregationError
            If the client already contributed, ``num_samples`` is not a positive integer, or
            the weights have the wrong number of layers, a wrong shape, a non-float dtype, or
            a NaN/Inf. The round is left untouched.
        """
        if not self._open:
            raise RoundStateError(
                f"client {client_id!r}: no round is open; call begin_round() first"
            )
        if not isinstance(client_id, str) or not client_id:
            raise AggregationError(f"client_id must be a non-empty string, got {client_id!r}")
        if client_id in self._seen:
            raise AggregationError(f"client {client_id!r} already sent an update this round")
        samples = _num_samples(num_samples, client_id)
        what = f"client {client_id!r}:"
        layers = _as_layers(weights, f"{what} weights")
        if self._template is not None:
            _check_template(layers, self._template, f"{what} weights")
        template = self._template or [(layer.shape, layer.dtype) for layer in layers]
        self._accumulate(client_id, layers, samples)
        self._template = template
        self._seen.add(client_id)
        self._clients.append(client_id)
        self._round_samples += samples

    def finish(self) -> list[Array]:
        """Close the round and return the new global weights.

        Returns
        -------
        list of ndarray
            One array per layer, with the dtypes of the global weights (else of the first
            update). With no update the global weights come back unchanged and no state moves.

        Raises
        ------
        RoundStateError
            If no round is open, or it had no update and no global weights.
        """
        if not self._open:
            raise RoundStateError("no round is open; call begin_round() first")
        if not self._clients:
            self._open = False
            self._reset_round()
            if self._global is None:
                raise RoundStateError("the round had no update and no global weights")
            return list(self._global)
        assert self._template is not None
        result = self._result()
        self._reset_round()
        out = [
            np.asarray(layer).astype(dtype, copy=False)
            for layer, (_shape, dtype) in zip(result, self._template, strict=True)
        ]
        self.weights = out
        self.total_size = self._round_samples
        self.round_number += 1
        self._open = False
        self._global = None
        return out

    def aggregate(self, clients: Sequence[AggClient]) -> list[Array] | None:
        """Aggregate one round of updates (upstream's entry point).

        Parameters
        ----------
        clients : list of AggClient
            The round's updates.

        Returns
        -------
        list of ndarray or None
            The new weights (also kept in :attr:`weights`, their total sample count in
            :attr:`total_size`); for no client, the previous weights, as upstream (None before
            the first round). Upstream returned nested lists (``.tolist()``); call
            ``.tolist()`` on each layer if you need that form.

        Raises
        ------
        AggregationError
            If an update is invalid; the message names it as ``clients[i]``.
        """
        if not clients:
            return self.weights
        self.begin_round(self.weights)
        for index, client in enumerate(clients):
            self.add(f"clients[{index}]", client.weights, client.num_samples)
        return self.finish()

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """The state to carry across rounds, for checkpoints.

        Returns
        -------
        dict
            Flat; every value is a JSON scalar or an ``np.ndarray`` (store the arrays with
            ``np.savez`` and the rest as JSON). Keys: ``algorithm``, ``round``,
            ``total_size``, ``weights.count`` / ``weights.<i>`` (the last aggregate) and the
            algorithm's own (e.g. ``m.<i>``, ``v.<i>``). An open round is not included.
            Arrays are not copied; the algorithms never modify them in place.
        """
        state: dict[str, Any] = {
            "algorithm": type(self).__name__,
            "round": self.round_number,
            "total_size": self.total_size,
        }
        put_arrays(state, "weights", self.weights)
        state.update(self._extra_state())
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; an open round is discarded.

        Raises
        ------
        AggregationError
            If the state belongs to another algorithm or is malformed; nothing is changed.
        """
        algorithm = state.get("algorithm", type(self).__name__)
        if algorithm != type(self).__name__:
            raise AggregationError(
                f"state is for algorithm {algorithm!r}, not {type(self).__name__!r}"
            )
        try:
            round_number = param_int(state.get("round", 0), "state['round']", low=0)
            total_size = param_int(state.get("total_size", 0), "state['total_size']", low=0)
        except ValueError as err:
            raise AggregationError(str(err)) from None
        weights = get_arrays(state, "weights")
        extra = self._parse_extra_state(state, weights)
        self.round_number = round_number
        self.total_size = total_size
        self.weights = weights
        self._apply_extra_state(extra)
        self._open = False
        self._global = None
        self._reset_round()

    # ------------------------------------------------------------------ hooks

    def _reset_round(self) -> None:
        """Drop the open round's accumulated updates."""
        self._buffer = []

    def _accumulate(self, client_id: str, layers: list[Array], num_samples: int) -> None:
        """Take in one validated update. Default: buffer it."""
        self._buffer.append((client_id, layers, num_samples))

    def _result(self) -> list[Array]:
        """The aggregate of the round (any float dtype). Default: call an overridden aggregate."""
        if type(self).aggregate is BaseAggregation.aggregate:
            raise NotImplementedError(f"{type(self).__name__} implements no aggregation")
        clients = [AggClient(num_samples=n, weights=layers) for _cid, layers, n in self._buffer]
        weights = self._global
        self.weights = weights
        result = self.aggregate(clients)
        if result is None:
            raise AggregationError(f"{type(self).__name__}.aggregate returned None")
        return _as_layers(result, f"{type(self).__name__}.aggregate result")

    def _extra_state(self) -> dict[str, Any]:
        """The algorithm's own state (flat, JSON scalars and arrays)."""
        return {}

    def _parse_extra_state(
        self, state: Mapping[str, Any], weights: list[Array] | None
    ) -> dict[str, Any]:
        """Validate the algorithm's own state without applying it."""
        return {}

    def _apply_extra_state(self, extra: dict[str, Any]) -> None:
        """Apply what :meth:`_parse_extra_state` returned."""
        return


class StreamingAggregation(BaseAggregation):
    """Base of the FedAvg family: a running float64 sample-weighted sum per layer.

    Memory is one float64 copy of the model whatever the number of clients.
    """

    streaming: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self._sums: list[Array] | None = None

    def _reset_round(self) -> None:
        super()._reset_round()
        self._sums = None

    def _accumulate(self, client_id: str, layers: list[Array], num_samples: int) -> None:
        if self._sums is None:
            self._sums = [np.zeros(layer.shape, dtype=np.float64) for layer in layers]
        for total, layer in zip(self._sums, layers, strict=True):
            np.add(total, np.multiply(layer, float(num_samples), dtype=np.float64), out=total)

    def _average(self) -> list[Array]:
        """``sum_k n_k w_k / sum_k n_k`` per layer, float64."""
        assert self._sums is not None
        total = float(self._round_samples)
        return [layer_sum / total for layer_sum in self._sums]

    def _result(self) -> list[Array]:
        return self._average()


class BufferedAggregation(BaseAggregation):
    """Base of the robust aggregations, which need every update of the round at once."""

    streaming: ClassVar[bool] = False

    def _stacked(self, index: int) -> Array:
        """Layer ``index`` of every buffered update, stacked along axis 0, float64."""
        return np.stack([layers[index] for _cid, layers, _n in self._buffer]).astype(
            np.float64, copy=False
        )

    def _layer_count(self) -> int:
        return len(self._buffer[0][1])


# --------------------------------------------------------------------------- FedAvg


@ClassFactory.register(ClassType.FL_AGG)
class FedAvg(StreamingAggregation):
    """Federated averaging weighted by sample count (upstream ``FedAvg``).

    ``w_i = sum_k n_k w_{k,i} / sum_k n_k`` for every layer ``i``; streaming.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        if kwargs:
            _log.warning(
                "%s ignores unknown parameter(s) %s", type(self).__name__, ", ".join(sorted(kwargs))
            )


@ClassFactory.register(ClassType.FL_AGG)
class MistNet(FedAvg):
    """Upstream ``MistNet(cut_layer, epsilon=100)``: carries the split-learning parameters.

    Upstream's ``aggregate`` was a no-op and the Plato framework did the work; here weight
    updates, if any are sent, are averaged as :class:`FedAvg`. The native MistNet (edge runs
    the first ``cut_layer`` layers and uploads features perturbed according to ``epsilon``)
    is later work of issue 5.

    Parameters
    ----------
    cut_layer : int or str
        Index of the layer the model is split after.
    epsilon : float or str, default 100
        Privacy budget of the feature perturbation. (Upstream replaced a digit string epsilon
        by ``int(cut_layer)``; that bug is not reproduced.)
    """

    def __init__(self, cut_layer: int | str, epsilon: float | str = 100, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cut_layer = param_int(cut_layer, "cut_layer", low=0)
        if isinstance(epsilon, str) and epsilon.strip().isdigit():
            parsed: float = int(epsilon.strip())
        else:
            parsed = param_float(epsilon, "epsilon", low=0.0, low_open=True)
        self.epsilon = parsed
        self.parameters: dict[str, Any] = {
            "type": "mistnet",
            "cut_layer": self.cut_layer,
            "epsilon": self.epsilon,
        }


@ClassFactory.register(ClassType.FL_AGG)
class FedAvgV2(FedAvg):
    """Upstream ``FedAvgV2()`` (``parameters = {"type": "fedavg"}``), averaging as FedAvg.

    Upstream's ``aggregate`` was a no-op (Plato averaged); this one averages.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.parameters: dict[str, Any] = {"type": "fedavg"}
