"""Prometheus metrics: the standard gRPC server metrics and the ``/metrics`` HTTP endpoint.

Metric names, help texts, labels and counting rules follow go-grpc-prometheus, so the
usual gRPC dashboards and alerts work unchanged. One difference: ``grpc_code`` carries
the Python/gRPC status name (``OK``, ``INVALID_ARGUMENT``, ``UNAUTHENTICATED``), not
Go's CamelCase spelling (``InvalidArgument``).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import socket
import socketserver
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final, NoReturn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    make_wsgi_app,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from sedna.runtime._handlers import (
    Behaviour,
    RpcType,
    behaviour_of,
    rpc_type,
    split_method,
    with_behaviour,
)

__all__ = [
    "DEFAULT_BUCKETS",
    "GrpcServerMetrics",
    "MetricsEndpoint",
    "MetricsInterceptor",
    "new_registry",
]

_log = logging.getLogger(__name__)

DEFAULT_BUCKETS: Final[tuple[float, ...]] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""prometheus.DefBuckets, which go-grpc-prometheus uses for the handling-time histogram."""

_BASE_LABELS: Final = ("grpc_type", "grpc_service", "grpc_method")
_CODES_BY_VALUE: Final = {code.value[0]: code for code in grpc.StatusCode}


def new_registry(*, process_metrics: bool = True) -> CollectorRegistry:
    """A fresh registry, optionally with the process, platform and GC collectors.

    Parameters
    ----------
    process_metrics
        Add ``process_*`` (CPU, memory, fds), ``python_info`` and ``python_gc_*``, as the
        global default registry has them.

    Returns
    -------
    CollectorRegistry
        The registry; one per server so several servers can live in one process.
    """
    registry = CollectorRegistry(auto_describe=True)
    if process_metrics:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry


class GrpcServerMetrics:
    """The go-grpc-prometheus server metrics, registered on one registry.

    Parameters
    ----------
    registry
        Where to register the metrics.
    buckets
        Buckets of ``grpc_server_handling_seconds``.
    """

    def __init__(
        self, registry: CollectorRegistry, *, buckets: Sequence[float] = DEFAULT_BUCKETS
    ) -> None:
        self.started = Counter(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            _BASE_LABELS,
            registry=registry,
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*_BASE_LABELS, "grpc_code"),
            registry=registry,
        )
        self.handling_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been "
            "application-level handled by the server.",
            _BASE_LABELS,
            buckets=tuple(buckets),
            registry=registry,
        )
        self.msg_received = Counter(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            _BASE_LABELS,
            registry=registry,
        )
        self.msg_sent = Counter(
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            _BASE_LABELS,
            registry=registry,
        )


class _MethodMetrics:
    """The labelled series of one method, looked up once (``labels()`` takes a lock)."""

    __slots__ = ("_handled", "_labels", "_metrics", "handling", "received", "sent", "started")

    def __init__(self, metrics: GrpcServerMetrics, labels: tuple[RpcType, str, str]) -> None:
        self._metrics = metrics
        self._labels = labels
        self.started = metrics.started.labels(*labels)
        self.received = metrics.msg_received.labels(*labels)
        self.sent = metrics.msg_sent.labels(*labels)
        self.handling = metrics.handling_seconds.labels(*labels)
        self._handled: dict[grpc.StatusCode, Any] = {}

    def handled(self, code: grpc.StatusCode) -> Any:
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = self._metrics.handled.labels(*self._labels, code.name)
        return child


_FLUSH_EVERY: Final = 64
"""Messages of a stream counted locally before they are added to the message counters."""


class _Observation:
    """One RPC as the metrics see it: started now, counts messages, finished once."""

    __slots__ = ("_finished", "_received", "_sent", "_series", "_start")

    def __init__(self, series: _MethodMetrics) -> None:
        self._series = series
        self._finished = False
        # Messages counted but not yet added to the counters: a Counter.inc takes a lock, and a
        # stream of thousands of messages paid it per message. Flushed every _FLUSH_EVERY
        # messages (so long streams show progress) and when the call finishes.
        self._received = 0
        self._sent = 0
        series.started.inc()
        self._start = time.perf_counter()

    def received(self) -> None:
        self._received += 1
        if self._received >= _FLUSH_EVERY or self._finished:
            self._flush()

    def sent(self) -> None:
        self._sent += 1
        if self._sent >= _FLUSH_EVERY or self._finished:
            self._flush()

    def _flush(self) -> None:
        if self._received:
            self._series.received.inc(self._received)
            self._received = 0
        if self._sent:
            self._series.sent.inc(self._sent)
            self._sent = 0

    def finish(self, code: grpc.StatusCode) -> None:
        if self._finished:
            return
        self._finished = True
        self._flush()
        elapsed = time.perf_counter() - self._start
        self._series.handled(code).inc()
        self._series.handling.observe(elapsed)


