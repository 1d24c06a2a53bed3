"""A synchronous gRPC client of the federated-learning aggregation server (``sedna-aggregator``).

Replaces upstream's websocket ``AggregationClient`` (JSON weight lists, no deadlines): the
weights travel as chunked typed tensors (:func:`sedna.tensor.plan_frames`; the chunk messages
written and read by :mod:`sedna.tensor.chunk_wire`, which copies each chunk once on either
side), every call has a deadline, and every failure is a :class:`AggregationClientError` (a
:class:`~sedna.common.errors.SednaError`) whose message names the call, the server and the
status.

With an S3 transmitter (``transmitter=S3Transmitter(...)``, ``TRANSMITTER=s3``) the weights
go through object storage instead: :meth:`AggregationClient.push` writes the update as a
safetensors object (``<AGG_DATA_PATH>/<session>/round-<n>/<client>.safetensors``) and sends
only its URI in the header; :meth:`AggregationClient.pull` asks ``by_reference`` and reads the
object the answer names, tensor by tensor.

Retries (with exponential backoff, within the call's deadline):

* ``join``, ``pull``, ``status`` and ``leave``: on UNAVAILABLE (no server yet, a restart, a
  dropped connection). They are idempotent on the server. ``pull(retry_unavailable=False)``
  raises at once instead, for a caller that re-joins first.
* ``push``: on UNAVAILABLE only while no tensor frame of the update was handed to gRPC, and on
  the server's refusals that mean "too early" (the round is not open yet, or the session is
  still at an earlier round); never once the update's bytes may have reached the server.
  By reference (S3), the object is written once and the header-only call is retried on
  UNAVAILABLE too; a retry answered "duplicate" after an UNAVAILABLE means the server took
  the earlier attempt, and counts as success.

Re-joining is the caller's: a restarted server (restored from its checkpoint) knows neither
the client (:class:`NotJoinedError`, or :class:`SessionNotFoundError` before anyone
re-joined) nor an update pushed to the server before it; a broken push raises
:class:`AggregatorUnavailableError` and a duplicate :class:`DuplicateUpdateError`.
:class:`~sedna.core.federated_learning.FederatedLearning` re-joins and pushes again.

Example
-------
>>> with AggregationClient("127.0.0.1", 7363) as client:  # doctest: +SKIP
...     joined = client.join("default/fl-job", "trainworker-x1", sample_count=600)
...     client.push(joined.current_round, weights, sample_count=600, metrics={"loss": 0.3})
...     round_number, weights, done = client.pull(joined.current_round, timeout=600)
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import grpc
import numpy as np
import numpy.typing as npt
from google.protobuf import json_format
from pydantic import SecretStr

from sedna.algorithms.transmitter import (
    AbstractTransmitter,
    S3Transmitter,
    TransmitterError,
)
from sedna.api.aggregator.v1 import aggregation_service_pb2 as pb
from sedna.api.aggregator.v1 import aggregation_service_pb2_grpc as pb_grpc
from sedna.common.errors import SednaError
from sedna.runtime.channel import ChannelConfig, open_sync_channel
from sedna.runtime.memory import tune_malloc
from sedna.service.bulk_client import BulkConnection, BulkUnreachableError
from sedna.tensor import (
    DEFAULT_CHUNK_SIZE,
    TensorAssembler,
    TensorError,
    chunk_wire,
    from_numpy_dtype,
    plan_frames,
)
from sedna.tensor.chunk_wire import RawChunk

__all__ = [
    "CURRENT_ROUND_METADATA_KEY",
    "DEFAULT_AGG_BULK_PORT",
    "DEFAULT_AGG_PORT",
    "REASON_METADATA_KEY",
    "AggregationClient",
    "AggregationClientError",
    "AggregatorUnavailableError",
    "ClientStatus",
    "DuplicateUpdateError",
    "GlobalWeights",
    "JoinResult",
    "NotJoinedError",
    "NotSelectedError",
    "PullTimeoutError",
    "RoundNotOpenError",
    "SessionClosedError",
    "SessionConfigConflictError",
    "SessionFailedError",
    "SessionNotFoundError",
    "SessionSettings",
    "SessionStatus",
    "UpdateRejectedError",
    "WrongRoundError",
]

_log = logging.getLogger(__name__)

Array = npt.NDArray[Any]
T = TypeVar("T")

DEFAULT_AGG_PORT: Final = 7363
DEFAULT_AGG_BULK_PORT: Final = 7365
"""The aggregator's default bulk port (``bulk_transfer.proto``; its metrics are on 7364)."""
CURRENT_ROUND_METADATA_KEY: Final = "sedna-current-round"
"""Trailing metadata of a wrong-round refusal: the session's current round."""
REASON_METADATA_KEY: Final = "sedna-reason"
"""Trailing metadata of a refusal: a stable label (``not_selected``, ``round_not_open``...)."""
"""Trailing metadata of a wrong-round refusal: the session's current round."""

