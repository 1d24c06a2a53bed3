"""The bulk port: PushUpdate and PullGlobalWeights with the tensor bytes on a raw socket.

gRPC's Python runtime copies every message between its C buffers and Python ``bytes`` (twice
for a received message here, once for a sent one), and each side copies the tensor bytes
into or out of its messages: on a fast link the aggregator spends more CPU copying a round's
updates than the kernel spends moving them. On this port (``bulk_transfer.proto``) a
request is a small framed message and the tensor bytes follow raw, so that the aggregator
reads an update into a reused chunk buffer and adds it into the round from there, and sends
the aggregate from its file with ``sendfile`` (or from memory); the trainer sends straight
from its arrays and receives into them.

Everything else is the gRPC service's: :meth:`AggregationServicer.receive_update` receives
the update (the same header, manifest, chunk and CRC checks, the same slots, the same
refusals), :meth:`AggregationServicer.wait_for_round` and :meth:`AggregationServicer.plan`
serve the pull. Refusals travel as ``BulkStatus`` with the gRPC status code and the
trailing metadata the call would have had, so clients map them the same way.

Blocking socket I/O runs in a thread pool (one thread per connection busy at a time), so
the event loop only sees one hand-off per chunk. Each connection serves its requests one
after the other; a connection idle for ``idle_timeout`` seconds is closed. With TLS
configured on the server the port speaks TLS too (same certificate, same client CA); with
bearer tokens configured every request must carry one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncGenerator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

import grpc
import numpy as np
from pydantic import SecretStr

from sedna.api.aggregator.v1 import aggregation_service_pb2 as pb
from sedna.api.aggregator.v1 import bulk_transfer_pb2 as bulk_pb
from sedna.runtime.auth import TokenVerifier
from sedna.service.bulk_wire import (
    BulkProtocolError,
    chunk_spans,
    recv_exactly,
    recv_message,
    send_message,
    set_io_timeout,
)
from sedna.tensor import TensorStreamError, check_manifest
from sedna.tensor.chunk_wire import RawChunk
from sedna_aggregator import convert
from sedna_aggregator.core import InvalidRequestError, RoundResult, SessionError
from sedna_aggregator.servicer import AggregationServicer, PushMessage, refusal_metadata

__all__ = ["DEFAULT_MAX_CHUNK_BYTES", "BulkServer"]

DEFAULT_MAX_CHUNK_BYTES: Final = 64 << 20
"""Largest ``chunk_size`` a bulk push may announce (its chunk buffer is that big)."""
_DRAIN_BYTES: Final = 4 << 20

_log = logging.getLogger(__name__)

T = TypeVar("T")


def _status(code: grpc.StatusCode, message: str, **metadata: str) -> bulk_pb.BulkResponse:
    return bulk_pb.BulkResponse(
        error=bulk_pb.BulkStatus(code=code.value[0], message=message, metadata=metadata)
    )


def _refusal(err: SessionError) -> bulk_pb.BulkResponse:
    return _status(grpc.StatusCode[err.code], str(err), **dict(refusal_metadata(err)))


def _read_groups(
    spans: list[tuple[int, int, int]], capacity: int
) -> list[tuple[list[tuple[int, int, int]], int]]:
    """Consecutive chunks read from the socket at once, ``(chunks, bytes)``: as many as fit in
    a chunk buffer of ``capacity`` bytes. A model's small tensors (biases, norms) then come in
    with their neighbours instead of costing a worker-thread hand-off each."""
    groups: list[tuple[list[tuple[int, int, int]], int]] = []
    for span in spans:
        if groups and groups[-1][1] + span[2] <= capacity:
            chunks, size = groups[-1]
            chunks.append(span)
            groups[-1] = (chunks, size + span[2])
        else:
            groups.append(([span], span[2]))
    return groups


class _PushState:
    """How far a bulk push got: whether the client was told to send, and bytes read."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.ready_sent = False
        self.consumed = 0
        self.broken = False