def _as_status(value: object) -> grpc.StatusCode | None:
    if isinstance(value, grpc.StatusCode):
        return value
    if isinstance(value, int):
        return _CODES_BY_VALUE.get(value)
    return None


def _final_code(
    context: grpc.aio.ServicerContext[Any, Any], exc: BaseException | None
) -> grpc.StatusCode:
    """The status the client will see, from how the handler ended and what it set."""
    set_code = _as_status(context.code())
    if exc is None:
        return set_code or grpc.StatusCode.OK
    if isinstance(exc, grpc.aio.AbortError):
        # context.abort() records its code on the context before raising.
        return set_code or grpc.StatusCode.UNKNOWN
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    # grpc.aio answers any other exception with UNKNOWN, whatever code was set before.
    return grpc.StatusCode.UNKNOWN


class _CountingContext(grpc.aio.ServicerContext[Any, Any]):
    """Delegates to the real context; counts messages moved with read() and write()."""

    def __init__(
        self, inner: grpc.aio.ServicerContext[Any, Any], observation: _Observation
    ) -> None:
        self._inner = inner
        self._observation = observation

    async def read(self) -> Any:
        message = await self._inner.read()
        if message is not grpc.aio.EOF:
            self._observation.received()
        return message

    async def write(self, message: Any) -> None:
        await self._inner.write(message)
        self._observation.sent()

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Any = (),
    ) -> NoReturn:
        await self._inner.abort(code, details, trailing_metadata)

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        await self._inner.abort_with_status(status)

    async def send_initial_metadata(self, initial_metadata: Any) -> None:
        await self._inner.send_initial_metadata(initial_metadata)

    def add_done_callback(self, callback: Any) -> None:
        self._inner.add_done_callback(callback)

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self._inner.set_trailing_metadata(trailing_metadata)

    def invocation_metadata(self) -> grpc.aio.Metadata | None:
        return self._inner.invocation_metadata()

    def set_code(self, code: grpc.StatusCode) -> None:
        self._inner.set_code(code)

    def set_details(self, details: str) -> None:
        self._inner.set_details(details)

    def set_compression(self, compression: grpc.Compression) -> None:
        self._inner.set_compression(compression)

    def disable_next_message_compression(self) -> None:
        self._inner.disable_next_message_compression()

    def peer(self) -> str:
        return self._inner.peer()

    def peer_identities(self) -> Iterable[bytes] | None:
        return self._inner.peer_identities()

    def peer_identity_key(self) -> str | None:
        return self._inner.peer_identity_key()

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        return self._inner.auth_context()

    def time_remaining(self) -> float:
        return self._inner.time_remaining()

    def trailing_metadata(self) -> grpc.aio.Metadata:
        return self._inner.trailing_metadata()

    def code(self) -> grpc.StatusCode:
        return self._inner.code()

    def details(self) -> str:
        return self._inner.details()

    def cancelled(self) -> bool:
        return self._inner.cancelled()

    def done(self) -> bool:
        return self._inner.done()

    def __getattr__(self, name: str) -> Any:
        # Anything a newer grpc adds to the context keeps working.
        return getattr(self._inner, name)


async def _count_requests(requests: Any, observation: _Observation) -> AsyncIterator[Any]:
    async for message in requests:
        observation.received()
        yield message


async def _call_unary(behaviour: Behaviour, request: Any, context: Any) -> Any:
    if inspect.iscoroutinefunction(behaviour):
        return await behaviour(request, context)
    # grpc.aio runs plain functions in the default executor; keep that behaviour.
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(None, functools.partial(behaviour, request, context))
    if inspect.isawaitable(result):
        return await result
    return result


