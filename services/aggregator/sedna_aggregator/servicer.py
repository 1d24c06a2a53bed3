"""The ``sedna.api.aggregator.v1.AggregationService`` servicer: a thin layer over the core.

Sessions are created on their first ``JoinSession`` (restored from the checkpoint store when
one exists) and addressed by ``session_id``. ``PushUpdate`` streams are received one layer at a
time (:class:`~sedna_aggregator.receive.LayerReceiver`: sizes, order and CRC checked chunk by
chunk, the manifest checked against the session's template before anything is allocated) and
each layer is added into the round as soon as it is complete
(:class:`~sedna_aggregator.core.UpdateUpload`), at most ``max_concurrent_updates`` updates at a
time; an update that fails midway is backed out. With an S3 transmitter (``objects``), an
update may instead name an object holding its tensors, and the aggregate may be pulled by
reference. Core errors map to the gRPC status their ``code`` names; conversions live in
:mod:`sedna_aggregator.convert`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar, Final, Literal, NoReturn

import grpc

from sedna.api.aggregator.v1 import aggregation_service_pb2 as pb
from sedna.api.aggregator.v1 import aggregation_service_pb2_grpc as pb_grpc
from sedna.api.common.v1.tensor_pb2 import TensorFrame, TensorManifest
from sedna.service.aggregation_client import CURRENT_ROUND_METADATA_KEY as _CURRENT_ROUND_KEY
from sedna.service.aggregation_client import REASON_METADATA_KEY as _REASON_KEY
from sedna.tensor import FramePlan, TensorStreamError, chunk_wire, plan_frames
from sedna.tensor.chunk_wire import RawChunk, encode_chunk
from sedna_aggregator import convert
from sedna_aggregator.core import (
    Clock,
    InvalidRequestError,
    MalformedUpdateError,
    NoopMetrics,
    RoundResult,
    RoundStore,
    Runner,
    Session,
    SessionConfig,
    SessionError,
    SessionMetrics,
    UpdateAck,
    UpdateRejectedError,
    UpdateUpload,
    WrongRoundError,
)
from sedna_aggregator.core.model import Array
from sedna_aggregator.core.ports import WeightsObjects
from sedna_aggregator.pull_chunks import SharedChunks
from sedna_aggregator.receive import LayerReceiver

__all__ = [
    "CURRENT_ROUND_METADATA_KEY",
    "MAX_SESSION_ID_LENGTH",
    "REASON_METADATA_KEY",
    "SERVICE_NAME",
    "AggregationServicer",
    "RoundWaitTimeoutError",
    "SessionConflictError",
    "TooManySessionsError",
    "TransmitterNotConfiguredError",
    "UnknownSessionError",
    "add_aggregation_service",
    "refusal_metadata",
]

SERVICE_NAME: Final = "sedna.api.aggregator.v1.AggregationService"
# The wire keys are the SDK client's, so both sides read one definition.
CURRENT_ROUND_METADATA_KEY: Final = _CURRENT_ROUND_KEY
REASON_METADATA_KEY: Final = _REASON_KEY
"""Trailing metadata of a wrong-round refusal: the round the session is at."""
MAX_SESSION_ID_LENGTH: Final = 512
_DEADLINE_MARGIN_S: Final = 0.05
_EOF_SETTLE_S: Final = 0.2
"""How long a push that ended short waits before it is called malformed. A client that dies
(SIGKILL, a lost connection) ends its request stream like one that stopped sending, and the
call is cancelled only a moment later (measured: within 50 ms); the wait lets that
cancellation reach the handler, so the update is counted and logged as cancelled, not as a
malformed stream."""

_log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
PushMessage = pb.PushUpdateRequest | RawChunk
"""What PushUpdate's request deserializer gives (see :func:`add_aggregation_service`)."""


class UnknownSessionError(SessionError):
    """No session of that id on this server (clients join first)."""

    code: ClassVar[str] = "NOT_FOUND"


class SessionConflictError(SessionError):
    """A session exists with another configuration than the one requested."""

    code: ClassVar[str] = "FAILED_PRECONDITION"
    reason: ClassVar[str] = "config_conflict"


class TooManySessionsError(SessionError):
    """The server already runs ``max_sessions`` sessions."""

    code: ClassVar[str] = "RESOURCE_EXHAUSTED"


