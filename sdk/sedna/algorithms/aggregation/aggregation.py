"""Aggregation algorithms for federated learning, compatible with upstream Sedna.

Upstream's API is kept: :class:`AggClient` (``num_samples``, ``weights``),
:class:`BaseAggregation` (``total_size``, ``weights``, ``aggregate(clients)``) and the
algorithms registered under :attr:`ClassType.FL_AGG <sedna.common.class_factory.ClassType>`
by class name (``ClassFactory.get_cls(ClassType.FL_AGG, "FedAvg")``).

Beyond upstream, every algorithm offers a *round* interface for an aggregation server::

    agg.begin_round(global_weights)        # the weights the clients started from (or None)
    agg.add("node-a", weights, num_samples) # validated; AggregationError if rejected
    agg.begin_update("node-b", num_samples) # or layer by layer, as the layers arrive:
    agg.add_layer("node-b", 0, layer0)      #   each layer validated and taken in at once
    agg.add_layer("node-b", 1, layer1)
    agg.commit_update("node-b")             #   the update counts (or abort_update backs it out)
    new_global = agg.finish()
    checkpoint = agg.state_dict()           # scalars and np.ndarray values only

Algorithms with ``streaming = True`` keep running weighted sums (in the model's float dtype by
default, float64 with ``accumulate_dtype="float64"``), so their memory does not grow with the
number of clients; the others buffer the round's updates.
``aggregate(clients)`` is ``begin_round(self.weights)``, one ``add`` per client, ``finish()``.
"""

from __future__ import annotations

import abc
import functools
import logging
import math
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar, Final

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
Layout = Sequence[tuple[Sequence[int], Any]]
"""One ``(shape, dtype)`` per layer: what an update announces before its layers arrive."""

_BLOCK: Final = 1 << 16
"""Elements per block of the element-wise passes over a layer: temporaries stay a few MiB
whatever the layer's size (a whole-layer ``n * w`` or ``isfinite`` would cost up to a model).
64K elements: small against a layer, large enough that the per-block overhead is noise."""

ACCUMULATE_DTYPES: Final = ("auto", "float32", "float64")


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


def _as_layer(layer: object, where: str, *, check_finite: bool = True) -> Array:
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
    bad = _count_nonfinite(array) if check_finite else 0
    if bad:
        raise AggregationError(f"{where} holds {bad} NaN or infinite value(s)")
    return array


def _layer_what(client_id: str, index: object, name: str) -> str:
    label = f" ({name!r})" if name else ""
    return f"client {client_id!r}: weights layer {index}{label}"


def _check_layer_index(index: object, count: int, what: str) -> None:
    if isinstance(index, bool) or not isinstance(index, int | np.integer):
        raise AggregationError(f"{what}: the layer index must be an integer")
    if not 0 <= index < count:
        raise AggregationError(f"{what}: no such layer (the update has {count} layers)")


_DOT_CHECKED: Final = (np.dtype(np.float32), np.dtype(np.float64))
"""dtypes whose finiteness is checked with a BLAS dot product first (:func:`_count_nonfinite`)."""


def _flat(array: Array) -> Array:
    """A flat view of ``array`` (a copy only when it is not contiguous)."""
    return array.reshape(-1)


def _count_nonfinite(array: Array) -> int:
    """How many NaN/Inf ``array`` holds, in blocks (no model-sized boolean temporary)."""
    flat = _flat(array)
    if flat.size and flat.dtype in _DOT_CHECKED:
        # A sum of squares is finite only if every element is (NaN and Inf propagate, squares
        # are never negative): one BLAS pass, no temporary, ~2x faster than isfinite. Only a
        # sum that overflowed (elements beyond ~1e19 in float32) needs the exact count below.
        with np.errstate(over="ignore", invalid="ignore"):
            if math.isfinite(float(np.dot(flat, flat))):
                return 0
    bad = 0
    for start in range(0, flat.size, _BLOCK):
        block = flat[start : start + _BLOCK]
        finite = np.isfinite(block)
        if not finite.all():
            bad += int(block.size - np.count_nonzero(finite))
    return bad


@functools.cache
def _blas_axpy() -> dict[np.dtype[Any], Any]:
    """BLAS ``?axpy`` by dtype (SciPy's; imported on first use)."""
    from scipy.linalg import blas  # noqa: PLC0415 - a second's import, only for aggregators

    return {np.dtype(np.float32): blas.saxpy, np.dtype(np.float64): blas.daxpy}


