"""A synchronous Open Inference Protocol (KServe v2) gRPC client for worker scripts.

The joint-inference edge worker offloads hard examples to the cloud big model with it;
it works against any OIP server (``sedna-inference``, ``BigModelService``, Triton...).
Every call carries the client's deadline, so a dead or stalled cloud costs at most
``timeout`` seconds and surfaces as :class:`CloudUnavailableError`.

Example
-------
>>> with InferenceClient("127.0.0.1", 5000, "helmet-detection") as client:  # doctest: +SKIP
...     result = client.infer(image)
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final, Self

import grpc
import numpy as np
import numpy.typing as npt

from sedna.api.oip.v2 import grpc_service_pb2 as pb
from sedna.api.oip.v2 import grpc_service_pb2_grpc as pb_grpc
from sedna.common.errors import SednaError
from sedna.runtime.channel import ChannelConfig, open_sync_channel
from sedna.runtime.memory import tune_malloc
from sedna.serving.convert import (
    JSON_CONTENT_TYPE,
    RequestEncoder,
    decode_outputs,
    metadata_from_proto,
)
from sedna.serving.errors import InferenceError
from sedna.serving.model import ModelMetadata, OutputTensor
from sedna.serving.tensors import DATATYPE_TO_NUMPY, numpy_dtype

__all__ = [
    "DEFAULT_INPUT_NAME",
    "CloudInferenceError",
    "CloudUnavailableError",
    "InferenceClient",
]

DEFAULT_INPUT_NAME: Final = "data"
"""Input name used when the model declares no inputs in its metadata."""

_UNAVAILABLE_CODES: Final = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
)
_NOT_READY_CODES: Final = _UNAVAILABLE_CODES | {grpc.StatusCode.NOT_FOUND}

_MAX_RECONNECT_BACKOFF_MS: Final = 5000
"""gRPC backs off up to 120 s between reconnects by default, and a channel waiting to
reconnect fails every call at once: a recovered cloud would be ignored for minutes."""


class CloudUnavailableError(SednaError):
    """The cloud model could not answer in time; falling back to the edge is safe.

    No connection, UNAVAILABLE (down, still loading, shutting down) or DEADLINE_EXCEEDED.

    Attributes
    ----------
    code
        The gRPC status code.
    """

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        super().__init__(message)
        self.code = code


class CloudInferenceError(SednaError):
    """The cloud model answered with another error status, or an undecodable response.

    The message names the status and carries the server's details (e.g. the input an
    INVALID_ARGUMENT is about).

    Attributes
    ----------
    code
        The gRPC status code (``INTERNAL`` for an undecodable response).
    """

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNKNOWN) -> None:
        super().__init__(message)
        self.code = code


def _target(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _decode_json(output: OutputTensor) -> Any:
    documents = [json.loads(bytes(item)) for item in output.data.reshape(-1).tolist()]
    return documents[0] if len(documents) == 1 else documents


class InferenceClient:
    """Calls one model of an OIP v2 gRPC server, synchronously, with a deadline per call.

    Parameters
    ----------
    host, port
        The server.
    model_name
        The model called (for joint inference: the JointInferenceService name).
    timeout
        Deadline of every call in seconds.
    channel_config
        TLS, token, message limits, keepalive...; its ``target`` is replaced by
        ``host:port`` and its ``default_timeout`` by ``timeout``.

    Notes
    -----
    The model's metadata is fetched on the first :meth:`infer` and kept (fetched again
    after an INVALID_ARGUMENT answer, in case the model changed). Safe to use from
    several threads.

    Creating a client raises this process's glibc malloc mmap threshold to 16 MiB
    (:func:`sedna.runtime.memory.tune_malloc`): each request copies its tensor a few
    times, and above the default threshold every copy is a fresh ``mmap`` with its page
    faults. Opt out with ``SEDNA_MALLOC_MMAP_THRESHOLD=0`` (or set glibc's own
    ``MALLOC_MMAP_THRESHOLD_``).
    """

    def __init__(
        self,
        host: str,
        port: int,
        model_name: str,
        *,
        timeout: float = 5.0,
        channel_config: ChannelConfig | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, not {timeout}")
        if not model_name:
            raise ValueError("model_name must not be empty")
        tune_malloc()
        target = _target(host, port)
        if channel_config is None:
            channel_config = ChannelConfig(target=target)
        options = channel_config.options
        if not any(name == "grpc.max_reconnect_backoff_ms" for name, _ in options):
            options = (*options, ("grpc.max_reconnect_backoff_ms", _MAX_RECONNECT_BACKOFF_MS))
        config = dataclasses.replace(
            channel_config, target=target, default_timeout=timeout, options=options
        )
        self.model_name = model_name
        self.target = target
        self.timeout = timeout
        self._channel = open_sync_channel(config)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        # ModelInfer with the request serialized by RequestEncoder (one copy of the tensor)
        self._model_infer: grpc.UnaryUnaryMultiCallable[bytes, pb.ModelInferResponse]
        self._model_infer = self._channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=None,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        self._encoder = RequestEncoder(model_name)
        self._metadata: ModelMetadata | None = None
        self._lock = threading.Lock()

    def _error(self, exc: grpc.RpcError, what: str) -> SednaError:
        code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        message = (
            f"{what} of model {self.model_name!r} at {self.target} failed: {code.name}: {details}"
        )
        if code in _UNAVAILABLE_CODES:
            return CloudUnavailableError(message, code)
        return CloudInferenceError(message, code)

    def metadata(self, timeout: float | None = None) -> ModelMetadata:
        """The model's metadata (fetched once, then cached).

        Parameters
        ----------
        timeout
            Deadline in seconds for the fetch; the client's ``timeout`` when None.

        Raises
        ------
        CloudUnavailableError
            The server is unreachable, the model still loading, or the deadline passed.
        CloudInferenceError
            Any other error status (e.g. NOT_FOUND for an unknown model).
        """
        cached = self._metadata
        if cached is not None:
            return cached
        with self._lock:
            if self._metadata is None:
                request = pb.ModelMetadataRequest(name=self.model_name)
                try:
                    response = self._stub.ModelMetadata(
                        request, timeout=self.timeout if timeout is None else timeout
                    )
                except grpc.RpcError as exc:
                    raise self._error(exc, "ModelMetadata") from None
                self._metadata = metadata_from_proto(response)
            return self._metadata

    def _prepare(self, data: Any, meta: ModelMetadata) -> tuple[str, npt.NDArray[np.generic], bool]:
        array = np.asarray(data)
        if not meta.inputs:
            return DEFAULT_INPUT_NAME, array, False
        spec = meta.inputs[0]
        if spec.datatype == "BYTES":
            if array.dtype.kind != "O":
                array = array.astype(np.object_)
        elif spec.datatype in DATATYPE_TO_NUMPY:
            array = array.astype(numpy_dtype(spec.datatype), copy=False)
        batched = len(spec.shape) >= 1 and array.ndim == len(spec.shape) - 1
        if batched:
            array = array[np.newaxis, ...]
        return spec.name, array, batched

    def infer(self, data: Any) -> Any:
        """Run the model on ``data``.

        ``data`` goes to the model's first input (``np.asarray``, cast to its datatype);
        when it has one dimension less than that input, a leading batch dimension of 1 is
        added and removed again from the outputs. A model that declares no inputs gets
        ``data`` as it is, under the name ``"data"``.

        Parameters
        ----------
        data
            An array or anything :func:`numpy.asarray` accepts.

        Returns
        -------
        Any
            The single output: a :class:`numpy.ndarray`, or the decoded object for a JSON
            output (``content_type`` ``application/json``); a dict name → value when the
            model returns several outputs.

        Raises
        ------
        CloudUnavailableError
            Unreachable server, UNAVAILABLE or DEADLINE_EXCEEDED.
        CloudInferenceError
            Any other error status, e.g. INVALID_ARGUMENT naming the input, or an
            undecodable response.
        TypeError, ValueError
            ``data`` cannot be converted to the model's input datatype.
        """
        # One deadline covers the (first-call) metadata fetch and the inference, so an
        # offload never takes longer than ``timeout`` in total.
        deadline = time.monotonic() + self.timeout
        meta = self.metadata(self.timeout)
        name, array, batched = self._prepare(data, meta)
        request = self._encoder.encode({name: array})
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CloudUnavailableError(
                f"ModelInfer of model {self.model_name!r} at {self.target}: the {self.timeout} s "
                "deadline passed while fetching the model's metadata",
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
        try:
            response = self._model_infer(request, timeout=remaining)
        except grpc.RpcError as exc:
            error = self._error(exc, "ModelInfer")
            if isinstance(error, CloudInferenceError) and error.code in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.NOT_FOUND,
            ):
                with self._lock:
                    self._metadata = None  # the model may have changed: fetch it again
            raise error from None
        try:
            outputs = decode_outputs(response)
        except InferenceError as exc:
            raise CloudInferenceError(
                f"ModelInfer of model {self.model_name!r} at {self.target} returned an "
                f"undecodable response: {exc}",
                grpc.StatusCode.INTERNAL,
            ) from None
        return self._result(outputs, batched)

    def _result(self, outputs: Sequence[OutputTensor], batched: bool) -> Any:
        values: dict[str, Any] = {}
        for output in outputs:
            if output.content_type == JSON_CONTENT_TYPE and output.spec.datatype == "BYTES":
                try:
                    values[output.spec.name] = _decode_json(output)
                except ValueError as exc:
                    raise CloudInferenceError(
                        f"output {output.spec.name!r} of model {self.model_name!r} is not "
                        f"valid JSON: {exc}",
                        grpc.StatusCode.INTERNAL,
                    ) from None
                continue
            array = output.data
            if batched and array.ndim >= 1 and array.shape[0] == 1:
                array = array[0]
            values[output.spec.name] = array
        if len(values) == 1:
            return next(iter(values.values()))
        return values

    def ready(self, timeout: float | None = None) -> bool:
        """Whether the model is loaded (OIP ModelReady).

        Parameters
        ----------
        timeout
            Deadline in seconds; the client's ``timeout`` when None.

        Returns
        -------
        bool
            False also when the server is unreachable, the deadline passed or the server
            does not know the model.

        Raises
        ------
        CloudInferenceError
            Any other error status (e.g. UNAUTHENTICATED).
        """
        request = pb.ModelReadyRequest(name=self.model_name)
        deadline = self.timeout if timeout is None else timeout
        try:
            return bool(self._stub.ModelReady(request, timeout=deadline).ready)
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Call) and exc.code() in _NOT_READY_CODES:
                return False
            raise self._error(exc, "ModelReady") from None

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> Self:
        """Use as a context manager; closes the channel on exit."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the channel."""
        self.close()