class TransmitterNotConfiguredError(SessionError):
    """An S3-transmitter request (``weights_uri``, ``by_reference``) without object storage."""

    code: ClassVar[str] = "FAILED_PRECONDITION"
    reason: ClassVar[str] = "no_s3_transmitter"


class RoundWaitTimeoutError(SessionError):
    """The round a pull waits for was not aggregated before the caller's deadline."""

    code: ClassVar[str] = "DEADLINE_EXCEEDED"


class ObjectStorageError(SessionError):
    """Writing the aggregate to object storage failed (retry later)."""

    code: ClassVar[str] = "UNAVAILABLE"


def refusal_metadata(err: SessionError) -> list[tuple[str, str]]:
    """The trailing metadata of a refusal: its stable reason label (clients tell refusals of
    one status apart without parsing the message) and, for a wrong round, the current one."""
    metadata: list[tuple[str, str]] = []
    reason = getattr(err, "reason", None)
    if isinstance(reason, str):
        metadata.append((REASON_METADATA_KEY, reason))
    if isinstance(err, WrongRoundError):
        metadata.append((CURRENT_ROUND_METADATA_KEY, str(err.current_round)))
    return metadata


async def _abort(context: Context, err: SessionError) -> NoReturn:
    metadata = refusal_metadata(err)
    if metadata:
        context.set_trailing_metadata(tuple(metadata))
    await context.abort(grpc.StatusCode[err.code], str(err))
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


def _check_session_id(session_id: str) -> None:
    if not session_id:
        raise InvalidRequestError("session_id must not be empty")
    if len(session_id) > MAX_SESSION_ID_LENGTH or not session_id.isprintable():
        raise InvalidRequestError(
            f"session_id must be printable and at most {MAX_SESSION_ID_LENGTH} characters"
        )


