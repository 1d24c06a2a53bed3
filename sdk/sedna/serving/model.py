"""A served model: its metadata, request validation and its dynamic batcher.

Transport-agnostic: the servicer decodes requests into :class:`InputTensor` lists and
encodes the :class:`OutputTensor` lists it gets back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sedna.serving.backend import Backend, BackendMetadata
from sedna.serving.batcher import DynamicBatcher, Tensors
from sedna.serving.errors import BackendError, InvalidInputError
from sedna.serving.metrics import InferenceMetrics
from sedna.serving.tensors import DYNAMIC, TensorSpec, datatype_of, shape_matches

__all__ = [
    "InputTensor",
    "ModelMetadata",
    "OutputEncoder",
    "OutputTensor",
    "ServedModel",
    "batchable",
]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """What ModelMetadata reports."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True, slots=True)
class InputTensor:
    """A decoded request input: the declared name, datatype and shape, and its data."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: npt.NDArray[np.generic]


@dataclass(frozen=True, slots=True)
class OutputTensor:
    """One output of a response.

    Attributes
    ----------
    spec
        Name, datatype and shape (the declared ones, or those of ``data``).
    data
        The values.
    content_type
        Sent as the output's ``parameters["content_type"]`` (e.g. ``application/json``
        for a BYTES output holding one JSON document); None sends no parameter.
    """

    spec: TensorSpec
    data: npt.NDArray[np.generic]
    content_type: str | None = None


OutputEncoder = Callable[[OutputTensor], OutputTensor]
"""Turns one request's output (after the batch is split) into what the response carries."""


def batchable(meta: BackendMetadata) -> bool:
    """Whether a model can batch requests along axis 0.

    It must declare its inputs, and every declared input and output must have a variable
    first dimension.
    """
    tensors = (*meta.inputs, *meta.outputs)
    return bool(meta.inputs) and all(t.shape and t.shape[0] == DYNAMIC for t in tensors)


def _spec_of(name: str, array: npt.NDArray[np.generic]) -> TensorSpec:
    try:
        datatype = datatype_of(array.dtype)
    except KeyError as exc:
        raise BackendError(
            f"output {name!r} has dtype {array.dtype}, which the Open Inference Protocol "
            "cannot carry"
        ) from exc
    return TensorSpec(name, datatype, tuple(int(d) for d in array.shape))


