"""A trainer's connection to the aggregator's bulk port (``bulk_transfer.proto``).

:class:`~sedna.service.aggregation_client.AggregationClient` uses it for the weights of
``push`` and ``pull`` when the server advertises a bulk port: the update is sent straight
from the trainer's arrays and the aggregate received straight into them (no message copies
on either side). Refusals come back as :class:`BulkCallError`, a ``grpc.RpcError`` with the
status code, details and trailing metadata the gRPC call would have had, so the client's
error mapping and retries treat both transports alike; a broken connection is UNAVAILABLE
and an expired deadline DEADLINE_EXCEEDED, as for a gRPC call.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import grpc

from sedna.api.aggregator.v1 import aggregation_service_pb2 as pb
from sedna.api.aggregator.v1 import bulk_transfer_pb2 as bulk_pb
from sedna.api.common.v1.tensor_pb2 import TensorFrame
from sedna.service.bulk_wire import (
    BulkProtocolError,
    recv_exactly,
    recv_message,
    send_message,
    set_io_timeout,
    timed_out,
)
from sedna.tensor import TensorAssembler

__all__ = ["CONNECT_TIMEOUT", "BulkCallError", "BulkConnection", "BulkUnreachableError"]

CONNECT_TIMEOUT: Final = 5.0
"""Seconds to connect to the bulk port before the client falls back to gRPC."""
_ANSWER_MARGIN: Final = 1.0
"""Extra seconds a pull waits for the server's answer past its deadline: the server answers
DEADLINE_EXCEEDED itself just before it, and that answer says more than a socket timeout."""

_CODES: Final = {code.value[0]: code for code in grpc.StatusCode}


class BulkCallError(grpc.RpcError, grpc.Call):
    """A bulk request's failure, shaped as a finished gRPC call's error."""

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details
        self._metadata = tuple(metadata)

    def code(self) -> grpc.StatusCode:
        """The status code."""
        return self._code

    def details(self) -> str:
        """The status message."""
        return self._details

    def trailing_metadata(self) -> Any:
        """What the server would have sent as trailing metadata (reason, current round)."""
        return self._metadata

    def initial_metadata(self) -> Any:
        """Always empty."""
        return ()

    def is_active(self) -> bool:
        """Always False: the request is over."""
        return False

    def time_remaining(self) -> float:
        """Always 0: the request is over."""
        return 0.0

    def cancel(self) -> bool:
        """Nothing to cancel."""
        return False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        """Never added (the request is over)."""
        return False


class BulkUnreachableError(ConnectionError):
    """The bulk port could not be connected to (use gRPC instead)."""


def _refused(status: bulk_pb.BulkStatus) -> BulkCallError:
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    if code is grpc.StatusCode.OK:
        code = grpc.StatusCode.UNKNOWN
    return BulkCallError(code, status.message, sorted(status.metadata.items()))


class _Deadline:
    def __init__(self, timeout: float) -> None:
        self._end = time.monotonic() + timeout

    def left(self, extra: float = 0.0) -> float:
        return max(self._end + extra - time.monotonic(), 0.001)


class BulkConnection:
    """One connection to a bulk port, opened on first use and reopened after a failure.

    Parameters
    ----------
    host, port
        The aggregator's host (as dialed for gRPC) and its advertised bulk port.
    token
        Bearer token sent with every request (None: none).
    ssl_context
        Client TLS context when the gRPC channel uses TLS; None: plain TCP.
    server_hostname
        The name the server's certificate must carry (TLS).

    Not thread-safe: one trainer thread drives it.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._token = token or ""
        self._ssl = ssl_context
        self._server_hostname = server_hostname or host
        self._sock: socket.socket | None = None
        self.payload_sent = False
        """Whether the last push sent any tensor byte (then it must not be retried blindly)."""

    @property
    def where(self) -> str:
        """``host:port`` of the bulk port."""
        return f"{self.host}:{self.port}"

    def _connect(self, deadline: _Deadline) -> socket.socket:
        if self._sock is not None:
            return self._sock
        try:
            sock = socket.create_connection(
                (self.host, self.port), timeout=min(CONNECT_TIMEOUT, deadline.left())
            )
        except OSError as err:
            raise BulkUnreachableError(
                f"cannot connect to the bulk port {self.where}: {err}"
            ) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is not None:
                sock.settimeout(min(CONNECT_TIMEOUT, deadline.left()))
                sock = self._ssl.wrap_socket(sock, server_hostname=self._server_hostname)
        except (OSError, ssl.SSLError) as err:
            sock.close()
            raise BulkUnreachableError(
                f"TLS handshake with the bulk port {self.where} failed: {err}"
            ) from None
        self._sock = sock
        return sock

    def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _call(self, what: str, deadline: _Deadline, body: Callable[[socket.socket], Any]) -> Any:
        """Run ``body(sock)``; transport failures close the connection and become the gRPC
        errors a call would have raised."""
        sock = self._connect(deadline)
        try:
            return body(sock)
        except BulkCallError:
            raise
        except OSError as err:
            self.close()
            if timed_out(err):
                raise BulkCallError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"{what} over the bulk port {self.where}: deadline exceeded",
                ) from None
            raise BulkCallError(
                grpc.StatusCode.UNAVAILABLE,
                f"{what} over the bulk port {self.where}: connection failed: {err}",
            ) from None
        except (BulkProtocolError, ssl.SSLError) as err:
            self.close()
            raise BulkCallError(
                grpc.StatusCode.UNAVAILABLE,
                f"{what} over the bulk port {self.where}: connection failed: {err}",
            ) from None
        except BaseException:
            self.close()  # the connection is mid-request: unusable
            raise

    def _answer(self, sock: socket.socket, deadline: _Deadline, extra: float = 0.0) -> Any:
        set_io_timeout(sock, deadline.left(extra))
        response = recv_message(sock, bulk_pb.BulkResponse)
        assert response is not None
        if response.WhichOneof("response") == "error":
            raise _refused(response.error)
        return response

    def push(
        self,
        header: pb.UpdateHeader,
        plan_manifest: Any,
        payloads: Sequence[memoryview],
        timeout: float,
    ) -> pb.PushUpdateResponse:
        """Send an update: the header and manifest, then (once the server is ready) every
        tensor's bytes from ``payloads`` (byte views, manifest order).

        Raises
        ------
        BulkUnreachableError
            No connection could be made (nothing was sent).
        BulkCallError
            The refusal, or a broken connection (UNAVAILABLE) or deadline.
        """
        deadline = _Deadline(timeout)
        self.payload_sent = False
        request = bulk_pb.BulkRequest(token=self._token, timeout_seconds=timeout)
        request.push.header.CopyFrom(header)
        request.push.manifest.CopyFrom(plan_manifest)

        def body(sock: socket.socket) -> pb.PushUpdateResponse:
            set_io_timeout(sock, deadline.left())
            send_message(sock, request)
            ready = self._answer(sock, deadline)
            if ready.WhichOneof("response") != "ready":
                raise BulkProtocolError("the server answered a push with something else")
            for payload in payloads:
                if len(payload):
                    self.payload_sent = True
                    set_io_timeout(sock, deadline.left())
                    sock.sendall(payload)
            answer = self._answer(sock, deadline)
            if answer.WhichOneof("response") != "pushed":
                raise BulkProtocolError("the server answered a push with something else")
            pushed: pb.PushUpdateResponse = answer.pushed
            return pushed

        result: pb.PushUpdateResponse = self._call("push", deadline, body)
        return result

    def pull(
        self,
        request: pb.PullGlobalWeightsRequest,
        timeout: float,
        assembler: TensorAssembler,
    ) -> pb.GlobalWeightsHeader:
        """Wait for a round's aggregate and receive its tensors into ``assembler`` (in place).

        Raises
        ------
        BulkUnreachableError
            No connection could be made.
        BulkCallError
            The refusal, or a broken connection (UNAVAILABLE) or deadline.
        TensorError
            The bytes do not match the manifest (CRC-32): the connection is closed.
        """
        deadline = _Deadline(timeout)
        message = bulk_pb.BulkRequest(token=self._token, timeout_seconds=timeout)
        message.pull.CopyFrom(request)

        def body(sock: socket.socket) -> pb.GlobalWeightsHeader:
            set_io_timeout(sock, deadline.left())
            send_message(sock, message)
            answer = self._answer(sock, deadline, extra=_ANSWER_MARGIN)
            if answer.WhichOneof("response") != "weights":
                raise BulkProtocolError("the server answered a pull with something else")
            weights = answer.weights
            if weights.HasField("manifest"):
                assembler.feed(TensorFrame(manifest=weights.manifest))

                def read(view: memoryview) -> None:
                    set_io_timeout(sock, deadline.left(_ANSWER_MARGIN))
                    recv_exactly(sock, view)

                assembler.receive_in_place(read)
            header: pb.GlobalWeightsHeader = weights.header
            return header

        result: pb.GlobalWeightsHeader = self._call("pull", deadline, body)
        return result