def _axpy(total: Array, layer: Array, scale: float) -> None:
    """``total += scale * layer`` in ``total``'s dtype.

    When both are float32 or both float64 (the usual case: the sums in the model's dtype),
    one BLAS ``axpy`` pass, in place, with no temporary: a third of the time of NumPy's
    multiply-then-add. Its fused multiply-add may round the last bit of an element
    differently from that expression. Other dtype pairs go block by block through NumPy
    (bounded temporaries).
    """
    dst = total.reshape(-1)
    src = _flat(layer)
    if src.size == 0:
        return
    axpy = _blas_axpy().get(dst.dtype) if src.dtype == dst.dtype else None
    if axpy is not None and dst.flags.c_contiguous and dst.flags.writeable:
        with np.errstate(over="ignore", invalid="ignore"):
            result = axpy(src, dst, a=scale)
        if result is not dst and not np.shares_memory(result, dst):  # pragma: no cover
            dst[...] = result  # f2py copied instead of updating in place
        return
    scratch = np.empty(min(_BLOCK, src.size), dtype=total.dtype)
    # An overflow (a float32 sum of huge weights) is reported once, by finish(), not warned
    # about block by block.
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, src.size, _BLOCK):
            stop = min(start + _BLOCK, src.size)
            tmp = scratch[: stop - start]
            np.multiply(src[start:stop], scale, out=tmp, dtype=total.dtype, casting="same_kind")
            np.add(dst[start:stop], tmp, out=dst[start:stop])


def accumulate_dtype_param(value: object) -> np.dtype[Any] | None:
    """Parse ``accumulate_dtype``: None or ``"auto"`` (None), ``"float32"`` or ``"float64"``."""
    if value is None:
        return None
    if isinstance(value, str):
        name = value.strip().lower()
        if name == "auto":
            return None
        if name in ACCUMULATE_DTYPES:
            return np.dtype(name)
    elif isinstance(value, type | np.dtype) and value in (np.float32, np.float64):
        return np.dtype(value)
    raise ValueError(
        f"accumulate_dtype must be one of {', '.join(ACCUMULATE_DTYPES)}, got {value!r}"
    )


def _as_layout(layout: object, what: str) -> _Template:
    if isinstance(layout, str | bytes | Mapping) or not isinstance(layout, Sequence):
        raise AggregationError(f"{what} layout must be a list of (shape, dtype), one per layer")
    parsed: _Template = []
    for index, item in enumerate(layout):
        try:
            raw_shape, raw_dtype = item
            shape = tuple(int(d) for d in raw_shape)
            dtype = np.dtype(raw_dtype)
        except (TypeError, ValueError):
            raise AggregationError(
                f"{what} layout layer {index} is not a (shape, dtype) pair: {item!r}"
            ) from None
        if any(d < 0 for d in shape):
            raise AggregationError(f"{what} layout layer {index} has a negative dimension")
        if not _is_float_dtype(dtype):
            raise AggregationError(
                f"{what} layer {index} has dtype {dtype}; weights must be floating point "
                "(float16, float32 or float64)"
            )
        parsed.append((shape, dtype))
    if not parsed:
        raise AggregationError(f"{what} has no layers")
    return parsed


def _as_layers(weights: object, what: str, *, check_finite: bool = True) -> list[Array]:
    if isinstance(weights, np.ndarray | str | bytes | Mapping) or not isinstance(weights, Sequence):
        raise AggregationError(
            f"{what} must be a list of arrays (one per layer), got {type(weights).__name__}"
        )
    return [
        _as_layer(layer, f"{what} layer {index}", check_finite=check_finite)
        for index, layer in enumerate(weights)
    ]


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


def _check_layout(layout: _Template, template: _Template, what: str) -> None:
    if len(layout) != len(template):
        raise AggregationError(f"{what} has {len(layout)} layers, expected {len(template)}")
    for index, ((shape, _dtype), (want, _want_dtype)) in enumerate(
        zip(layout, template, strict=True)
    ):
        if shape != want:
            raise AggregationError(f"{what} layer {index} has shape {shape}, expected {want}")


_UNDO_POOL_SIZE: Final = 4
"""Undo files kept open for reuse once their update is done (per process)."""