async def _aclose(iterator: object) -> None:
    """Close an async generator left early (object readers release their connection)."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


class AggregationServicer(pb_grpc.AggregationServiceServicer):
    """Federated-learning sessions over gRPC.

    Parameters
    ----------
    config
        The :class:`SessionConfig` of a new session, or ``config(session_id)`` choosing one.
    store
        Checkpoints (a :class:`~sedna_aggregator.core.LocalFileRoundStore`); None: none.
    metrics
        The sessions' metrics (``AggregatorMetrics`` in the server).
    max_update_bytes, max_update_tensors
        Limits of one update, checked on its manifest before anything is allocated (and
        passed to ``objects.read``).
    max_concurrent_updates
        Updates received at once; other PushUpdate calls wait (within their deadline). Each
        holds one layer's buffer at a time.
    send_chunk_bytes
        Chunk size of the weights sent by PullGlobalWeights.
    max_sessions
        Sessions served at once.
    clock, runner
        Passed to every session (tests).
    on_assembly
        ``on_assembly(delta)`` when an update starts (+1) or stops (-1) being received, and
        ``on_waiting(delta)`` likewise for calls waiting for a slot (gauges).
    objects
        Object storage of the S3 transmitter (:class:`~sedna_aggregator.core.ports.WeightsObjects`);
        None: ``weights_uri`` updates and ``by_reference`` pulls are FAILED_PRECONDITION.
    weights_dir
        Where sessions keep each round's aggregate, in an unlinked file (None: the system's
        temporary directory; False: in memory). See :class:`~sedna_aggregator.core.Session`.
    """

    def __init__(
        self,
        config: SessionConfig | Callable[[str], SessionConfig],
        *,
        store: RoundStore | None = None,
        metrics: SessionMetrics | None = None,
        max_update_bytes: int = 2 << 30,
        max_update_tensors: int = 65_536,
        max_concurrent_updates: int = 2,
        send_chunk_bytes: int = 1 << 20,
        max_sessions: int = 64,
        clock: Clock | None = None,
        runner: Runner | None = None,
        on_assembly: Callable[[int], None] | None = None,
        on_waiting: Callable[[int], None] | None = None,
        objects: WeightsObjects | None = None,
        weights_dir: str | Literal[False] | None = None,
    ) -> None:
        if max_concurrent_updates < 1:
            raise ValueError("max_concurrent_updates must be >= 1")
        self._config_for: Callable[[str], SessionConfig] = (
            (lambda _sid: config) if isinstance(config, SessionConfig) else config
        )
        self._store = store
        self._metrics: SessionMetrics = metrics if metrics is not None else NoopMetrics()
        self._max_update_bytes = max_update_bytes
        self._max_update_tensors = max_update_tensors
        self._slots = asyncio.Semaphore(max_concurrent_updates)
        self._send_chunk_bytes = send_chunk_bytes
        self._max_sessions = max_sessions
        self._clock = clock
        self._runner = runner
        self._on_assembly = on_assembly or (lambda _delta: None)
        self._on_waiting = on_waiting or (lambda _delta: None)
        self._sessions: dict[str, Session] = {}
        self._creating = asyncio.Lock()
        self._objects = objects
        self._weights_dir = weights_dir
        # Per session: the round whose aggregate was (or is being) written to object storage,
        # and the write's future, so concurrent by-reference pulls write it once.
        self._references: dict[str, tuple[int, asyncio.Future[str]]] = {}
        # Per session: the round whose aggregate's stream plan (manifest with CRC-32s) was
        # built, shared by all its pulls: checksumming 100 MB per pull cost a fifth of the
        # server's CPU. Only the latest round is kept, and the plan's views are of the
        # round's weights, which the session holds anyway.
        self._plans: dict[str, tuple[int, asyncio.Future[FramePlan]]] = {}
        self._shared_chunks = SharedChunks()
        self.bulk_port = 0
        """The bulk port advertised to joining clients (set once it listens); 0: none."""

    # ------------------------------------------------------------------ sessions

    @property
    def sessions(self) -> dict[str, Session]:
        """The sessions served, by id (read-only use)."""
        return dict(self._sessions)

    async def open_session(self, session_id: str, config: SessionConfig | None = None) -> Session:
        """The session ``session_id``, created (or restored from the store) on first use.

        Raises
        ------
        SessionConflictError
            If the session exists with a configuration other than ``config`` (the message
            names the first differing field).
        """
        _check_session_id(session_id)
        session = self._sessions.get(session_id)
        if session is None:
            async with self._creating:
                session = self._sessions.get(session_id)
                if session is None:
                    session = await self._create(session_id, config)
                    self._sessions[session_id] = session
                    return session
        if config is not None:
            field = convert.config_conflict(session.config, config)
            if field is not None:
                raise SessionConflictError(
                    f"session {session_id!r} exists with another {field} "
                    f"({getattr(session.config, field)!r}, requested "
                    f"{getattr(config, field)!r})"
                )
        return session

    async def _create(self, session_id: str, config: SessionConfig | None) -> Session:
        if len(self._sessions) >= self._max_sessions:
            raise TooManySessionsError(
                f"the server already runs {len(self._sessions)} sessions (max_sessions)"
            )
        chosen = config if config is not None else self._config_for(session_id)
        kwargs: dict[str, Any] = {
            "clock": self._clock,
            "metrics": self._metrics,
            "weights_dir": self._weights_dir,
        }
        if self._runner is not None:
            kwargs["runner"] = self._runner
        if self._store is None:
            session = Session(session_id, chosen, **kwargs)
        else:
            session = await Session.restore(session_id, chosen, self._store, **kwargs)
        restored = session.restored_round
        _log.info(
            "session %s %s",
            session_id,
            f"restored at round {restored}" if restored is not None else "created",
            extra={"session": session_id, "aggregation": chosen.aggregation},
        )
        return session

    def _session(self, session_id: str) -> Session:
        _check_session_id(session_id)
        session = self._sessions.get(session_id)
        if session is None:
            raise UnknownSessionError(f"no session {session_id!r} on this server; join first")
        return session

    async def aclose(self) -> None:
        """Stop every session's timers and background work (server shutdown)."""
        for session in list(self._sessions.values()):
            await session.aclose()

    # ------------------------------------------------------------------ RPCs

    async def JoinSession(  # noqa: N802 - gRPC method name
        self, request: pb.JoinSessionRequest, context: Context
    ) -> pb.JoinSessionResponse:
        """Join (creating the session on first use); re-joining after a reconnect is fine."""
        try:
            config = (
                convert.config_from_proto(
                    request.config, defaults=self._config_for(request.session_id)
                )
                if request.HasField("config")
                else None
            )
            session = await self.open_session(request.session_id, config)
            joined = await session.join(request.client_id, int(request.sample_count))
        except SessionError as err:
            await _abort(context, err)
        return pb.JoinSessionResponse(
            config=convert.config_to_proto(session.config),
            state=convert.state_to_proto(joined.state),
            current_round=joined.current_round,
            selected=joined.selected,
            bulk_port=self.bulk_port,
        )

    async def PushUpdate(  # noqa: N802 - its chunks arrive as RawChunk
        self, request_iterator: AsyncIterator[PushMessage], context: Context
    ) -> pb.PushUpdateResponse:
        """Receive one update (header, then frames) and hand it to the session."""
        try:
            return await self._push(request_iterator)
        except SessionError as err:
            await self._discard_rest(request_iterator)
            await _abort(context, err)

    async def _discard_rest(self, messages: AsyncIterator[PushMessage]) -> None:
        """Read and drop what the client still sends before answering with an error.

        A gRPC client still sending into a call the server has finished gets INTERNAL instead
        of the server's status (a race in the client's send); draining makes the refusal's
        status reliable. Nothing is kept, one message at a time; at most about two updates'
        worth of bytes are read (then the call is answered anyway).
        """
        budget = 2 * self._max_update_bytes
        with contextlib.suppress(Exception):
            async for message in messages:
                budget -= len(message.data) if isinstance(message, RawChunk) else message.ByteSize()
                if budget < 0:
                    break

    async def receive_update(self, messages: AsyncIterator[PushMessage]) -> pb.PushUpdateResponse:
        """One update, as PushUpdate's messages (header, manifest frame, chunks), received and
        handed to its session; for other transports too (the bulk port).

        Raises
        ------
        SessionError
            The refusal, as PushUpdate answers it.
        """
        return await self._push(messages)

    async def _push(self, messages: AsyncIterator[PushMessage]) -> pb.PushUpdateResponse:
        first = await anext(messages, None)
        if not isinstance(first, pb.PushUpdateRequest) or first.WhichOneof("part") != "header":
            raise InvalidRequestError("a PushUpdate stream starts with an UpdateHeader")
        header = first.header
        session = self._session(header.session_id)
        client_id, round_number = header.client_id, int(header.round)
        if header.weights_uri:
            self._require_objects("an update by weights_uri")
            if await anext(messages, None) is not None:
                raise InvalidRequestError(
                    f"client {client_id!r}: the header names weights_uri "
                    f"{header.weights_uri!r}, so no TensorFrames may follow it"
                )
        session.precheck_update(client_id, round_number)
        self._on_waiting(1)
        try:
            await self._slots.acquire()
        finally:
            self._on_waiting(-1)
        self._on_assembly(1)
        try:
            # The round may have closed while this call waited for a slot.
            session.precheck_update(client_id, round_number)
            if header.weights_uri:
                ack = await self._receive_object(session, header)
            else:
                ack = await self._receive_frames(session, header, messages)
        finally:
            self._on_assembly(-1)
            self._slots.release()
        return pb.PushUpdateResponse(round=ack.round, received_updates=ack.received_updates)

    @staticmethod
    def _rejected_early(session: Session, err: UpdateRejectedError, nbytes: int) -> None:
        """Count a refusal that came before the session saw the update."""
        session.metrics.update_received(
            session.session_id, nbytes, accepted=False, reason=err.reason
        )

    async def _receive_frames(
        self,
        session: Session,
        header: pb.UpdateHeader,
        messages: AsyncIterator[PushMessage],
    ) -> UpdateAck:
        """Receive the tensors chunk by chunk, adding each chunk to the round as it arrives."""
        client_id = header.client_id
        receiver = LayerReceiver(
            max_total_bytes=self._max_update_bytes, max_tensors=self._max_update_tensors
        )
        upload: UpdateUpload | None = None
        try:
            frames = self._frames(client_id, messages)
            first = await anext(frames, None)
            ready = [] if first is None else receiver.feed(first)
            manifest = receiver.manifest
            if manifest is None:
                await self._finish_stream(receiver)  # "truncated stream: no manifest received"
            assert manifest is not None
            layout = self._layout(client_id, manifest, receiver, session)
            upload = await session.begin_update(
                client_id,
                int(header.round),
                int(header.sample_count),
                dict(header.metrics),
                layout=layout,
            )
            for index, name, start, part in ready:
                await upload.add_part(index, start, part, name=name)
            del ready
            async for frame in frames:
                for index, name, start, part in receiver.feed(frame):
                    await upload.add_part(index, start, part, name=name)
                    del part  # streaming rounds keep no reference: the message is freed now
            await self._finish_stream(receiver)
            return await upload.commit(nbytes=receiver.bytes_received)
        except TensorStreamError as err:
            rejected = MalformedUpdateError(f"client {client_id!r}: {err}")
            self._give_up(session, upload, rejected, receiver.bytes_received)
            raise rejected from None
        except UpdateRejectedError as err:
            self._give_up(session, upload, err, receiver.bytes_received)
            raise
        except BaseException:
            # A broken or cancelled stream (client gone): back the update out.
            if upload is not None:
                upload.abort(nbytes=receiver.bytes_received)
            raise

    @staticmethod
    async def _finish_stream(receiver: LayerReceiver) -> None:
        """``receiver.finish()`` at the end of the request stream; a stream that ended short
        first waits up to ``_EOF_SETTLE_S`` for the call's cancellation (a dead client)."""
        try:
            receiver.finish()
        except TensorStreamError:
            await asyncio.sleep(_EOF_SETTLE_S)  # cancelled here if the client is gone
            raise

    @staticmethod
    def _give_up(
        session: Session, upload: UpdateUpload | None, err: UpdateRejectedError, nbytes: int
    ) -> None:
        if upload is None:
            AggregationServicer._rejected_early(session, err, nbytes)
        else:
            upload.abort(err, nbytes=nbytes)  # idempotent: the session may have aborted it

    @staticmethod
    async def _frames(
        client_id: str, messages: AsyncIterator[PushMessage]
    ) -> AsyncIterator[TensorFrame | RawChunk]:
        async for message in messages:
            if isinstance(message, RawChunk):
                yield message
                continue
            if message.WhichOneof("part") != "frame":
                raise MalformedUpdateError(
                    f"client {client_id!r}: after the header, a PushUpdate stream carries "
                    "only tensor frames"
                )
            yield message.frame

    @staticmethod
    def _layout(
        client_id: str, manifest: TensorManifest, receiver: LayerReceiver, session: Session
    ) -> list[tuple[tuple[int, ...], Any]]:
        convert.check_manifest(client_id, manifest, session.template)
        return [(shape, dtype) for _name, shape, dtype in receiver.layout]

    async def _receive_object(self, session: Session, header: pb.UpdateHeader) -> UpdateAck:
        """Read an update's tensors from object storage, with the frames path's checks."""
        assert self._objects is not None
        client_id, uri = header.client_id, header.weights_uri
        template = session.template
        if template is None:
            return await self._receive_whole_object(session, header)
        upload = await session.begin_update(
            client_id, int(header.round), int(header.sample_count), dict(header.metrics)
        )
        nbytes = 0
        seen: set[int] = set()
        tensors = self._objects.read(uri, max_bytes=self._max_update_bytes)
        try:
            async for name, array in tensors:
                if len(seen) >= self._max_update_tensors:
                    raise MalformedUpdateError(
                        f"client {client_id!r}: the update object holds more than "
                        f"max_update_tensors={self._max_update_tensors} tensors"
                    )
                nbytes += int(array.nbytes)
                index = convert.check_object_tensor(client_id, name, array, template, seen)
                seen.add(index)
                await upload.add_layer(index, array, name=name)
                del array
            return await upload.commit(nbytes=nbytes)
        except UpdateRejectedError as err:
            upload.abort(err, nbytes=nbytes)
            raise
        except InvalidRequestError as err:
            upload.abort(MalformedUpdateError(str(err)), nbytes=nbytes)
            raise
        except BaseException:
            upload.abort(nbytes=nbytes)
            raise
        finally:
            await _aclose(tensors)

    async def _receive_whole_object(self, session: Session, header: pb.UpdateHeader) -> UpdateAck:
        """The round's first update without global weights: its layer count is unknown until
        the object is read, so it is read whole (once per session) and submitted at once."""
        assert self._objects is not None
        client_id = header.client_id
        named: list[tuple[str, Array]] = []
        nbytes = 0
        tensors = self._objects.read(header.weights_uri, max_bytes=self._max_update_bytes)
        try:
            async for name, array in tensors:
                if len(named) >= self._max_update_tensors:
                    raise MalformedUpdateError(
                        f"client {client_id!r}: the update object holds more than "
                        f"max_update_tensors={self._max_update_tensors} tensors"
                    )
                nbytes += int(array.nbytes)
                named.append((name, array))
        except UpdateRejectedError as err:
            self._rejected_early(session, err, nbytes)
            raise
        finally:
            await _aclose(tensors)
        by_index: dict[int, Array] = {}
        try:
            if not named:
                raise MalformedUpdateError(f"client {client_id!r}: the update object is empty")
            for name, array in named:
                index = convert.object_layer_index(client_id, name, len(named), set(by_index))
                # Float dtypes only (check_manifest's rule); shapes are the core's checks.
                convert.check_manifest_dtype(client_id, index, name, array.dtype)
                by_index[index] = array
        except UpdateRejectedError as err:
            self._rejected_early(session, err, nbytes)
            raise
        count = len(named)
        layers = [by_index[i] for i in range(count)]
        del named, by_index
        return await session.submit_update(
            client_id,
            int(header.round),
            layers,
            int(header.sample_count),
            dict(header.metrics),
            nbytes=nbytes,
        )

    def _require_objects(self, what: str) -> None:
        if self._objects is None:
            raise TransmitterNotConfiguredError(
                f"{what} needs the S3 transmitter, and this aggregator has no S3 transmitter "
                "configured (object storage settings)"
            )

    async def _reference(self, session: Session, result: RoundResult) -> str:
        """The URI of ``result``'s weights in object storage, written once per round.

        Concurrent pulls of the round wait for the one write; if the writing call is
        cancelled (its client went away), a waiting pull writes instead.
        """
        assert self._objects is not None
        sid = session.session_id
        while True:
            cached = self._references.get(sid)
            if cached is None or cached[0] != result.round:
                break
            await asyncio.wait([cached[1]])  # raises only if this call is cancelled
            if not cached[1].cancelled():
                return cached[1].result()
            if self._references.get(sid) is cached:
                del self._references[sid]
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._references[sid] = (result.round, future)
        uri = self._objects.object_uri(sid, result.round)
        weights = result.weights or []
        try:
            await self._objects.write(
                uri, [(convert.layer_name(i), layer) for i, layer in enumerate(weights)]
            )
            if result.stored is not None:
                result.stored.release()  # the writer read every page
        except Exception as err:
            if self._references.get(sid) == (result.round, future):
                del self._references[sid]  # the next pull tries again
            failure = (
                err
                if isinstance(err, SessionError)
                else ObjectStorageError(
                    f"writing the aggregate of round {result.round} of session {sid!r} to "
                    f"{uri} failed: {err}"
                )
            )
            future.set_exception(failure)
            future.exception()  # retrieved here; the waiting pulls get it too
            if failure is err:
                raise
            raise failure from err
        except BaseException:
            future.cancel()  # cancelled: a waiting pull takes over the write
            raise
        future.set_result(uri)
        return uri

    async def PullGlobalWeights(  # type: ignore[override] # noqa: N802 - chunks go as bytes
        self, request: pb.PullGlobalWeightsRequest, context: Context
    ) -> AsyncIterator[pb.PullGlobalWeightsResponse | bytes]:
        """Wait (within the call's deadline) for the round, then stream header and weights."""
        try:
            session, result = await self.wait_for_round(request, context.time_remaining())
            if request.by_reference:
                self._require_objects("PullGlobalWeights by_reference")
                uri = await self._reference(session, result) if result.weights else ""
        except SessionError as err:
            await _abort(context, err)
        if request.by_reference:
            yield convert.result_header(result, weights_uri=uri)
            return
        yield convert.result_header(result)
        plan = await self.plan(session.session_id, result)
        message = pb.PullGlobalWeightsResponse()
        message.frame.manifest.CopyFrom(plan.manifest)
        yield message
        # Each chunk message is written by hand (sedna.tensor.chunk_wire, the registration's
        # serializer passes bytes through): the weights' bytes are copied once, into it, and
        # the pulls streaming the same round at the same time share it (SharedChunks).
        stored = result.stored
        for index, offset, data in plan.chunks():
            key = (session.session_id, result.round, index, offset)
            encoded = self._shared_chunks.get(key)
            if encoded is None:
                encoded = encode_chunk(index, offset, data)
                if stored is not None:
                    stored.release(index, offset, data.nbytes)  # the copy is in the message
                self._shared_chunks.put(key, encoded)
            del data
            yield encoded
        session.metrics.weights_sent(session.session_id, result.nbytes)
        _log.debug(
            "session %s: %r pulled round %d (%d bytes)",
            session.session_id,
            request.client_id,
            result.round,
            result.nbytes,
        )

    async def wait_for_round(
        self, request: pb.PullGlobalWeightsRequest, remaining: float | None
    ) -> tuple[Session, RoundResult]:
        """The session and the result a pull gets: ``request.round``'s (or a later one),
        waited for within ``remaining`` seconds (None: no limit).

        Raises
        ------
        SessionError
            Unknown session, a failed session, or :class:`RoundWaitTimeoutError`.
        """
        session = self._session(request.session_id)
        wanted = int(request.round)
        waiting = session.wait_for_round(wanted)
        if remaining is None:
            return session, await waiting
        try:
            result = await asyncio.wait_for(
                waiting, timeout=max(0.0, remaining - _DEADLINE_MARGIN_S)
            )
        except TimeoutError:
            raise RoundWaitTimeoutError(
                f"round {wanted} of session {session.session_id!r} was not aggregated "
                f"before the call's deadline (the session is {session.state.value} at "
                f"round {session.current_round})"
            ) from None
        return session, result

    async def plan(self, session_id: str, result: RoundResult) -> FramePlan:
        """The stream plan of ``result``'s weights, built once per round (in a thread)."""
        while True:
            cached = self._plans.get(session_id)
            if cached is None or cached[0] != result.round:
                break
            await asyncio.wait([cached[1]])  # raises only if this call is cancelled
            if not cached[1].cancelled():
                return cached[1].result()
            if self._plans.get(session_id) is cached:
                del self._plans[session_id]
        future: asyncio.Future[FramePlan] = asyncio.get_running_loop().create_future()
        self._plans[session_id] = (result.round, future)
        layers = [(convert.layer_name(i), layer) for i, layer in enumerate(result.weights or ())]
        try:
            if result.stored is not None:  # checksummed when written: no pass over the file
                plan = plan_frames(
                    layers, chunk_size=self._send_chunk_bytes, crc32s=result.stored.crc32s
                )
            else:
                plan = await asyncio.to_thread(
                    plan_frames, layers, chunk_size=self._send_chunk_bytes
                )
        except BaseException:
            if self._plans.get(session_id) == (result.round, future):
                del self._plans[session_id]
            future.cancel()  # a waiting pull builds it instead
            raise
        future.set_result(plan)
        return plan

    async def GetSessionStatus(  # noqa: N802
        self, request: pb.GetSessionStatusRequest, context: Context
    ) -> pb.GetSessionStatusResponse:
        """The session's state, round, clients and last metrics."""
        try:
            session = self._session(request.session_id)
        except SessionError as err:
            await _abort(context, err)
        return convert.status_to_proto(session.status(), session.config)

    async def LeaveSession(  # noqa: N802
        self, request: pb.LeaveSessionRequest, context: Context
    ) -> pb.LeaveSessionResponse:
        """Leave (idempotent); a selected client that had not reported is dropped."""
        try:
            session = self._session(request.session_id)
            await session.leave(request.client_id)
        except SessionError as err:
            await _abort(context, err)
        return pb.LeaveSessionResponse()