_MAX_RECONNECT_BACKOFF_MS: Final = 1000
"""gRPC waits up to 120 s between reconnects by default; a restarted aggregator would be
ignored for minutes by a channel waiting to reconnect."""
_INITIAL_BACKOFF: Final = 0.05
_MAX_BACKOFF: Final = 2.0
_MIN_ATTEMPT_SECONDS: Final = 0.05
"""No retry is started with less time than this left before the deadline."""

_SERVICE: Final = pb.DESCRIPTOR.services_by_name["AggregationService"]
_PUSH_UPDATE_METHOD: Final = f"/{_SERVICE.full_name}/{_SERVICE.methods_by_name['PushUpdate'].name}"
_PULL_GLOBAL_WEIGHTS_METHOD: Final = (
    f"/{_SERVICE.full_name}/{_SERVICE.methods_by_name['PullGlobalWeights'].name}"
)


# ---------------------------------------------------------------------------------- errors


class AggregationClientError(SednaError):
    """A call to the aggregation server failed.

    Attributes
    ----------
    code : grpc.StatusCode
        The gRPC status (``UNKNOWN`` for a client-side problem such as an undecodable stream).
    details : str
        The server's message.
    """

    def __init__(
        self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNKNOWN, details: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


class AggregatorUnavailableError(AggregationClientError):
    """The server could not be reached (UNAVAILABLE) before the call's deadline."""


class PullTimeoutError(AggregationClientError):
    """The round was not aggregated before the pull's deadline (DEADLINE_EXCEEDED)."""


class SessionNotFoundError(AggregationClientError):
    """The server holds no such session (NOT_FOUND): join (again) first, e.g. after a restart."""


class SessionFailedError(AggregationClientError):
    """The session failed (ABORTED): a round ended short of its minimum participants."""


class SessionClosedError(AggregationClientError):
    """The session is completed or failed and takes no more updates."""


class SessionConfigConflictError(AggregationClientError):
    """The session exists with another configuration than the one this client asked for."""


class NotJoinedError(AggregationClientError):
    """The server does not know this client in the session (not joined, or left)."""


class NotSelectedError(AggregationClientError):
    """The client was not selected for the round (client selection): pull instead."""


class RoundNotOpenError(AggregationClientError):
    """The round is not open yet (waiting for clients) or is closing (aggregating)."""


class WrongRoundError(AggregationClientError):
    """The update was for another round than the session's.

    Attributes
    ----------
    round : int
        The round of the refused update.
    current_round : int
        The session's current round (from the server's ``sedna-current-round`` metadata;
        -1 when the server did not send it). Higher than :attr:`round`: the update is stale
        (the round closed without it); lower: the session has not reached that round yet.
    """

    def __init__(
        self,
        message: str,
        code: grpc.StatusCode,
        details: str,
        *,
        round: int,
        current_round: int,
    ) -> None:
        super().__init__(message, code, details)
        self.round = round
        self.current_round = current_round


class UpdateRejectedError(AggregationClientError):
    """The server refused the update as malformed or duplicate (INVALID_ARGUMENT,
    ALREADY_EXISTS, ...); the message names the layer or the reason."""


class DuplicateUpdateError(UpdateRejectedError):
    """The server already has (or is still receiving) this client's update for the round
    (ALREADY_EXISTS). After a broken call it may be the earlier attempt's: the client's
    ``last_round`` in :meth:`AggregationClient.status` tells whether it counted."""


# ----------------------------------------------------------------------------------- values


@dataclasses.dataclass(frozen=True, slots=True)
class SessionSettings:
    """A session's configuration (the proto's ``SessionConfig``).

    As a request (``join(config=...)``), zero/empty fields mean "the server's setting".
    """

    aggregation: str = ""
    aggregation_parameters: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    exit_round: int = 0
    min_participants: int = 0
    client_fraction: float = 0.0
    round_timeout: float | None = None
    target_metric: str = ""
    target_metric_value: float = 0.0
    proximal_mu: float = 0.0

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SessionSettings:
        """Build from a mapping of field names (unknown names raise ``ValueError``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown session config fields {unknown}; known: {sorted(names)}")
        return cls(**dict(values))

    def to_proto(self) -> pb.SessionConfig:
        """The proto message."""
        message = pb.SessionConfig(
            aggregation=self.aggregation,
            exit_round=int(self.exit_round),
            min_participants=int(self.min_participants),
            client_fraction=float(self.client_fraction),
            target_metric=self.target_metric,
            target_metric_value=float(self.target_metric_value),
            proximal_mu=float(self.proximal_mu),
        )
        if self.aggregation_parameters:
            message.aggregation_parameters.update(dict(self.aggregation_parameters))
        if self.round_timeout is not None:
            message.round_timeout.FromTimedelta(
                datetime.timedelta(seconds=float(self.round_timeout))
            )
        return message

    @classmethod
    def from_proto(cls, message: pb.SessionConfig) -> SessionSettings:
        """From the proto message."""
        return cls(
            aggregation=message.aggregation,
            aggregation_parameters=(
                json_format.MessageToDict(message.aggregation_parameters)
                if message.HasField("aggregation_parameters")
                else {}
            ),
            exit_round=int(message.exit_round),
            min_participants=int(message.min_participants),
            client_fraction=float(message.client_fraction),
            round_timeout=(
                message.round_timeout.ToTimedelta().total_seconds()
                if message.HasField("round_timeout")
                else None
            ),
            target_metric=message.target_metric,
            target_metric_value=float(message.target_metric_value),
            proximal_mu=float(message.proximal_mu),
        )


def _state_name(state: int) -> str:
    return str(pb.SessionState.Name(state)).removeprefix("SESSION_STATE_")  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True, slots=True)
class JoinResult:
    """The answer to :meth:`AggregationClient.join`.

    ``state`` is the proto's name without prefix (``WAITING_FOR_CLIENTS``, ``TRAINING``,
    ``AGGREGATING``, ``COMPLETED``, ``FAILED``); ``current_round`` the round to train for next
    (rounds start at 1); ``selected`` whether this client is selected for it.
    """

    state: str
    current_round: int
    selected: bool
    config: SessionSettings


@dataclasses.dataclass(frozen=True, slots=True)
class GlobalWeights:
    """The aggregate of a round; unpacks as ``(round, weights, exit)``.

    ``exit`` is True when the session is complete and the client should stop (upstream's
    ``exit_flag == "ok"``).
    """

    round: int
    weights: list[Array]
    exit: bool
    total_samples: int = 0
    participants: tuple[str, ...] = ()
    dropped_clients: tuple[str, ...] = ()
    metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        """``round, weights, exit = client.pull(...)``."""
        return iter((self.round, self.weights, self.exit))


@dataclasses.dataclass(frozen=True, slots=True)
class ClientStatus:
    """One client of a session, as the server sees it."""

    client_id: str
    sample_count: int
    last_round: int
    selected: bool


@dataclasses.dataclass(frozen=True, slots=True)
class SessionStatus:
    """The answer to :meth:`AggregationClient.status`."""

    state: str
    current_round: int
    clients: tuple[ClientStatus, ...]
    metrics: Mapping[str, float]
    config: SessionSettings


# ----------------------------------------------------------------------------------- client


def _bulk_ssl_context(config: ChannelConfig) -> ssl.SSLContext:
    """The bulk connection's TLS context, from the channel's TLS settings."""
    context = ssl.create_default_context(
        cafile=None if config.ca_file is None else str(config.ca_file)
    )
    if config.cert_file is not None and config.key_file is not None:
        context.load_cert_chain(str(config.cert_file), str(config.key_file))
    return context


def _target(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _code(exc: grpc.RpcError) -> grpc.StatusCode:
    return exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN


def _details(exc: grpc.RpcError) -> str:
    return (exc.details() or "") if isinstance(exc, grpc.Call) else str(exc)


_FAILED_PRECONDITION_ERRORS: Final[dict[str, type[AggregationClientError]]] = {
    "not_selected": NotSelectedError,
    "round_not_open": RoundNotOpenError,
    "unknown_client": NotJoinedError,
    "config_conflict": SessionConfigConflictError,
    "session_closed": SessionClosedError,
}
"""FAILED_PRECONDITION refusals by the ``sedna-reason`` label the server sends."""


def _reason(exc: grpc.RpcError) -> str:
    if not isinstance(exc, grpc.Call):
        return ""
    for key, value in exc.trailing_metadata() or ():
        if key == REASON_METADATA_KEY:
            return str(value)
    return ""


def _current_round(exc: grpc.RpcError) -> int:
    if not isinstance(exc, grpc.Call):
        return -1
    for key, value in exc.trailing_metadata() or ():
        if key == CURRENT_ROUND_METADATA_KEY:
            try:
                return int(value)
            except (TypeError, ValueError):
                return -1
    return -1


class AggregationClient:
    """One trainer's connection to ``sedna-aggregator``, synchronous, a deadline on every call.

    Parameters
    ----------
    host, port
        The server (``AGG_IP``, ``AGG_PORT``).
    timeout
        Default deadline of ``join``, ``push``, ``status`` and ``leave`` in seconds (retries
        included). ``pull`` waits for a round and takes its own ``timeout``.
    chunk_size
        Bytes per tensor chunk of an update (keep it under the server's
        ``max_receive_message_bytes``, 64 MiB by default).
    max_weights_bytes
        Largest global model accepted by :meth:`pull` (16 GiB by default).
    channel_config
        TLS, token, message limits...; its ``target`` is replaced by ``host:port``.
    bulk
        Push and pull the weights over the server's bulk port when it advertises one
        (default): raw bytes on a TCP connection (TLS when the channel uses TLS), sent from
        and received into the arrays, at less than half gRPC's CPU per round (bench). A client
        that cannot connect to it uses gRPC (logged). False: gRPC only.
    transmitter
        How the weights travel: None or a
        :class:`~sedna.algorithms.transmitter.WSTransmitter` streams them in the calls; an
        :class:`~sedna.algorithms.transmitter.S3Transmitter` passes them as S3 objects
        (by reference). ``TransmitterError`` (a ``SednaError``) reports a failed object write.

    Notes
    -----
    :meth:`join` remembers the session and client ids; the other calls use them. The channel
    connects lazily, so creating a client never blocks. Safe to share between threads for
    ``status``; one trainer thread should drive ``join``/``push``/``pull``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_AGG_PORT,
        *,
        timeout: float = 30.0,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_weights_bytes: int = 16 << 30,
        channel_config: ChannelConfig | None = None,
        transmitter: AbstractTransmitter | None = None,
        bulk: bool = True,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, not {timeout}")
        # Each push and pull copies a model through chunk-sized buffers and allocates the
        # pulled layers: from the heap, not a fresh zeroed mapping per buffer.
        tune_malloc()
        target = _target(host, int(port))
        if channel_config is None:
            channel_config = ChannelConfig(target=target)
        options = channel_config.options
        if not any(name == "grpc.max_reconnect_backoff_ms" for name, _ in options):
            options = (*options, ("grpc.max_reconnect_backoff_ms", _MAX_RECONNECT_BACKOFF_MS))
        config = dataclasses.replace(
            channel_config, target=target, default_timeout=timeout, options=options
        )
        self.target = target
        self.timeout = timeout
        self.chunk_size = chunk_size
        self.max_weights_bytes = max_weights_bytes
        if (
            transmitter is not None
            and transmitter.by_reference
            and not isinstance(transmitter, S3Transmitter)
        ):
            raise TypeError(
                f"a by-reference transmitter must be an S3Transmitter, not "
                f"{type(transmitter).__name__}"
            )
        self.transmitter = transmitter
        self._host = host
        self._channel_config = config
        self._use_bulk = bulk
        self._bulk: BulkConnection | None = None
        self.session_id = ""
        self.client_id = ""
        self._channel = open_sync_channel(config)
        self._stub = pb_grpc.AggregationServiceStub(self._channel)
        # The weight-carrying calls write and read their chunk messages by hand
        # (chunk_wire): the same bytes on the wire, without protobuf's copies of each chunk.
        # Made on the same (intercepted) channel as the stub, so deadlines and the token
        # apply to them too.
        self._push_update: grpc.StreamUnaryMultiCallable[
            pb.PushUpdateRequest | bytes, pb.PushUpdateResponse
        ] = self._channel.stream_unary(
            _PUSH_UPDATE_METHOD,
            request_serializer=chunk_wire.serializer,
            response_deserializer=pb.PushUpdateResponse.FromString,
        )
        self._pull_global_weights: grpc.UnaryStreamMultiCallable[
            pb.PullGlobalWeightsRequest, pb.PullGlobalWeightsResponse | RawChunk
        ] = self._channel.unary_stream(
            _PULL_GLOBAL_WEIGHTS_METHOD,
            request_serializer=pb.PullGlobalWeightsRequest.SerializeToString,
            response_deserializer=chunk_wire.deserializer(pb.PullGlobalWeightsResponse),
        )
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing

    def _error(
        self, exc: grpc.RpcError, what: str, round_number: int = 0
    ) -> AggregationClientError:
        code, details = _code(exc), _details(exc)
        where = f"session {self.session_id!r}" if self.session_id else "the aggregation server"
        message = f"{what} ({where} at {self.target}) failed: {code.name}: {details}"
        if code is grpc.StatusCode.UNAVAILABLE:
            return AggregatorUnavailableError(
                f"{message} (is sedna-aggregator running and reachable at {self.target}?)",
                code,
                details,
            )
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return (
                PullTimeoutError(message, code, details)
                if what.startswith("pull")
                else (AggregatorUnavailableError(message, code, details))
            )
        if code is grpc.StatusCode.NOT_FOUND:
            return SessionNotFoundError(message, code, details)
        if code is grpc.StatusCode.ABORTED:
            return SessionFailedError(message, code, details)
        if code is grpc.StatusCode.FAILED_PRECONDITION:
            current = _current_round(exc)
            if current >= 0:
                return WrongRoundError(
                    f"{message} (the session is at round {current})",
                    code,
                    details,
                    round=round_number,
                    current_round=current,
                )
            # The server's refusals, told apart by their reason label (trailing metadata).
            refusal = _FAILED_PRECONDITION_ERRORS.get(_reason(exc))
            if refusal is not None:
                return refusal(message, code, details)
        if code is grpc.StatusCode.ALREADY_EXISTS:
            return DuplicateUpdateError(message, code, details)
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            return UpdateRejectedError(message, code, details)
        return AggregationClientError(message, code, details)

    def _retrying(
        self,
        what: str,
        call: Callable[[float], T],
        timeout: float,
        retryable: Callable[[AggregationClientError], bool],
        round_number: int = 0,
    ) -> T:
        """``call(remaining)`` until it succeeds, a non-retryable error, or the deadline."""
        deadline = time.monotonic() + timeout
        backoff = _INITIAL_BACKOFF
        attempt = 0
        previous: AggregationClientError | None = None
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            try:
                return call(max(remaining, 0.001))
            except grpc.RpcError as exc:
                err = self._error(exc, what, round_number)
            if (
                previous is not None
                and previous.code is not grpc.StatusCode.UNAVAILABLE
                and err.code is grpc.StatusCode.DEADLINE_EXCEEDED
            ):
                # The deadline ran out in a retry: the refusal that made us retry says more.
                err = previous
            remaining = deadline - time.monotonic()
            if not retryable(err) or remaining <= _MIN_ATTEMPT_SECONDS:
                if attempt > 1:
                    err.args = (f"{err.args[0]} (after {attempt} attempts in {timeout:g} s)",)
                raise err
            previous = err
            delay = min(random.uniform(0, backoff), remaining - _MIN_ATTEMPT_SECONDS)
            _log.debug("%s: %s; retrying in %.2f s", what, err, delay)
            time.sleep(delay)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    @staticmethod
    def _unavailable(err: AggregationClientError) -> bool:
        return err.code is grpc.StatusCode.UNAVAILABLE

    @property
    def _s3(self) -> S3Transmitter | None:
        transmitter = self.transmitter
        return transmitter if isinstance(transmitter, S3Transmitter) else None

    def _offered_bulk_port(self, port: int) -> None:
        """Use (or stop using) the bulk port a join answer advertised."""
        if not self._use_bulk or self._s3 is not None:
            return
        if self._bulk is not None and self._bulk.port == port:
            return
        if self._bulk is not None:
            self._bulk.close()
            self._bulk = None
        if port:
            config = self._channel_config
            token = config.token
            self._bulk = BulkConnection(
                self._host,
                port,
                token=token.get_secret_value() if isinstance(token, SecretStr) else token,
                ssl_context=_bulk_ssl_context(config) if config.secure else None,
                server_hostname=config.server_name,
            )

    def _bulk_unreachable(self, err: BulkUnreachableError) -> None:
        """Fall back to gRPC for the weights (until a join offers a bulk port again)."""
        _log.warning("%s; pushing and pulling over gRPC instead", err)
        if self._bulk is not None:
            self._bulk.close()
        self._bulk = None

    def _require_joined(self) -> None:
        if not self.session_id or not self.client_id:
            raise NotJoinedError("join a session before calling the aggregation server")

    # ------------------------------------------------------------------ calls

    def join(
        self,
        session_id: str,
        client_id: str,
        sample_count: int = 0,
        config: SessionSettings | Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> JoinResult:
        """Join the session (created on first join); re-joining after a reconnect is fine.

        Parameters
        ----------
        session_id
            ``"<namespace>/<job name>"``.
        client_id
            The trainer's ``WORKER_NAME``.
        sample_count
            Local training samples (0 keeps the count the server knows).
        config
            The configuration this client expects (zero fields: the server's); a session that
            exists with another one raises :class:`SessionConfigConflictError`.
        timeout
            Seconds to keep trying (UNAVAILABLE is retried with backoff); the client's
            ``timeout`` by default.

        Raises
        ------
        AggregatorUnavailableError
            No server answered before the deadline.
        AggregationClientError
            Any other refusal (a subclass naming it).
        """
        if sample_count < 0:
            raise ValueError(f"sample_count must be >= 0, not {sample_count}")
        request = pb.JoinSessionRequest(
            session_id=session_id, client_id=client_id, sample_count=int(sample_count)
        )
        if config is not None:
            settings = (
                config
                if isinstance(config, SessionSettings)
                else SessionSettings.from_mapping(config)
            )
            request.config.CopyFrom(settings.to_proto())
        self.session_id, self.client_id = session_id, client_id
        response: pb.JoinSessionResponse = self._retrying(
            "join",
            lambda remaining: self._stub.JoinSession(request, timeout=remaining),
            self.timeout if timeout is None else timeout,
            self._unavailable,
        )
        self._offered_bulk_port(int(response.bulk_port))
        return JoinResult(
            state=_state_name(response.state),
            current_round=int(response.current_round),
            selected=bool(response.selected),
            config=SessionSettings.from_proto(response.config),
        )

    def push(
        self,
        round: int,
        weights: Sequence[Any],
        sample_count: int,
        metrics: Mapping[str, float] | None = None,
        *,
        timeout: float | None = None,
    ) -> int:
        """Send this client's update for ``round`` as a chunked tensor stream.

        Parameters
        ----------
        round
            The round the update was trained in.
        weights
            One array per layer (anything :func:`numpy.asarray` takes; float16/32/64).
        sample_count
            Samples the update was trained on (> 0; the FedAvg weight).
        metrics
            Training metrics of the round (finite numbers), e.g. ``{"loss": 0.3}``.
        timeout
            Seconds for the whole push, retries included; the client's ``timeout`` by default.

        Returns
        -------
        int
            Updates the server has received for the round, this one included.

        Raises
        ------
        WrongRoundError
            The session is at another round (``current_round`` says which). A session still
            at an earlier round is waited for (retried) until the deadline first.
        NotSelectedError
            Not selected for the round: pull the aggregate instead.
        RoundNotOpenError
            The round did not open before the deadline.
        DuplicateUpdateError
            The server has (or is receiving) an update of this client for the round.
        UpdateRejectedError
            Malformed (shape, dtype, NaN/Inf; the message names the layer).
        AggregatorUnavailableError
            No server before the deadline, or the connection broke while sending (not
            retried: the server may have the update; re-join and push again, a duplicate
            answer then says it has).
        TransmitterError
            By reference (S3): the update's object could not be written.
        """
        self._require_joined()
        if sample_count <= 0:
            raise ValueError(f"sample_count must be > 0, not {sample_count}")
        layers = [(f"layer.{i}", np.asarray(w)) for i, w in enumerate(weights)]
        values = {str(k): float(v) for k, v in (metrics or {}).items()}
        bad = sorted(k for k, v in values.items() if not math.isfinite(v))
        if bad:
            raise ValueError(f"metrics must be finite numbers; not finite: {bad}")
        header = pb.UpdateHeader(
            session_id=self.session_id,
            client_id=self.client_id,
            round=int(round),
            sample_count=int(sample_count),
            metrics=values,
        )
        s3 = self._s3
        if s3 is not None:
            return self._push_by_reference(s3, int(round), layers, header, timeout)
        sent_frames = [0]

        # A dtype with no wire form is a ValueError here rather than a cancelled call.
        for name, array in layers:
            try:
                from_numpy_dtype(array.dtype)
            except TensorError as err:
                raise ValueError(f"cannot send {name} of the update: {err}") from err
        # Laid out and checksummed once for every attempt; the chunks are read from the
        # arrays as they are sent.
        plan = plan_frames(layers, chunk_size=self.chunk_size)
        manifest = pb.PushUpdateRequest()
        manifest.frame.manifest.CopyFrom(plan.manifest)

        def messages() -> Iterator[pb.PushUpdateRequest | bytes]:
            yield pb.PushUpdateRequest(header=header)
            sent_frames[0] += 1
            yield manifest
            for index, offset, data in plan.chunks():
                sent_frames[0] += 1
                # The serialized PushUpdateRequest{frame: {chunk}}: the chunk copied once,
                # straight out of the array (chunk_wire.serializer passes it through).
                yield chunk_wire.encode_chunk(index, offset, data)

        def attempt(remaining: float) -> pb.PushUpdateResponse:
            sent_frames[0] = 0
            bulk = self._bulk
            if bulk is not None:
                try:
                    return bulk.push(header, plan.manifest, plan.payloads, remaining)
                except BulkUnreachableError as err:
                    self._bulk_unreachable(err)
                finally:
                    sent_frames[0] = int(bulk.payload_sent)
            return self._push_update(messages(), timeout=remaining)

        def retryable(err: AggregationClientError) -> bool:
            if err.code is grpc.StatusCode.UNAVAILABLE:
                return sent_frames[0] == 0
            if isinstance(err, RoundNotOpenError):
                return True
            return isinstance(err, WrongRoundError) and 0 <= err.current_round < int(round)

        response = self._retrying(
            f"push of round {round}",
            attempt,
            self.timeout if timeout is None else timeout,
            retryable,
            round_number=int(round),
        )
        return int(response.received_updates)

    def _push_by_reference(
        self,
        s3: S3Transmitter,
        round_number: int,
        layers: list[tuple[str, Array]],
        header: pb.UpdateHeader,
        timeout: float | None,
    ) -> int:
        """Write the update's object once, then send the header naming it (retried)."""
        uri = s3.update_uri(self.session_id, round_number, self.client_id)
        s3.send(
            layers,
            uri,
            metadata={
                "session_id": self.session_id,
                "client_id": self.client_id,
                "round": str(round_number),
            },
        )
        header.weights_uri = uri
        request = pb.PushUpdateRequest(header=header)
        unavailable_before = [False]

        def attempt(remaining: float) -> pb.PushUpdateResponse:
            try:
                response: pb.PushUpdateResponse = self._stub.PushUpdate(
                    iter((request,)), timeout=remaining
                )
            except grpc.RpcError as exc:
                code = _code(exc)
                if code is grpc.StatusCode.ALREADY_EXISTS and unavailable_before[0]:
                    # An earlier attempt reached the server before its answer was lost.
                    _log.info("push of round %d: the server already has it", round_number)
                    return pb.PushUpdateResponse(round=round_number, received_updates=0)
                if code is grpc.StatusCode.UNAVAILABLE:
                    unavailable_before[0] = True
                raise
            return response

        def retryable(err: AggregationClientError) -> bool:
            if err.code is grpc.StatusCode.UNAVAILABLE or isinstance(err, RoundNotOpenError):
                return True
            return isinstance(err, WrongRoundError) and 0 <= err.current_round < round_number

        response = self._retrying(
            f"push of round {round_number} ({uri})",
            attempt,
            self.timeout if timeout is None else timeout,
            retryable,
            round_number=round_number,
        )
        return int(response.received_updates)

    def _read_reference(self, uri: str, round_number: int) -> list[Array]:
        s3 = self._s3
        if s3 is None:
            raise AggregationClientError(
                f"pull of round {round_number} from {self.target}: the server answered with an "
                f"object ({uri}) but this client has no S3 transmitter"
            )
        try:
            return [array for _name, array in s3.iter_recv(uri, max_bytes=self.max_weights_bytes)]
        except TransmitterError as err:
            raise AggregationClientError(
                f"pull of round {round_number} from {self.target}: {err}"
            ) from None

    def pull(
        self,
        round: int = 0,
        timeout: float | None = None,
        *,
        retry_unavailable: bool = True,
        into: Sequence[Array] | None = None,
    ) -> GlobalWeights:
        """Wait for the aggregate of ``round`` (0: the latest) and download it.

        Parameters
        ----------
        round
            The round to wait for; a later one is returned if the session moved on, and a
            completed session answers with its last aggregate and ``exit`` True.
        timeout
            Seconds to wait for the round, retries included; the client's ``timeout`` by
            default. Waiting for a round means waiting for the other trainers: give it room.
        retry_unavailable
            Retry UNAVAILABLE (a restart, a dropped connection) within the deadline (default).
            False: raise :class:`AggregatorUnavailableError` at once, for a caller that must
            re-join first: a restarted server forgot this client and the update it pushed,
            and a pull retried there would wait for a round that cannot close without it.
        into
            Arrays to download into, one per layer in order (typically the weights this
            trainer pushed, or the last pull's): a layer whose array here has its shape and
            dtype (C-contiguous, writable) is written into it and returned as that array,
            instead of into a new one. A trainer that pulls every round then reuses its
            buffers instead of paying for fresh memory each round. Any other layer comes as a
            new array. If the pull fails, those arrays may hold part of the download.

        Returns
        -------
        GlobalWeights
            Unpacks as ``(round, weights, exit)``.

        Raises
        ------
        PullTimeoutError
            The round was not aggregated before the deadline.
        SessionFailedError
            The session failed (a round ended short of its minimum participants).
        SessionNotFoundError
            The server does not hold the session (restarted): join again.
        AggregatorUnavailableError
            No server before the deadline (at once with ``retry_unavailable=False``).
        AggregationClientError
            By reference (S3): the aggregate's object is missing, over ``max_weights_bytes``
            or not a valid safetensors object (the message names the problem).
        """
        self._require_joined()
        request = pb.PullGlobalWeightsRequest(
            session_id=self.session_id,
            client_id=self.client_id,
            round=int(round),
            by_reference=self._s3 is not None,
        )

        def attempt(remaining: float) -> GlobalWeights:
            header: pb.GlobalWeightsHeader | None = None
            assembler = TensorAssembler(max_total_bytes=self.max_weights_bytes, into=into)
            try:
                bulk = None if request.by_reference else self._bulk
                if bulk is not None:
                    try:
                        header = bulk.pull(request, remaining, assembler)
                    except BulkUnreachableError as err:
                        self._bulk_unreachable(err)
                        bulk = None
                if bulk is None:
                    header = self._pull_stream(request, remaining, assembler)
            except TensorError as err:
                raise AggregationClientError(
                    f"pull of round {round} from {self.target}: undecodable weights: {err}"
                ) from err
            if header is None:
                raise AggregationClientError(
                    f"pull of round {round} from {self.target}: the stream had no header"
                )
            if header.weights_uri:
                if assembler.manifest is not None:
                    raise AggregationClientError(
                        f"pull of round {round} from {self.target}: the answer has both an "
                        "object reference and streamed weights"
                    )
                layers = self._read_reference(header.weights_uri, int(header.round))
            else:
                layers = (
                    [array for _name, array in assembler.result()] if assembler.manifest else []
                )
            return GlobalWeights(
                round=int(header.round),
                weights=layers,
                exit=bool(header.exit),
                total_samples=int(header.total_samples),
                participants=tuple(header.participants),
                dropped_clients=tuple(header.dropped_clients),
                metrics=dict(header.metrics),
            )

        return self._retrying(
            f"pull of round {round}",
            attempt,
            self.timeout if timeout is None else timeout,
            self._unavailable if retry_unavailable else (lambda _err: False),
            round_number=int(round),
        )

    def _pull_stream(
        self,
        request: pb.PullGlobalWeightsRequest,
        remaining: float,
        assembler: TensorAssembler,
    ) -> pb.GlobalWeightsHeader | None:
        """PullGlobalWeights into ``assembler``; the header (None: the stream had none)."""
        header: pb.GlobalWeightsHeader | None = None
        for message in self._pull_global_weights(request, timeout=remaining):
            if isinstance(message, RawChunk):
                # A view of the received message: copied once, into the array.
                assembler.feed_chunk(message)
            elif message.WhichOneof("part") == "header":
                header = message.header
            else:
                assembler.feed(message.frame)
        return header

    def status(self, timeout: float | None = None) -> SessionStatus:
        """The session's state, round, clients and last metrics.

        Raises
        ------
        SessionNotFoundError, AggregatorUnavailableError, AggregationClientError
        """
        self._require_joined()
        request = pb.GetSessionStatusRequest(session_id=self.session_id)
        response: pb.GetSessionStatusResponse = self._retrying(
            "status",
            lambda remaining: self._stub.GetSessionStatus(request, timeout=remaining),
            self.timeout if timeout is None else timeout,
            self._unavailable,
        )
        return SessionStatus(
            state=_state_name(response.state),
            current_round=int(response.current_round),
            clients=tuple(
                ClientStatus(
                    client_id=c.client_id,
                    sample_count=int(c.sample_count),
                    last_round=int(c.last_round),
                    selected=bool(c.selected),
                )
                for c in response.clients
            ),
            metrics=dict(response.metrics),
            config=SessionSettings.from_proto(response.config),
        )

    def leave(self, timeout: float | None = None) -> None:
        """Leave the session (idempotent); a no-op before :meth:`join`.

        Raises
        ------
        AggregatorUnavailableError, AggregationClientError
        """
        if not self.session_id or not self.client_id:
            return
        request = pb.LeaveSessionRequest(session_id=self.session_id, client_id=self.client_id)
        self._retrying(
            "leave",
            lambda remaining: self._stub.LeaveSession(request, timeout=remaining),
            self.timeout if timeout is None else timeout,
            self._unavailable,
        )

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the channel (and the bulk connection)."""
        if self._bulk is not None:
            self._bulk.close()
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