class ServedModel:
    """A loaded model: its backend, metadata and batcher.

    Parameters
    ----------
    name
        Name clients use.
    backend
        The loaded model.
    metrics
        Where batch sizes and latencies are recorded.
    version
        The one version served.
    max_batch_size
        Most requests per backend call; 1 turns dynamic batching off (also forced off when
        the model is not :func:`batchable`).
    max_queue_delay_ms
        Longest a batch waits for more requests.
    encode_output
        Applied to every output of a request after the batch is split (e.g. to JSON-encode
        Python objects); None leaves outputs as the backend returned them.
    inline_compute_ms
        Let a lone request run on the event loop when the model's calls are that short
        (:class:`~sedna.serving.batcher.DynamicBatcher`); 0 (the default): never.
    """

    def __init__(
        self,
        name: str,
        backend: Backend,
        metrics: InferenceMetrics,
        *,
        version: str = "1",
        max_batch_size: int = 1,
        max_queue_delay_ms: float = 0.0,
        encode_output: OutputEncoder | None = None,
        inline_compute_ms: float = 0.0,
    ) -> None:
        self.name = name
        self.version = version
        self.backend = backend
        meta = backend.metadata()
        self.metadata = ModelMetadata(
            name=name,
            versions=(version,),
            platform=meta.platform,
            inputs=meta.inputs,
            outputs=meta.outputs,
        )
        self._inputs = {t.name: t for t in meta.inputs}
        self._outputs = {t.name: t for t in meta.outputs}
        self._encode = encode_output
        self.batcher = DynamicBatcher(
            name,
            backend,
            metrics,
            max_batch_size=max_batch_size,
            max_queue_delay_ms=max_queue_delay_ms,
            batchable=batchable(meta),
            inline_compute_ms=inline_compute_ms,
        )

    def _validate_undeclared(self, inputs: Sequence[InputTensor]) -> Tensors:
        arrays: Tensors = {}
        for tensor in inputs:
            if tensor.name in arrays:
                raise InvalidInputError(f"input {tensor.name!r} is given more than once")
            arrays[tensor.name] = tensor.data
        if not arrays:
            raise InvalidInputError(f"model {self.name!r} needs at least one input")
        return arrays

    def validate(self, inputs: Sequence[InputTensor]) -> Tensors:
        """Check the request tensors against the model's inputs.

        A model that declares no inputs takes any non-empty set of uniquely named inputs.

        Parameters
        ----------
        inputs
            Decoded request inputs.

        Returns
        -------
        dict of str to numpy.ndarray
            The arrays by input name.

        Raises
        ------
        InvalidInputError
            An unknown, duplicate or missing input, or a wrong datatype or shape; the
            message names the input and what was expected.
        """
        if not self._inputs:
            return self._validate_undeclared(inputs)
        model = self.name
        arrays: Tensors = {}
        for tensor in inputs:
            spec = self._inputs.get(tensor.name)
            if spec is None:
                expected = ", ".join(repr(n) for n in self._inputs)
                raise InvalidInputError(
                    f"unknown input {tensor.name!r} for model {model!r}; expected inputs: "
                    f"{expected}"
                )
            if tensor.name in arrays:
                raise InvalidInputError(f"input {tensor.name!r} is given more than once")
            if tensor.datatype != spec.datatype:
                raise InvalidInputError(
                    f"input {tensor.name!r} has datatype {tensor.datatype}, expected "
                    f"{spec.datatype}"
                )
            if not shape_matches(spec.shape, tensor.shape):
                raise InvalidInputError(
                    f"input {tensor.name!r} has shape {list(tensor.shape)}, expected "
                    f"{spec.shape_text} (-1: any size)"
                )
            arrays[tensor.name] = tensor.data
        missing = [n for n in self._inputs if n not in arrays]
        if missing:
            spec = self._inputs[missing[0]]
            raise InvalidInputError(
                f"missing input {spec.name!r} ({spec.datatype} {spec.shape_text}) for model "
                f"{model!r}"
            )
        return arrays

    def _check_requested(self, requested: Sequence[str]) -> None:
        if not self._outputs:
            return  # undeclared outputs: checked against what the backend returns
        for name in requested:
            if name not in self._outputs:
                expected = ", ".join(repr(n) for n in self._outputs)
                raise InvalidInputError(
                    f"unknown requested output {name!r}; model {self.name!r} has "
                    f"outputs: {expected}"
                )

    def _output(self, name: str, results: Tensors) -> OutputTensor:
        if name not in results:
            if not self._outputs:
                returned = ", ".join(repr(n) for n in results)
                raise InvalidInputError(
                    f"unknown requested output {name!r}; model {self.name!r} returned "
                    f"outputs: {returned}"
                )
            raise BackendError(f"backend returned no output {name!r}")
        array = results[name]
        spec = self._outputs.get(name)
        output = OutputTensor(spec if spec is not None else _spec_of(name, array), array)
        return self._encode(output) if self._encode is not None else output

    async def infer(
        self, inputs: Sequence[InputTensor], requested: Sequence[str] = ()
    ) -> list[OutputTensor]:
        """Validate, run through the batcher and return the outputs.

        Parameters
        ----------
        inputs
            Decoded request inputs.
        requested
            Output names to return; empty returns every output.

        Returns
        -------
        list of OutputTensor
            In the requested order, or the model's output order (the backend's order when
            the model declares no outputs).

        Raises
        ------
        InvalidInputError
            Bad inputs, or an unknown requested output.
        BackendError
            The backend failed.
        """
        with self.batcher.arriving():
            self._check_requested(requested)
            arrays = self.validate(inputs)
        results = await self.batcher.submit(arrays)  # queued before anything else runs
        names = list(requested) or list(self._outputs) or list(results)
        return [self._output(name, results) for name in names]