def add_aggregation_service(servicer: AggregationServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` as the generated ``add_AggregationServiceServicer_to_server``
    does, but with the tensor chunks of PushUpdate and PullGlobalWeights read and written by
    :mod:`sedna.tensor.chunk_wire` (no protobuf copies; the same bytes on the wire).
    """
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "JoinSession": grpc.unary_unary_rpc_method_handler(
            servicer.JoinSession,
            request_deserializer=pb.JoinSessionRequest.FromString,
            response_serializer=pb.JoinSessionResponse.SerializeToString,
        ),
        "PushUpdate": grpc.stream_unary_rpc_method_handler(
            servicer.PushUpdate,
            request_deserializer=chunk_wire.deserializer(pb.PushUpdateRequest),
            response_serializer=pb.PushUpdateResponse.SerializeToString,
        ),
        "PullGlobalWeights": grpc.unary_stream_rpc_method_handler(
            servicer.PullGlobalWeights,
            request_deserializer=pb.PullGlobalWeightsRequest.FromString,
            response_serializer=chunk_wire.serializer,
        ),
        "GetSessionStatus": grpc.unary_unary_rpc_method_handler(
            servicer.GetSessionStatus,
            request_deserializer=pb.GetSessionStatusRequest.FromString,
            response_serializer=pb.GetSessionStatusResponse.SerializeToString,
        ),
        "LeaveSession": grpc.unary_unary_rpc_method_handler(
            servicer.LeaveSession,
            request_deserializer=pb.LeaveSessionRequest.FromString,
            response_serializer=pb.LeaveSessionResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
