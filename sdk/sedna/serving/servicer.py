"""The OIP v2 ``inference.GRPCInferenceService`` servicer: a thin adapter over the core.

It serves whatever :class:`~sedna.serving.store.ModelStore` it is given: the inference
service's model repository, or ``BigModelService``'s one estimator.
"""

from __future__ import annotations

import logging
from typing import Any, Final, NoReturn, cast

import grpc

from sedna import __version__
from sedna.api.oip.v2 import grpc_service_pb2 as pb
from sedna.api.oip.v2 import grpc_service_pb2_grpc as pb_grpc
from sedna.runtime import ServiceServer
from sedna.runtime.memory import tune_malloc
from sedna.serving import convert
from sedna.serving.errors import (
    BackendError,
    InferenceError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
)
from sedna.serving.store import ModelStore

__all__ = ["DEFAULT_SERVER_NAME", "SERVICE_NAME", "InferenceServicer", "add_inference_service"]

SERVICE_NAME: Final = "inference.GRPCInferenceService"
DEFAULT_SERVER_NAME: Final = "sedna-inference"

_CODES: Final[dict[type[InferenceError], tuple[grpc.StatusCode, str]]] = {
    ModelNotFoundError: (grpc.StatusCode.NOT_FOUND, "not_found"),
    ModelNotReadyError: (grpc.StatusCode.UNAVAILABLE, "unavailable"),
    InvalidInputError: (grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument"),
    BackendError: (grpc.StatusCode.INTERNAL, "internal"),
}

_log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[object, object]


def _code(exc: InferenceError) -> tuple[grpc.StatusCode, str]:
    for kind, code in _CODES.items():
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL, "internal"


async def _abort(context: Context, exc: InferenceError) -> NoReturn:
    await context.abort(_code(exc)[0], str(exc))
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Open Inference Protocol v2 over gRPC, backed by a :class:`ModelStore`.

    Parameters
    ----------
    models
        The models served.
    server_name
        What ServerMetadata reports as the server's name.
    """

    def __init__(self, models: ModelStore, *, server_name: str = DEFAULT_SERVER_NAME) -> None:
        self._repo = models
        self._server_name = server_name
        self._counters: dict[tuple[str, str], Any] = {}  # requests_total children, by labels

    async def ServerLive(  # noqa: N802 - gRPC method name
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        """Live as long as the process answers."""
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(  # noqa: N802
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        """Ready once every configured model is loaded."""
        return pb.ServerReadyResponse(ready=self._repo.server_ready())

    async def ModelReady(  # noqa: N802
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        """Whether the model is loaded; NOT_FOUND for an unknown model or version."""
        try:
            return pb.ModelReadyResponse(
                ready=self._repo.model_ready(request.name, request.version)
            )
        except InferenceError as exc:
            await _abort(context, exc)

    async def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        """Server name and version; no OIP extensions yet."""
        return pb.ServerMetadataResponse(name=self._server_name, version=__version__, extensions=[])

    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        """Platform and input/output tensors of a loaded model."""
        try:
            model = self._repo.get(request.name, request.version)
        except InferenceError as exc:
            await _abort(context, exc)
        return convert.metadata_to_proto(model.metadata)

    async def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest | convert.InferRequest, context: Context
    ) -> pb.ModelInferResponse:
        """Run one inference (batched with concurrent ones); outputs as raw contents.

        The server hands it a :class:`~sedna.serving.convert.InferRequest` (raw inputs
        not copied, see :func:`add_inference_service`); a plain message works too.
        """
        status = "ok"
        message = request.message if isinstance(request, convert.InferRequest) else request
        try:
            model = self._repo.get(message.model_name, message.model_version)
            inputs = convert.decode_inputs(request)
            outputs = await model.infer(inputs, convert.requested_outputs(message))
            return convert.encode_response(message, model.version, outputs)
        except InferenceError as exc:
            status = _code(exc)[1]
            await _abort(context, exc)
        except Exception:
            status = "internal"
            _log.exception("ModelInfer failed", extra={"model": message.model_name})
            await context.abort(grpc.StatusCode.INTERNAL, "internal error while running the model")
            raise  # pragma: no cover - abort raises
        finally:
            self._count(message.model_name, status)

    def _count(self, model: str, status: str) -> None:
        counter = self._counters.get((model, status))
        if counter is None:
            if model not in self._repo.names:  # bounded label set
                return
            counter = self._repo.metrics.requests.labels(model=model, status=status)
            self._counters[(model, status)] = counter
        counter.inc()


class _Capture:
    """Stands in for a server to capture the generated code's method handlers."""

    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.handlers = handlers


def _add_to_server(servicer: InferenceServicer, server: grpc.aio.Server) -> None:
    """The generated registration, with ModelInfer read by :func:`convert.parse_infer_request`."""
    capture = _Capture()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, cast(grpc.aio.Server, capture))
    handlers = dict(capture.handlers)
    infer = handlers["ModelInfer"]
    if infer.unary_unary is None:  # pragma: no cover - generated as unary-unary
        raise TypeError("ModelInfer is not a unary-unary method")
    handlers["ModelInfer"] = grpc.unary_unary_rpc_method_handler(
        infer.unary_unary,
        request_deserializer=convert.parse_infer_request,
        response_serializer=infer.response_serializer,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def add_inference_service(
    server: ServiceServer, models: ModelStore, *, server_name: str = DEFAULT_SERVER_NAME
) -> InferenceServicer:
    """Register the OIP servicer for ``models`` on a (not started) :class:`ServiceServer`.

    The service is listed in reflection and has its own health entry
    (:data:`SERVICE_NAME`); the caller reports it SERVING once its models are loaded.
    Raises this process's glibc malloc thresholds (:func:`sedna.runtime.memory.tune_malloc`;
    opt out with ``SEDNA_MALLOC_MMAP_THRESHOLD=0``).

    Parameters
    ----------
    server
        The server, not started yet.
    models
        The models to serve.
    server_name
        What ServerMetadata reports.

    Returns
    -------
    InferenceServicer
        The registered servicer.
    """
    tune_malloc()  # large tensors from the heap, not one mmap per copy (sedna.runtime.memory)
    servicer = InferenceServicer(models, server_name=server_name)
    server.add_servicer(_add_to_server, servicer, SERVICE_NAME)
    return servicer