class _UndoFilePool:
    """Anonymous temporary files handed from finished updates to new ones.

    Writing a model into a fresh file costs the kernel a new page-cache page per 4 KiB (about
    80 ms per 100 MB here, the largest share of an update's server CPU after the receive);
    overwriting the pages of a file that already held an update costs a plain copy (about
    20 ms). So a finished update's file is kept (up to ``_UNDO_POOL_SIZE`` of them) and the
    next update writes over it from offset 0: an undo log only reads back what it wrote. The
    price is disk space and page cache of up to that many models' worth of unlinked files,
    reclaimable by the kernel.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()  # updates of different sessions run in worker threads
        self._free: list[tuple[str | None, IO[bytes]]] = []

    def take(self, directory: str | None) -> IO[bytes]:
        with self._lock:
            # The most recently returned first: its pages are the likeliest to be cached.
            for position in range(len(self._free) - 1, -1, -1):
                where, file = self._free[position]
                if where == directory:
                    del self._free[position]
                    return file
        # Closed by give(), or kept open in the pool for the process's life.
        return tempfile.TemporaryFile(dir=directory)

    def give(self, directory: str | None, file: IO[bytes]) -> None:
        with self._lock:
            if not file.closed and len(self._free) < self._size:
                self._free.append((directory, file))
                return
        file.close()


_UNDO_FILES: Final = _UndoFilePool(_UNDO_POOL_SIZE)


class _UndoLog:
    """The layers of an update in progress, spilled to an anonymous temporary file.

    A streaming algorithm adds each layer into the round's sums as it arrives and keeps no
    copy in memory; if the update is aborted, its layers are read back from here, block by
    block, and subtracted. The file lives in the page cache (not the process's heap), is
    unlinked from the start (``tempfile.TemporaryFile``) and goes back to a small pool of
    such files at commit or abort (:class:`_UndoFilePool`: rewriting cached pages is several
    times cheaper than filling new ones).
    """

    def __init__(self, directory: str | None) -> None:
        self._directory = directory
        # None once closed: the file may then already serve another update.
        self._file: IO[bytes] | None = _UNDO_FILES.take(directory)
        # layer -> [(file offset, dtype, first element, elements)], in the order written
        self._entries: dict[int, list[tuple[int, np.dtype[Any], int, int]]] = {}
        self._end = 0

    def _opened(self) -> IO[bytes]:
        if self._file is None:
            raise AggregationError("the undo log of an update was used after it was closed")
        return self._file

    def write(self, index: int, layer: Array, first: int = 0) -> None:
        """Log elements ``[first, first + layer.size)`` (flat, C order) of layer ``index``."""
        data = np.ascontiguousarray(layer)
        file = self._opened()
        file.seek(self._end)
        if data.size:
            file.write(data.reshape(-1).view(np.uint8).data)
        segment = (self._end, data.dtype, first, int(data.size))
        self._entries.setdefault(index, []).append(segment)
        self._end += int(data.nbytes)

    def indices(self) -> list[int]:
        """The layers with logged elements."""
        return list(self._entries)

    def blocks(self, index: int) -> Iterator[tuple[int, Array]]:
        """``(start element, block)`` pairs of layer ``index``, ``_BLOCK`` elements at most."""
        file: IO[bytes] | None = None
        for offset, dtype, first, size in self._entries.get(index, ()):
            if size == 0:
                continue
            if file is None:
                file = self._opened()
                file.flush()
            buffer = np.empty(min(_BLOCK, size), dtype=dtype)
            for start in range(0, size, _BLOCK):
                block = buffer[: min(_BLOCK, size - start)]
                file.seek(offset + start * dtype.itemsize)
                view = block.view(np.uint8).data
                if file.readinto(view) != block.nbytes:  # type: ignore[attr-defined]
                    raise AggregationError("the undo log of an update in progress was truncated")
                yield first + start, block

    def close(self) -> None:
        """Hand the file back to the pool (idempotent: a file must enter the pool once)."""
        file, self._file = self._file, None
        if file is not None:
            file.flush()
            _UNDO_FILES.give(self._directory, file)


@dataclass(eq=False)
class _Update:
    """An update in progress (between ``begin_update`` and ``commit_update``)."""

    num_samples: int
    added: list[bool]
    layers: list[Array | None]
    undo: _UndoLog | None = None
    filled: dict[int, int] = field(default_factory=dict)
    """Elements received so far of layers arriving in parts (:meth:`add_layer_part`)."""


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
        # Whether the template is settled (global weights, or a counted update) rather than
        # announced by updates still in progress, which may all be aborted.
        self._template_fixed = False
        self._clients: list[str] = []
        self._seen: set[str] = set()
        self._round_samples = 0
        self._buffer: list[tuple[str, list[Array], int]] = []
        self._updates: dict[str, _Update] = {}

    # ------------------------------------------------------------------ round interface

    @property
    def round_open(self) -> bool:
        """Whether a round was begun and not yet finished."""
        return self._open

    @property
    def round_clients(self) -> list[str]:
        """The clients whose update the open (or last) round accepted, in arrival order."""
        return list(self._clients)

    @property
    def updates_in_progress(self) -> tuple[str, ...]:
        """The clients with an update begun and neither committed nor aborted."""
        return tuple(self._updates)

    @property
    def template(self) -> list[tuple[tuple[int, ...], np.dtype[Any]]] | None:
        """``(shape, dtype)`` per layer that updates of the open round must match, if known.

        From the global weights; without them, from the round's first update (counted, or
        announced by :meth:`begin_update`'s ``layout``).
        """
        return None if self._template is None else list(self._template)

    def begin_round(
        self, global_weights: Sequence[Any] | None = None, *, check_finite: bool = True
    ) -> None:
        """Open a round; a round still open is discarded (with its updates in progress).

        Parameters
        ----------
        global_weights : list of ndarray, optional
            The weights the clients trained from. Updates must match their layer count and
            shapes, and the aggregate has their dtypes. Server optimisers (FedAvgM, FedAdam,
            ...) need them to take a step; without them (upstream's first round, where every
            client starts from its own initialisation) the round's result is the plain
            weighted average and the optimiser state is left alone. The arrays are not copied
            and must not be modified until :meth:`finish`.
        check_finite : bool, default True
            Scan ``global_weights`` for NaN/Inf. False skips the scan (dtypes are still
            checked) for weights known to be finite, such as what :meth:`finish` returned:
            the scan reads every byte, which for weights kept in a file mapping means mapping
            them all.

        Raises
        ------
        AggregationError
            If ``global_weights`` is not a list of finite floating-point arrays.
        """
        layers = (
            None
            if global_weights is None
            else _as_layers(global_weights, "global_weights", check_finite=check_finite)
        )
        self._drop_updates()
        self._global = layers
        self._template = (
            None if layers is None else [(layer.shape, layer.dtype) for layer in layers]
        )
        self._template_fixed = layers is not None
        self._clients = []
        self._seen = set()
        self._round_samples = 0
        self._reset_round()
        self._open = True

    def add(self, client_id: str, weights: Sequence[Any], num_samples: int) -> None:
        """Add one client's whole update to the open round.

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
            If the client already contributed (or has an update in progress),
            ``num_samples`` is not a positive integer, or the weights have the wrong number
            of layers, a wrong shape, a non-float dtype, or a NaN/Inf. Everything is checked
            before anything is taken in: the round is left exactly as it was.
        """
        self._check_new_update(client_id)
        samples = _num_samples(num_samples, client_id)
        what = f"client {client_id!r}:"
        layers = _as_layers(weights, f"{what} weights")
        if self._template is not None:
            _check_template(layers, self._template, f"{what} weights")
        template = self._template or [(layer.shape, layer.dtype) for layer in layers]
        self._template = template
        self._accumulate(client_id, layers, samples)
        self._template_fixed = True
        self._count(client_id, samples)

    def begin_update(self, client_id: str, num_samples: int, layout: Layout | None = None) -> None:
        """Start an update that arrives layer by layer (:meth:`add_layer`).

        Parameters
        ----------
        client_id : str
            Who sends it; each client may contribute once per round.
        num_samples : int
            Training samples behind the update, > 0.
        layout : list of (shape, dtype), optional
            What the update will carry, checked against the round's :attr:`template` (layer
            count and shapes; dtypes must be floating point). Required when the round has no
            template yet (no global weights, no update): it then becomes the template.

        Raises
        ------
        RoundStateError
            If no round is open.
        AggregationError
            If the client already contributed or is sending, ``num_samples`` is bad, or the
            layout does not fit. Nothing changes.
        """
        self._check_new_update(client_id)
        samples = _num_samples(num_samples, client_id)
        what = f"client {client_id!r}: update"
        if layout is not None:
            parsed = _as_layout(layout, what)
            if self._template is not None:
                _check_layout(parsed, self._template, what)
            else:
                self._template = parsed
        elif self._template is None:
            raise AggregationError(
                f"client {client_id!r}: the round has no global weights and no update yet; "
                "begin_update needs the update's layout"
            )
        count = len(self._template)
        self._updates[client_id] = _Update(
            num_samples=samples, added=[False] * count, layers=[None] * count
        )

    def add_layer(
        self, client_id: str, index: int, layer: Any, *, name: str = "", back_out: bool = True
    ) -> None:
        """Take in layer ``index`` of ``client_id``'s update in progress.

        Streaming algorithms add it into the round's sums at once and keep no copy in memory
        (it is spilled to a temporary file in case the update is aborted); the others keep
        a reference until :meth:`finish` (do not modify the array).

        Parameters
        ----------
        client_id : str
            The client of a :meth:`begin_update`.
        index : int
            The layer, ``0 <= index < len(template)``; each once, in any order.
        layer : ndarray
            Floating point, the template's shape, finite.
        name : str, optional
            The layer's name, for error messages.
        back_out : bool, default True
            On a refusal, abort the update at once (:meth:`abort_update`, which reads back
            and subtracts what was taken in). False: leave that to the caller, who must abort
            the update (and add nothing more to it); a server on an event loop does it in a
            worker thread.

        Raises
        ------
        RoundStateError
            If no round is open.
        AggregationError
            If the client has no update in progress, or the layer is out of range, sent
            twice, of the wrong shape or dtype, or holds a NaN/Inf. The update is then
            aborted (its layers already taken in are backed out; see ``back_out``) and does
            not count.
        """
        update = self._update_of(client_id)
        template = self._template
        assert template is not None
        what = _layer_what(client_id, index, name)
        try:
            _check_layer_index(index, len(template), what)
            if update.added[index]:
                raise AggregationError(f"{what} was sent twice")
            array = _as_layer(layer, what)
            if array.shape != template[index][0]:
                raise AggregationError(
                    f"{what} has shape {array.shape}, expected {template[index][0]}"
                )
        except AggregationError:
            if back_out:
                self.abort_update(client_id)
            raise
        self._add_layer(update, int(index), array)
        update.added[int(index)] = True

    def add_layer_part(
        self,
        client_id: str,
        index: int,
        start: int,
        part: Any,
        *,
        name: str = "",
        back_out: bool = True,
    ) -> bool:
        """Take in elements ``[start, start + part.size)`` of layer ``index`` (flat, C order)
        of ``client_id``'s update in progress.

        For updates received as a stream: streaming algorithms add each part into the round's
        sums at once (and spill it to the update's temporary file), so a layer never exists
        whole in memory; the others assemble the layer and take it in, as :meth:`add_layer`,
        once its last part arrived. The part is not kept (a view of a receive buffer will do).

        Parameters
        ----------
        client_id : str
            The client of a :meth:`begin_update`.
        index : int
            The layer, ``0 <= index < len(template)``.
        start : int
            The part's first element: the layer's parts come in order, without gaps.
        part : ndarray
            Floating point (one dtype per layer), finite; flattened.
        name : str, optional
            The layer's name, for error messages.
        back_out : bool, default True
            As for :meth:`add_layer`: False leaves the refused update's back-out to the
            caller.

        Returns
        -------
        bool
            True when the part completed the layer.

        Raises
        ------
        RoundStateError
            If no round is open.
        AggregationError
            If the client has no update in progress, the layer is out of range or already
            complete, the part does not start where the previous one ended or runs past the
            layer's end, changes the layer's dtype, or holds a NaN/Inf. The update is then
            aborted (what was taken in is backed out; see ``back_out``) and does not count.
        """
        update = self._update_of(client_id)
        template = self._template
        assert template is not None
        what = _layer_what(client_id, index, name)
        try:
            _check_layer_index(index, len(template), what)
            index = int(index)
            if update.added[index]:
                raise AggregationError(f"{what} was sent twice")
            size = math.prod(template[index][0])
            filled = update.filled.get(index, 0)
            block = _flat(_as_layer(part, f"{what}, elements from {start}"))
            if start != filled:
                raise AggregationError(
                    f"{what}: a part starting at element {start}, but {filled} of its "
                    f"{size} elements arrived and the next one expected is {filled}"
                )
            if start + block.size > size:
                raise AggregationError(
                    f"{what}: a part of {block.size} elements from element {start} runs past "
                    f"the layer's {size} elements"
                )
            first = update.layers[index] if filled else None
            if first is not None and first.dtype != block.dtype:
                raise AggregationError(
                    f"{what}: a part of dtype {block.dtype} after parts of dtype {first.dtype}"
                )
        except AggregationError:
            if back_out:
                self.abort_update(client_id)
            raise
        self._add_part(update, index, start, block)
        update.filled[index] = filled = start + int(block.size)
        if filled == size:
            del update.filled[index]
            update.added[index] = True
            return True
        return False

    def commit_update(self, client_id: str) -> None:
        """Count ``client_id``'s update in progress: every layer must have been added.

        Raises
        ------
        RoundStateError
            If no round is open.
        AggregationError
            If the client has no update in progress, or layers are missing (the update is
            then aborted and does not count).
        """
        update = self._update_of(client_id)
        missing = [index for index, done in enumerate(update.added) if not done]
        if missing:
            self.abort_update(client_id)
            shown = ", ".join(str(index) for index in missing[:8])
            more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
            raise AggregationError(
                f"client {client_id!r}: the update is incomplete: layer(s) {shown}{more} "
                "were not sent"
            )
        del self._updates[client_id]
        try:
            self._commit_update(client_id, update)
        finally:
            # The undo file goes back to the pool for the next update (not to the collector).
            self._release_update(update)
        self._template_fixed = True
        self._count(client_id, update.num_samples)

    def abort_update(self, client_id: str) -> bool:
        """Drop ``client_id``'s update in progress, backing out the layers already added.

        Returns
        -------
        bool
            False if the client had no update in progress (aborting is idempotent).

        Notes
        -----
        Streaming algorithms subtract the layers they added, read back from the update's
        temporary file. Floating-point addition does not undo exactly: each coordinate of a
        backed-out layer's running sum may differ from the sum without that update by about
        one rounding of the sum (relative 6e-8 in float32, 1e-16 in float64), unless no
        update of the round was counted and none is in progress: the sums are then reset
        to exactly nothing.
        """
        update = self._updates.pop(client_id, None)
        if update is None:
            return False
        try:
            self._abort_update(update)
        finally:
            self._release_update(update)
        if not self._clients and not self._updates:
            self._reset_round()
            if not self._template_fixed:
                self._template = None
        return True

    def finish(self) -> list[Array]:
        """Close the round and return the new global weights.

        Updates still in progress are aborted first (they do not count).

        Returns
        -------
        list of ndarray
            One array per layer, with the dtypes of the global weights (else of the first
            update). With no update the global weights come back unchanged and no state moves.

        Raises
        ------
        RoundStateError
            If no round is open, or it had no update and no global weights.
        AggregationError
            If the aggregate is not finite (a float32 running sum overflowed: use
            ``accumulate_dtype="float64"``).
        """
        if not self._open:
            raise RoundStateError("no round is open; call begin_round() first")
        for client_id in list(self._updates):
            self.abort_update(client_id)
        if not self._clients:
            self._open = False
            self._reset_round()
            if self._global is None:
                raise RoundStateError("the round had no update and no global weights")
            return list(self._global)
        assert self._template is not None
        try:
            result = self._result()
        except AggregationError:
            self._open = False
            self._reset_round()
            raise
        self._reset_round()
        out = [
            np.asarray(layer).astype(dtype, copy=False)
            for layer, (_shape, dtype) in zip(result, self._template, strict=True)
        ]
        del result
        for index, layer in enumerate(out):
            if _count_nonfinite(layer):
                self._open = False
                raise AggregationError(
                    f"the aggregate of layer {index} is not finite: the running sum "
                    "overflowed (set the aggregation parameter accumulate_dtype to float64)"
                )
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
        self._drop_updates()
        self._reset_round()

    # ------------------------------------------------------------------ internals

    def _check_new_update(self, client_id: str) -> None:
        if not self._open:
            raise RoundStateError(
                f"client {client_id!r}: no round is open; call begin_round() first"
            )
        if not isinstance(client_id, str) or not client_id:
            raise AggregationError(f"client_id must be a non-empty string, got {client_id!r}")
        if client_id in self._seen:
            raise AggregationError(f"client {client_id!r} already sent an update this round")
        if client_id in self._updates:
            raise AggregationError(f"client {client_id!r} is already sending an update")

    def _update_of(self, client_id: str) -> _Update:
        if not self._open:
            raise RoundStateError(
                f"client {client_id!r}: no round is open; call begin_round() first"
            )
        update = self._updates.get(client_id)
        if update is None:
            raise AggregationError(
                f"client {client_id!r} has no update in progress; call begin_update() first"
            )
        return update

    def _count(self, client_id: str, samples: int) -> None:
        self._seen.add(client_id)
        self._clients.append(client_id)
        self._round_samples += samples

    def _drop_updates(self) -> None:
        """Forget the updates in progress without backing out (the round is being reset)."""
        updates, self._updates = self._updates, {}
        for update in updates.values():
            self._release_update(update)

    # ------------------------------------------------------------------ hooks

    def _reset_round(self) -> None:
        """Drop the open round's accumulated updates."""
        self._buffer = []

    def _accumulate(self, client_id: str, layers: list[Array], num_samples: int) -> None:
        """Take in one validated whole update. Default: buffer it."""
        self._buffer.append((client_id, layers, num_samples))

    def _add_layer(self, update: _Update, index: int, layer: Array) -> None:
        """Take in one validated layer of an update in progress. Default: keep it."""
        update.layers[index] = layer

    def _add_part(self, update: _Update, index: int, start: int, part: Array) -> None:
        """Take in one validated part of a layer (flat). Default: assemble the layer in
        ``update.layers[index]`` and take it in with :meth:`_add_layer` once complete."""
        shape = self._template[index][0] if self._template is not None else part.shape
        layer = update.layers[index] if start else None
        if layer is None:
            layer = np.empty(shape, dtype=part.dtype)
            update.layers[index] = layer
        flat = layer.reshape(-1)
        flat[start : start + part.size] = part
        if start + part.size == flat.size:
            update.layers[index] = None
            self._add_layer(update, index, layer)

    def _commit_update(self, client_id: str, update: _Update) -> None:
        """Count a complete update in progress. Default: buffer its layers."""
        layers = [layer for layer in update.layers if layer is not None]
        self._accumulate(client_id, layers, update.num_samples)

    def _abort_update(self, update: _Update) -> None:
        """Back out what :meth:`_add_layer` took in. Default: nothing was taken in."""
        update.layers = [None] * len(update.layers)

    def _release_update(self, update: _Update) -> None:
        """Free what an update in progress holds (commit, abort or round reset)."""
        return

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
    """Base of the FedAvg family: a running sample-weighted sum per layer.

    Memory is one copy of the model (in the accumulation dtype) whatever the number of
    clients. Whole updates (:meth:`add`) are added layer by layer; updates arriving layer by
    layer (:meth:`add_layer`) are added as each layer arrives and spilled to a temporary file
    (``undo_dir``, default the system's) so that an aborted update can be subtracted again.
    :meth:`finish` turns the sums into the average in place: the sums become the result.

    Parameters
    ----------
    accumulate_dtype : {"auto", "float32", "float64"}, default "auto"
        dtype of the running sums. ``"auto"``: the model's float dtype, at least float32
        (float16 models sum in float32), so a float32 model costs one float32 copy; the
        relative rounding of the average is then about ``K * 6e-8`` for ``K`` clients.
        ``"float64"`` doubles the memory for float32 models and is as exact as the former
        float64 sums.
    """

    streaming: ClassVar[bool] = True
    undo_dir: str | None = None
    """Directory of the undo files of updates in progress (None: ``tempfile``'s default)."""

    def __init__(self, accumulate_dtype: str | None = None) -> None:
        super().__init__()
        self.accumulate_dtype: np.dtype[Any] | None = accumulate_dtype_param(accumulate_dtype)
        self._sums: list[Array | None] | None = None

    def _reset_round(self) -> None:
        super()._reset_round()
        self._sums = None

    def _sum_dtype(self, model_dtype: np.dtype[Any]) -> np.dtype[Any]:
        if self.accumulate_dtype is not None:
            return self.accumulate_dtype
        return np.promote_types(model_dtype, np.float32)

    def _sum_into(self, index: int, layer: Array, scale: float, start: int | None = None) -> None:
        """Add ``scale * layer`` into the sums of layer ``index``; ``start``: ``layer`` is the
        flat part from that element on."""
        template = self._template
        assert template is not None
        if self._sums is None:
            self._sums = [None] * len(template)
        total = self._sums[index]
        if total is None:
            shape, dtype = template[index]
            total = np.zeros(shape, dtype=self._sum_dtype(dtype))
            self._sums[index] = total
        if start is None:
            _axpy(total, layer, scale)
        else:
            _axpy(total.reshape(-1)[start : start + layer.size], layer, scale)

    def _accumulate(self, client_id: str, layers: list[Array], num_samples: int) -> None:
        for index, layer in enumerate(layers):
            self._sum_into(index, layer, float(num_samples))

    def _add_layer(self, update: _Update, index: int, layer: Array) -> None:
        if update.undo is None:
            update.undo = _UndoLog(self.undo_dir)
        update.undo.write(index, layer)
        self._sum_into(index, layer, float(update.num_samples))

    def _add_part(self, update: _Update, index: int, start: int, part: Array) -> None:
        if update.undo is None:
            update.undo = _UndoLog(self.undo_dir)
        update.undo.write(index, part, start)
        self._sum_into(index, part, float(update.num_samples), start)

    def _commit_update(self, client_id: str, update: _Update) -> None:
        return  # every layer is already in the sums

    def _abort_update(self, update: _Update) -> None:
        if update.undo is None or self._sums is None:
            return
        scale = -float(update.num_samples)
        for index in update.undo.indices():  # whole layers and parts of layers
            total = self._sums[index]
            if total is None:
                continue
            flat = total.reshape(-1)
            for start, block in update.undo.blocks(index):
                _axpy(flat[start : start + block.size], block, scale)

    def _release_update(self, update: _Update) -> None:
        if update.undo is not None:
            update.undo.close()
            update.undo = None

    def _take_average(self) -> list[Array]:
        """``sum_k n_k w_k / sum_k n_k`` per layer, computed in place in the sums.

        The sums are handed over (the round holds them no more): the caller owns the arrays.
        """
        assert self._sums is not None
        assert self._template is not None
        total = float(self._round_samples)
        sums, self._sums = self._sums, None
        average: list[Array] = []
        for index, layer_sum in enumerate(sums):
            sums[index] = None
            if layer_sum is None:  # pragma: no cover - every counted update added every layer
                shape, dtype = self._template[index]
                average.append(np.zeros(shape, dtype=self._sum_dtype(dtype)))
                continue
            np.divide(layer_sum, total, out=layer_sum)
            average.append(layer_sum)
        return average

    def _as_model_dtype(self, layers: list[Array]) -> list[Array]:
        """Cast each layer to the template's dtype, releasing each source as it goes."""
        assert self._template is not None
        layers.reverse()  # pop() from the end hands each layer over in order
        out: list[Array] = []
        for _shape, dtype in self._template:
            layer = layers.pop()
            out.append(layer.astype(dtype, copy=False))
            del layer  # a float64 sum is freed before the next layer is cast
        return out

    def _result(self) -> list[Array]:
        return self._as_model_dtype(self._take_average())


class BufferedAggregation(BaseAggregation):
    """Base of the robust aggregations, which need every update of the round at once.

    Memory: such an algorithm keeps every update of the round (K copies of the model for K
    clients, plus its working arrays at :meth:`finish`); updates arriving layer by layer keep
    their layers too. Prefer a streaming algorithm (FedAvg family) for large models and many
    clients.
    """

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

    ``w_i = sum_k n_k w_{k,i} / sum_k n_k`` for every layer ``i``; streaming: the round
    holds one running sum (see :class:`StreamingAggregation`) and :meth:`finish` divides it in
    place, so the result is that buffer (no second copy of the model).

    Parameters
    ----------
    accumulate_dtype : {"auto", "float32", "float64"}, default "auto"
        dtype of the running sum (see :class:`StreamingAggregation`).
    """

    def __init__(self, accumulate_dtype: str | None = None, **kwargs: Any) -> None:
        super().__init__(accumulate_dtype=accumulate_dtype)
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
