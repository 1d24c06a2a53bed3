"""The gRPC face of a split-learning session: thin servicers over :class:`SplitSession`.

* :class:`SplitLearningServicer` serves ``SplitLearningService.UploadFeatures``: a
  ``FeatureBatchHeader`` (checked before any tensor byte is read), then the ``features`` and
  ``labels`` tensors as ``TensorFrame`` messages, assembled by
  :class:`sedna.tensor.TensorAssembler` (sizes, order and CRC-32 checked chunk by chunk; the
  manifest checked against the session before anything is allocated).
* :class:`SplitAggregationServicer` serves ``AggregationService`` for the same session:
  ``JoinSession``, ``PullGlobalWeights`` (the published full model), ``GetSessionStatus``,
  ``LeaveSession``. ``PushUpdate`` is refused: a MistNet session takes features, not weights.

Errors map to the gRPC status their ``code`` names, with the ``sedna-reason`` and
``sedna-current-round`` trailing metadata the SDK's clients read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Final, NoReturn

import grpc

from sedna.api.aggregator.v1 import aggregation_service_pb2 as pb
from sedna.api.aggregator.v1 import aggregation_service_pb2_grpc as pb_grpc
from sedna.api.aggregator.v1 import split_learning_service_pb2 as split_pb
from sedna.api.aggregator.v1 import split_learning_service_pb2_grpc as split_grpc
from sedna.runtime import ServiceServer
from sedna.service.aggregation_client import CURRENT_ROUND_METADATA_KEY, REASON_METADATA_KEY
from sedna.service.split_learning import convert
from sedna.service.split_learning.errors import (
    BatchRejectedError,
    InvalidRequestError,
    SplitLearningError,
    UnknownSessionError,
    UnsupportedCallError,
    WrongRoundError,
)
from sedna.service.split_learning.session import FEATURES, LABELS, SplitSession
from sedna.tensor import TensorAssembler, TensorStreamError, aiter_frames

__all__ = [
    "AGGREGATION_SERVICE_NAME",
    "SPLIT_LEARNING_SERVICE_NAME",
    "SplitAggregationServicer",
    "SplitLearningServicer",
    "add_split_learning_services",
]

SPLIT_LEARNING_SERVICE_NAME: Final = "sedna.api.aggregator.v1.SplitLearningService"
AGGREGATION_SERVICE_NAME: Final = "sedna.api.aggregator.v1.AggregationService"
_DEADLINE_MARGIN_S: Final = 0.05

Context = grpc.aio.ServicerContext[Any, Any]


async def _abort(context: Context, err: SplitLearningError) -> NoReturn:
    metadata: list[tuple[str, str]] = []
    if err.reason is not None:
        metadata.append((REASON_METADATA_KEY, err.reason))
    if isinstance(err, WrongRoundError):
        metadata.append((CURRENT_ROUND_METADATA_KEY, str(err.current_round)))
    if metadata:
        context.set_trailing_metadata(tuple(metadata))
    await context.abort(grpc.StatusCode[err.code], str(err))
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


def _check_session(session: SplitSession, session_id: str) -> None:
    if not session_id:
        raise InvalidRequestError("session_id must not be empty")
    if session_id != session.session_id:
        raise UnknownSessionError(
            f"this MistNet aggregation worker serves session {session.session_id!r}, not "
            f"{session_id!r} (check NAMESPACE and JOB_NAME on both sides)"
        )


async def _drain(messages: AsyncIterator[Any], budget: int) -> None:
    """Read what the client still sends before answering with an error (as the aggregator's
    servicer does: a client still sending into a finished call sees INTERNAL otherwise)."""
    with contextlib.suppress(Exception):
        async for message in messages:
            budget -= message.ByteSize()
            if budget < 0:
                break


class SplitLearningServicer(split_grpc.SplitLearningServiceServicer):
    """``UploadFeatures`` for one :class:`SplitSession`.

    Parameters
    ----------
    session
        The session served.
    max_upload_bytes
        Largest upload (features and labels together), checked on its manifest.
    max_concurrent_uploads
        Uploads assembled at once; other calls wait (within their deadline).
    """

    def __init__(
        self,
        session: SplitSession,
        *,
        max_upload_bytes: int = 256 << 20,
        max_concurrent_uploads: int = 4,
    ) -> None:
        if max_concurrent_uploads < 1:
            raise ValueError("max_concurrent_uploads must be >= 1")
        self.session = session
        self._max_upload_bytes = max_upload_bytes
        self._slots = asyncio.Semaphore(max_concurrent_uploads)

    async def UploadFeatures(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[split_pb.UploadFeaturesRequest], context: Context
    ) -> split_pb.UploadFeaturesResponse:
        """Receive one batch (header, then frames) and add it to the session's round."""
        try:
            return await self._upload(request_iterator)
        except SplitLearningError as err:
            await _drain(request_iterator, 2 * self._max_upload_bytes)
            await _abort(context, err)

    async def _upload(
        self, messages: AsyncIterator[split_pb.UploadFeaturesRequest]
    ) -> split_pb.UploadFeaturesResponse:
        first = await anext(messages, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidRequestError("an UploadFeatures stream starts with a FeatureBatchHeader")
        header = first.header
        session = self.session
        _check_session(session, header.session_id)
        client_id, round_number = header.client_id, int(header.round)
        cut_layer, epsilon = int(header.cut_layer), float(header.epsilon)
        session.precheck(client_id, round_number, cut_layer, epsilon)
        async with self._slots:
            # The round may have closed while this call waited for a slot.
            session.precheck(client_id, round_number, cut_layer, epsilon)
            assembler = TensorAssembler(max_total_bytes=self._max_upload_bytes, max_tensors=2)
            try:
                async for message in messages:
                    if message.WhichOneof("part") != "frame":
                        raise BatchRejectedError(
                            f"client {client_id!r}: after the header, an UploadFeatures stream "
                            "carries only tensor frames"
                        )
                    frame = message.frame
                    if frame.WhichOneof("frame") == "manifest" and assembler.manifest is None:
                        features, labels = convert.manifest_layout(client_id, frame.manifest)
                        session.check_layout(client_id, features, labels)
                    assembler.feed(frame)
                tensors = dict(assembler.result())
            except TensorStreamError as err:
                raise BatchRejectedError(f"client {client_id!r}: {err}") from None
            received = session.submit(
                client_id, round_number, cut_layer, epsilon, tensors[FEATURES], tensors[LABELS]
            )
        return split_pb.UploadFeaturesResponse(received_samples=received)


class SplitAggregationServicer(pb_grpc.AggregationServiceServicer):
    """``AggregationService`` for one :class:`SplitSession`: join, pull, status, leave.

    Parameters
    ----------
    session
        The session served.
    send_chunk_bytes
        Chunk size of the weights streamed by ``PullGlobalWeights``.
    """

    def __init__(self, session: SplitSession, *, send_chunk_bytes: int = 1 << 20) -> None:
        self.session = session
        self._send_chunk_bytes = send_chunk_bytes

    async def JoinSession(  # noqa: N802
        self, request: pb.JoinSessionRequest, context: Context
    ) -> pb.JoinSessionResponse:
        """Join declaring ``sample_count``: the samples the client uploads every round."""
        session = self.session
        try:
            _check_session(session, request.session_id)
            if request.HasField("config"):
                convert.check_join_config(session.config, request.config)
            joined = session.join(request.client_id, int(request.sample_count))
        except SplitLearningError as err:
            await _abort(context, err)
        return pb.JoinSessionResponse(
            config=convert.config_to_proto(session.config),
            state=convert.state_to_proto(joined.state),
            current_round=joined.current_round,
            selected=True,
        )

    async def PushUpdate(  # noqa: N802
        self, request_iterator: AsyncIterator[pb.PushUpdateRequest], context: Context
    ) -> pb.PushUpdateResponse:
        """Refused: a MistNet session trains on features (``SplitLearningService``)."""
        await _drain(request_iterator, 1 << 20)
        await _abort(
            context,
            UnsupportedCallError(
                f"session {self.session.session_id!r} is a MistNet (split-learning) session: "
                "upload features with SplitLearningService.UploadFeatures, not weights"
            ),
        )

    async def PullGlobalWeights(  # noqa: N802
        self, request: pb.PullGlobalWeightsRequest, context: Context
    ) -> AsyncIterator[pb.PullGlobalWeightsResponse]:
        """Wait (within the call's deadline) for the round's model, then stream it."""
        session = self.session
        wanted = int(request.round)
        try:
            _check_session(session, request.session_id)
            if request.by_reference:
                raise UnsupportedCallError(
                    "a MistNet session streams its model; by_reference (S3) is not supported"
                )
            remaining = context.time_remaining()
            waiting = session.wait_for_round(wanted)
            if remaining is None:
                result = await waiting
            else:
                try:
                    result = await asyncio.wait_for(
                        waiting, timeout=max(0.0, remaining - _DEADLINE_MARGIN_S)
                    )
                except TimeoutError:
                    await context.abort(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"round {wanted} of session {session.session_id!r} was not trained "
                        f"before the call's deadline (the session is {session.state.value} at "
                        f"round {session.current_round})",
                    )
        except SplitLearningError as err:
            await _abort(context, err)
        yield convert.result_header(result)
        layers = [(convert.layer_name(i), w) for i, w in enumerate(result.weights)]
        async for frame in aiter_frames(layers, chunk_size=self._send_chunk_bytes):
            message = pb.PullGlobalWeightsResponse()
            message.frame.CopyFrom(frame)
            yield message

    async def GetSessionStatus(  # noqa: N802
        self, request: pb.GetSessionStatusRequest, context: Context
    ) -> pb.GetSessionStatusResponse:
        """The session's state, round, clients and last metrics."""
        try:
            _check_session(self.session, request.session_id)
        except SplitLearningError as err:
            await _abort(context, err)
        return convert.status_to_proto(self.session.status(), self.session.config)

    async def LeaveSession(  # noqa: N802
        self, request: pb.LeaveSessionRequest, context: Context
    ) -> pb.LeaveSessionResponse:
        """Leave (idempotent)."""
        try:
            _check_session(self.session, request.session_id)
        except SplitLearningError as err:
            await _abort(context, err)
        self.session.leave(request.client_id)
        return pb.LeaveSessionResponse()


def add_split_learning_services(
    server: ServiceServer,
    session: SplitSession,
    *,
    max_upload_bytes: int = 256 << 20,
    max_concurrent_uploads: int = 4,
    send_chunk_bytes: int = 1 << 20,
) -> tuple[SplitLearningServicer, SplitAggregationServicer]:
    """Register both servicers of ``session`` on a :class:`sedna.runtime.ServiceServer`.

    The session's timers and training are stopped on shutdown.

    Returns
    -------
    tuple
        The ``SplitLearningService`` and ``AggregationService`` servicers.
    """
    upload = SplitLearningServicer(
        session, max_upload_bytes=max_upload_bytes, max_concurrent_uploads=max_concurrent_uploads
    )
    aggregation = SplitAggregationServicer(session, send_chunk_bytes=send_chunk_bytes)
    server.add_servicer(
        split_grpc.add_SplitLearningServiceServicer_to_server, upload, SPLIT_LEARNING_SERVICE_NAME
    )
    server.add_servicer(
        pb_grpc.add_AggregationServiceServicer_to_server, aggregation, AGGREGATION_SERVICE_NAME
    )
    server.on_shutdown(session.aclose)
    return upload, aggregation