async def _iterate_responses(
    behaviour: Behaviour, request: Any, context: Any
) -> AsyncIterator[Any]:
    result = behaviour(request, context)
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    elif inspect.isawaitable(result):
        # A coroutine handler that streams with context.write() (counted by the context).
        await result
    elif result is not None:
        for item in result:
            yield item


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Record go-grpc-prometheus server metrics for every RPC of all four kinds.

    Install it outermost so that it also sees calls rejected by inner interceptors
    (e.g. ``UNAUTHENTICATED`` from token auth).

    Parameters
    ----------
    registry
        Registry to register :class:`GrpcServerMetrics` on.
    buckets
        Buckets of the handling-time histogram.
    """

    def __init__(
        self, registry: CollectorRegistry, *, buckets: Sequence[float] = DEFAULT_BUCKETS
    ) -> None:
        self.metrics = GrpcServerMetrics(registry, buckets=buckets)
        # method -> (handler, wrapped handler): a handler that comes back is wrapped once
        self._wrapped: dict[str, tuple[Any, grpc.RpcMethodHandler[Any, Any]]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap the method handler so its calls are counted and timed.

        Parameters
        ----------
        continuation
            Looks up the handler (through the inner interceptors).
        handler_call_details
            Method name and invocation metadata.

        Returns
        -------
        grpc.RpcMethodHandler | None
            The wrapped handler; None (unknown method) is passed through.
        """
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        full_method = handler_call_details.method
        key = full_method.decode() if isinstance(full_method, bytes) else full_method
        cached = self._wrapped.get(key)
        if cached is not None and cached[0] is handler:
            return cached[1]
        service, method = split_method(full_method)
        labels: tuple[RpcType, str, str] = (rpc_type(handler), service, method)
        series = _MethodMetrics(self.metrics, labels)
        if handler.response_streaming:
            wrapped = with_behaviour(handler, self._streaming(handler, series))
        else:
            wrapped = with_behaviour(handler, self._unary(handler, series))
        if len(self._wrapped) < 4096:  # bounded: only registered methods get here
            self._wrapped[key] = (handler, wrapped)
        return wrapped

    def _unary(self, handler: grpc.RpcMethodHandler[Any, Any], series: _MethodMetrics) -> Behaviour:
        behaviour = behaviour_of(handler)
        request_streaming = bool(handler.request_streaming)
        coroutine = inspect.iscoroutinefunction(behaviour)

        async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            observation = _Observation(series)
            inner_context: grpc.aio.ServicerContext[Any, Any] = context
            if request_streaming:
                request = _count_requests(request, observation)
                inner_context = _CountingContext(context, observation)
            else:
                observation.received()
            try:
                if coroutine:
                    response = await behaviour(request, inner_context)
                else:
                    response = await _call_unary(behaviour, request, inner_context)
            except BaseException as exc:
                observation.finish(_final_code(context, exc))
                raise
            code = _final_code(context, None)
            if code is grpc.StatusCode.OK:
                observation.sent()
            observation.finish(code)
            return response

        return observed

    def _streaming(
        self, handler: grpc.RpcMethodHandler[Any, Any], series: _MethodMetrics
    ) -> Behaviour:
        behaviour = behaviour_of(handler)
        request_streaming = bool(handler.request_streaming)

        async def observed(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            observation = _Observation(series)
            if request_streaming:
                request = _count_requests(request, observation)
            else:
                observation.received()
            inner_context = _CountingContext(context, observation)
            try:
                async for item in _iterate_responses(behaviour, request, inner_context):
                    yield item
                    observation.sent()
            except BaseException as exc:
                observation.finish(_final_code(context, exc))
                raise
            observation.finish(_final_code(context, None))

        return observed


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        # One access-log line per scrape (every few seconds) would drown the service's logs.
        return


class _MetricsHTTPServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind() resolves the host with getfqdn(), a reverse-DNS lookup
        # that can stall for seconds where DNS is slow or absent; it is only cosmetic.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()


class _MetricsHTTPServer6(_MetricsHTTPServer):
    address_family = socket.AF_INET6


class MetricsEndpoint:
    """An HTTP server exposing one registry at ``/metrics`` (Prometheus text format).

    Runs in a daemon thread so scrapes never wait on the service's event loop.

    Parameters
    ----------
    registry
        The registry to expose.
    host
        Bind address; an IPv6 literal binds an IPv6 socket.
    port
        Port; 0 picks a free one (see :attr:`port` after :meth:`start`).
    """

    def __init__(self, registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 0) -> None:
        self._registry = registry
        self._host = host.strip("[]")
        self._requested_port = port
        self._server: _MetricsHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Bind and start serving.

        Returns
        -------
        int
            The bound port.

        Raises
        ------
        OSError
            The address cannot be bound (in use, not local, permission).
        """
        if self._server is not None:
            raise RuntimeError("metrics endpoint already started")
        metrics_app = make_wsgi_app(self._registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO", "") in ("/metrics", "/metrics/"):
                result: Iterable[bytes] = metrics_app(environ, start_response)
                return result
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: metrics are served at /metrics\n"]

        server_class = _MetricsHTTPServer6 if ":" in self._host else _MetricsHTTPServer
        server = make_server(
            self._host,
            self._requested_port,
            app,
            server_class=server_class,
            handler_class=_QuietHandler,
        )
        self._server = server
        self._thread = threading.Thread(
            # A short poll interval keeps stop() fast; the loop is idle otherwise.
            target=functools.partial(server.serve_forever, poll_interval=0.05),
            name=f"sedna-metrics-{self.port}",
            daemon=True,
        )
        self._thread.start()
        _log.debug("metrics endpoint started", extra={"metrics_url": self.url})
        return self.port

    @property
    def port(self) -> int:
        """The bound port (only after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("metrics endpoint not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}/metrics"

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and close the socket; idempotent.

        Parameters
        ----------
        timeout
            How long to wait for the server thread to end.
        """
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout)
        self._server = None
        self._thread = None