class BulkServer:
    """Serve ``servicer``'s sessions on a bulk port.

    Parameters
    ----------
    servicer
        The gRPC service whose sessions this port serves.
    host, port
        Where to listen (port 0: a free one; :attr:`port` says which after :meth:`start`).
    tokens
        Accepted bearer tokens; empty: none required.
    ssl_context
        Server-side TLS context; None: plain TCP.
    max_update_bytes, max_update_tensors
        An update's limits (the gRPC service's).
    max_chunk_bytes
        Largest ``chunk_size`` of a push.
    max_connections
        Connections served at once; more are closed at accept.
    idle_timeout
        Seconds a connection may wait between requests.
    io_timeout
        Seconds any single read or write may stall.
    on_request, on_connection
        ``on_request(kind, outcome)`` after each request (kind ``push``, ``pull`` or
        ``other``; outcome ``ok``, ``refused``, ``broken``, ``unauthenticated`` or
        ``invalid``) and ``on_connection(delta)`` when a connection opens (+1) or closes (-1):
        the metrics.
    """

    def __init__(
        self,
        servicer: AggregationServicer,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: Iterable[str | SecretStr] = (),
        ssl_context: ssl.SSLContext | None = None,
        max_update_bytes: int = 2 << 30,
        max_update_tensors: int = 65_536,
        max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
        max_connections: int = 256,
        idle_timeout: float = 600.0,
        io_timeout: float = 60.0,
        on_request: Callable[[str, str], None] | None = None,
        on_connection: Callable[[int], None] | None = None,
    ) -> None:
        self._servicer = servicer
        self._host = host
        self._requested_port = port
        token_list = list(tokens)
        self._verifier = TokenVerifier(token_list) if token_list else None
        self._ssl = ssl_context
        self._max_update_bytes = max_update_bytes
        self._max_update_tensors = max_update_tensors
        self._max_chunk_bytes = max_chunk_bytes
        self._max_connections = max_connections
        self._idle_timeout = idle_timeout
        self._io_timeout = io_timeout
        self._on_request = on_request or (lambda _kind, _outcome: None)
        self._on_connection = on_connection or (lambda _delta: None)
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._connections: dict[asyncio.Task[None], socket.socket] = {}
        # One thread per connection doing I/O at a time, so no connection waits for another.
        self._pool = ThreadPoolExecutor(max_workers=max_connections, thread_name_prefix="bulk")
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen and accept connections in the background.

        Raises
        ------
        OSError
            The port cannot be bound.
        """
        listener = socket.create_server(
            (self._host, self._requested_port), backlog=128, reuse_port=False
        )
        listener.setblocking(False)
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self._accepting = asyncio.create_task(self._accept_loop(listener), name="bulk-accept")
        _log.info(
            "bulk port listening on %s:%d%s",
            self._host,
            self.port,
            " (TLS)" if self._ssl is not None else "",
        )

    async def aclose(self) -> None:
        """Stop accepting, cut every connection and wait for their handlers."""
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        if self._listener is not None:
            self._listener.close()
        for task, conn in list(self._connections.items()):
            # Wakes a thread blocked on the socket; the handler then ends.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, address = await loop.sock_accept(listener)
            except OSError as err:  # out of descriptors, say: keep serving the others
                _log.warning("bulk port: accept failed: %s", err)
                await asyncio.sleep(0.1)
                continue
            if len(self._connections) >= self._max_connections:
                _log.warning(
                    "bulk port: refusing a connection from %s: %d connections open "
                    "(max_connections)",
                    address,
                    len(self._connections),
                )
                conn.close()
                continue
            task = asyncio.create_task(self._serve(conn, address))
            self._connections[task] = conn
            task.add_done_callback(self._connections.pop)

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # ------------------------------------------------------------------ connections

    async def _serve(self, conn: socket.socket, address: Any) -> None:
        peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        self._on_connection(1)
        try:
            conn.setblocking(True)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            set_io_timeout(conn, self._io_timeout)
            if self._ssl is not None:
                conn = await self._io(self._handshake, conn)
                set_io_timeout(conn, self._io_timeout)
                # Cut through the TLS socket from now on (aclose's shutdown).
                self._connections[asyncio.current_task()] = conn  # type: ignore[index]
            while True:
                request = await self._io(self._next_request, conn)
                if request is None:
                    return  # the client closed the connection between requests
                if not await self._handle(conn, request, peer):
                    return
        except (OSError, BulkProtocolError, ssl.SSLError) as err:
            _log.debug("bulk connection from %s ended: %r", peer, err)
        finally:
            conn.close()
            self._on_connection(-1)

    def _handshake(self, conn: socket.socket) -> socket.socket:
        assert self._ssl is not None
        return self._ssl.wrap_socket(conn, server_side=True)

    def _next_request(self, conn: socket.socket) -> bulk_pb.BulkRequest | None:
        set_io_timeout(conn, self._idle_timeout)
        try:
            return recv_message(conn, bulk_pb.BulkRequest, eof_ok=True)
        finally:
            set_io_timeout(conn, self._io_timeout)

    async def _handle(self, conn: socket.socket, request: bulk_pb.BulkRequest, peer: str) -> bool:
        """Serve one request (counted by kind and outcome); False when the connection must
        close."""
        kind = request.WhichOneof("request") or "other"
        outcome = "broken"
        try:
            keep, outcome = await self._serve_request(conn, request, kind, peer)
        finally:
            self._on_request(kind, outcome)
        return keep

    async def _serve_request(
        self, conn: socket.socket, request: bulk_pb.BulkRequest, kind: str, peer: str
    ) -> tuple[bool, str]:
        if self._verifier is not None and not self._verifier.accepts(request.token):
            problem = "missing bearer token" if not request.token else "invalid bearer token"
            await self._io(send_message, conn, _status(grpc.StatusCode.UNAUTHENTICATED, problem))
            return False, "unauthenticated"
        wait = request.timeout_seconds if request.timeout_seconds > 0 else None
        if kind == "push":
            return await self._push(conn, request.push)
        if kind == "pull":
            return await self._pull(conn, request.pull, wait, peer)
        await self._io(
            send_message,
            conn,
            _status(
                grpc.StatusCode.INVALID_ARGUMENT,
                "BulkRequest carries neither push nor pull (empty, or from a newer client)",
            ),
        )
        return False, "invalid"

    # ------------------------------------------------------------------ push

    async def _push(self, conn: socket.socket, push: bulk_pb.BulkPush) -> tuple[bool, str]:
        """Receive one update; ``(keep the connection, outcome)``."""
        client_id = push.header.client_id
        manifest = push.manifest
        try:
            if push.header.weights_uri:
                raise InvalidRequestError(
                    f"client {client_id!r}: a bulk push carries its tensors; an update by "
                    "weights_uri goes to PushUpdate"
                )
            if manifest.chunk_size > self._max_chunk_bytes:
                raise InvalidRequestError(
                    f"client {client_id!r}: manifest chunk_size {manifest.chunk_size} is over "
                    f"the bulk port's limit of {self._max_chunk_bytes} bytes"
                )
            try:
                layouts, total = check_manifest(
                    manifest,
                    max_tensors=self._max_update_tensors,
                    max_total_bytes=self._max_update_bytes,
                )
            except TensorStreamError as err:
                raise InvalidRequestError(f"client {client_id!r}: {err}") from None
        except SessionError as err:  # nothing sent yet: the connection stays usable
            await self._io(send_message, conn, _refusal(err))
            return True, "refused"
        spans = list(chunk_spans([layout.byte_length for layout in layouts], manifest.chunk_size))
        state = _PushState(total)
        messages = self._push_messages(conn, push, spans, state)
        try:
            response = await self._servicer.receive_update(messages)
        except SessionError as err:
            refusal: SessionError | None = err
        else:
            refusal = None
        finally:
            # Ends a read in flight (counted in state) before anything else reads the socket.
            await messages.aclose()
        if refusal is not None:
            if not await self._drain(conn, state):
                return False, "broken"
            await self._io(send_message, conn, _refusal(refusal))
            return True, "refused"
        await self._io(send_message, conn, bulk_pb.BulkResponse(pushed=response))
        return True, "ok"

    async def _push_messages(
        self,
        conn: socket.socket,
        push: bulk_pb.BulkPush,
        spans: list[tuple[int, int, int]],
        state: _PushState,
    ) -> AsyncGenerator[PushMessage, None]:
        """PushUpdate's messages of a bulk push: the chunks are read when asked for."""
        yield pb.PushUpdateRequest(header=push.header)
        frame = pb.PushUpdateRequest()
        frame.frame.manifest.CopyFrom(push.manifest)
        yield frame
        # Asked for the first chunk: the session took the update (round, selection, manifest
        # and slot checked), so the client may send.
        await self._io(send_message, conn, bulk_pb.BulkResponse(ready=bulk_pb.BulkReady()))
        state.ready_sent = True
        if not spans:
            return
        # Two chunk buffers, reused in turn: the next read fills one while the session adds
        # the chunks of the other (it adds each part before asking for the next and keeps no
        # reference to it). float64 arrays, so chunks start 16-byte aligned.
        capacity = max(size for _index, _offset, size in spans)
        buffers = [
            np.empty(-(-capacity // 8), dtype=np.float64).view(np.uint8).data for _ in range(2)
        ]
        groups = _read_groups(spans, capacity)
        loop = asyncio.get_running_loop()

        def read(turn: int) -> asyncio.Future[None]:
            view = buffers[turn % 2][: groups[turn][1]]
            return loop.run_in_executor(self._pool, recv_exactly, conn, view)

        pending, pending_size = read(0), groups[0][1]
        uncounted = True  # whether pending's bytes are still to be counted
        try:
            for turn, (group, size) in enumerate(groups):
                await pending
                state.consumed += size
                uncounted = False
                if turn + 1 < len(groups):
                    pending, pending_size = read(turn + 1), groups[turn + 1][1]
                    uncounted = True
                buffer, at = buffers[turn % 2], 0
                for index, offset, length in group:
                    yield RawChunk(index, offset, buffer[at : at + length])
                    at += length
        finally:
            if uncounted:
                # Refused midway with the next chunk read or being read: let that read end
                # before anything else reads the socket (the drain), and count its bytes.
                try:
                    await asyncio.shield(pending)
                except (OSError, BulkProtocolError):
                    state.broken = True
                else:
                    state.consumed += pending_size

    async def _drain(self, conn: socket.socket, state: _PushState) -> bool:
        """Read the rest of a refused push's bytes, so the answer reaches the client; False
        when the connection broke meanwhile."""
        if state.broken:
            return False
        left = state.total - state.consumed if state.ready_sent else 0
        if left <= 0:
            return True

        def drain() -> None:
            scratch = memoryview(bytearray(min(_DRAIN_BYTES, left)))
            remaining = left
            while remaining:
                step = min(len(scratch), remaining)
                recv_exactly(conn, scratch[:step])
                remaining -= step

        try:
            await self._io(drain)
        except (OSError, BulkProtocolError):
            return False
        return True

    # ------------------------------------------------------------------ pull

    async def _pull(
        self,
        conn: socket.socket,
        pull: pb.PullGlobalWeightsRequest,
        wait: float | None,
        peer: str,
    ) -> tuple[bool, str]:
        """Serve one pull; ``(keep the connection, outcome)``."""
        try:
            if pull.by_reference:
                raise InvalidRequestError(
                    "a by_reference pull names an object: ask PullGlobalWeights for it"
                )
            session, result = await self._servicer.wait_for_round(pull, wait)
            weights = bulk_pb.BulkWeights(header=convert.result_header(result).header)
            if result.weights:
                plan = await self._servicer.plan(session.session_id, result)
                weights.manifest.CopyFrom(plan.manifest)
        except SessionError as err:
            await self._io(send_message, conn, _refusal(err))
            return True, "refused"
        await self._io(send_message, conn, bulk_pb.BulkResponse(weights=weights))
        if result.weights:
            await self._io(self._send_weights, conn, result)
            session.metrics.weights_sent(session.session_id, result.nbytes)
        _log.debug(
            "session %s: %r pulled round %d over the bulk port (%s, %d bytes)",
            session.session_id,
            pull.client_id,
            result.round,
            peer,
            result.nbytes,
        )
        return True, "ok"

    def _send_weights(self, conn: socket.socket, result: RoundResult) -> None:
        """The weights' bytes in manifest order: from the file by ``sendfile`` when they are
        stored and the connection is plain TCP (the kernel copies page cache to socket),
        else from the arrays."""
        stored = result.stored
        # With TLS, socket.sendfile would read through the file's shared position (the
        # descriptor is a duplicate): the bytes go from the mapping instead.
        plain = not isinstance(conn, ssl.SSLSocket)
        reader = stored.reopen() if stored is not None and plain else None
        if reader is not None and stored is not None:
            with reader:
                for index, layer in enumerate(stored.arrays):
                    if layer.nbytes:
                        conn.sendfile(reader, stored.offset(index), int(layer.nbytes))
            return
        for layer in result.weights or ():
            if layer.nbytes:
                conn.sendall(np.ascontiguousarray(layer).reshape(-1).view(np.uint8).data)
