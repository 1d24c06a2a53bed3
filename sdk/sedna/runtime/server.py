"""ServiceServer: the asyncio gRPC server every Sedna service runs.

It wires, once and the same way everywhere: explicit channel options (message sizes,
keepalive, no SO_REUSEPORT), interceptors (metrics outermost, then token auth, then the
caller's), ``grpc.health.v1.Health``, reflection, TLS/mTLS, a ``/metrics`` endpoint, and a
graceful drain on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from sedna.runtime.auth import DEFAULT_EXEMPT_SERVICES, TokenAuthInterceptor
from sedna.runtime.config import ServiceSettings
from sedna.runtime.logging import configure_logging
from sedna.runtime.metrics import MetricsEndpoint, MetricsInterceptor, new_registry
from sedna.runtime.tls import TLSConfigError, server_credentials

__all__ = [
    "HEALTH_SERVICE",
    "REFLECTION_SERVICE",
    "ServerStartError",
    "ServiceServer",
    "run_service",
]

_log = logging.getLogger(__name__)

HEALTH_SERVICE: Final[str] = health.SERVICE_NAME
REFLECTION_SERVICE: Final[str] = reflection.SERVICE_NAME

_SERVING: Final = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING: Final = health_pb2.HealthCheckResponse.NOT_SERVING

_T = TypeVar("_T")

SetupFn = Callable[["ServiceServer"], Awaitable[None] | None]
ShutdownCallback = Callable[[], Awaitable[None] | None]


class ServerStartError(RuntimeError):
    """The server could not start: port in use, bad address, or TLS files unusable."""


def _format_address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


class _WatchContext:
    """Forwards to the real context; remembers the last status written to the client."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.last_status: Any = None
        self.wakeup = asyncio.Event()

    async def write(self, message: Any) -> None:
        await self._inner.write(message)
        self.last_status = message.status
        self.wakeup.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _DrainingHealthServicer(health.aio.HealthServicer):  # type: ignore[misc]
    """Health servicer whose Watch streams end once the server starts draining.

    The stock servicer keeps Watch streams open forever, and an open stream holds the
    graceful drain until its deadline. Here a watcher receives NOT_SERVING and then its
    stream completes with OK, so a drain waits only for real work.
    """

    def __init__(self) -> None:
        super().__init__()
        self._shut_down = asyncio.Event()

    async def enter_graceful_shutdown(self) -> None:
        await super().enter_graceful_shutdown()
        self._shut_down.set()

    async def Watch(self, request: Any, context: Any) -> None:  # noqa: N802 - gRPC method name
        watch_context = _WatchContext(context)
        watch = asyncio.ensure_future(super().Watch(request, watch_context))
        try:
            while not watch.done():
                if self._shut_down.is_set() and watch_context.last_status != _SERVING:
                    break
                waiters = [asyncio.ensure_future(watch_context.wakeup.wait())]
                if not self._shut_down.is_set():
                    waiters.append(asyncio.ensure_future(self._shut_down.wait()))
                try:
                    await asyncio.wait([watch, *waiters], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()
                watch_context.wakeup.clear()
        finally:
            if not watch.done():
                watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch


class ServiceServer:
    """An asyncio gRPC server with health, reflection, metrics, TLS, tokens and drain.

    Parameters
    ----------
    settings
        Bind addresses, TLS files, tokens, limits, keepalive, drain deadline.
    interceptors
        Extra server interceptors, run inside the metrics and auth interceptors.
    registry
        Prometheus registry for the server's metrics and the feature code's own
        (``Counter(..., registry=server.registry)``); a fresh one by default. One
        registry per server: the gRPC metrics cannot be registered twice on it.
    options
        Extra raw server channel arguments (must not repeat those set from settings).

    Examples
    --------
    >>> server = ServiceServer(settings)                           # doctest: +SKIP
    >>> server.add_servicer(add_FooServicer_to_server, Foo(), "sedna.api.foo.v1.Foo")
    >>> await server.run_until_signal()
    """

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        registry: CollectorRegistry | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else new_registry()
        self.health = _DrainingHealthServicer()
        self._metrics_interceptor = MetricsInterceptor(self.registry)
        self._extra_interceptors = tuple(interceptors)
        self._extra_options = tuple(options)
        self._registrations: list[Callable[[grpc.aio.Server], None]] = []
        self._service_names: list[str] = []
        self._auth_exempt: set[str] = set(DEFAULT_EXEMPT_SERVICES)
        # Desired health per service; "" is the whole server. The server reports SERVING
        # overall only when every entry is True.
        self._serving: dict[str, bool] = {"": True}
        self._shutdown_callbacks: list[ShutdownCallback] = []
        self._startup_callbacks: list[ShutdownCallback] = []
        self._drain_callbacks: list[ShutdownCallback] = []
        self._server: grpc.aio.Server | None = None
        self._metrics_endpoint: MetricsEndpoint | None = None
        self._port: int | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._stop_grace: float | None = None
        self._force_task: asyncio.Task[None] | None = None
        self._exit_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self.exit_code = 0
        """What :func:`run_service` returns once the server stopped (see :meth:`request_exit`)."""

    # -- registration --------------------------------------------------------------------

    def _check_not_started(self) -> None:
        if self._server is not None:
            raise RuntimeError("services must be added before start()")

    def _add_name(self, service_full_name: str) -> None:
        if not service_full_name or "/" in service_full_name:
            raise ValueError(f"not a fully qualified service name: {service_full_name!r}")
        if service_full_name in self._serving:
            raise ValueError(f"service {service_full_name!r} is already registered")
        self._service_names.append(service_full_name)
        self._serving[service_full_name] = True

    def add_servicer(
        self,
        add_fn: Callable[[_T, grpc.aio.Server], None],
        servicer: _T,
        service_full_name: str,
    ) -> None:
        """Register a generated servicer, e.g. ``add_FooServicer_to_server``.

        Parameters
        ----------
        add_fn
            The generated ``add_<Service>Servicer_to_server`` function.
        servicer
            The servicer instance (async methods).
        service_full_name
            ``package.Service``: reported by health and reflection.
        """
        self._check_not_started()
        self._add_name(service_full_name)
        self._registrations.append(lambda server: add_fn(servicer, server))

    def add_generic_handler(self, handler: grpc.GenericRpcHandler, service_full_name: str) -> None:
        """Register a generic handler (e.g. ``grpc.method_handlers_generic_handler``).

        Parameters
        ----------
        handler
            The handler.
        service_full_name
            ``package.Service`` it serves.
        """
        self._check_not_started()
        self._add_name(service_full_name)
        self._registrations.append(lambda server: server.add_generic_rpc_handlers([handler]))

    def exempt_from_token_auth(self, service_full_name: str) -> None:
        """Let ``service_full_name`` be called without one of the server's bearer tokens.

        For services that authenticate callers themselves (the GM's node hub checks each
        node's own token), so the server-wide tokens need not be shared with every node.

        Parameters
        ----------
        service_full_name
            ``package.Service``.
        """
        self._check_not_started()
        self._auth_exempt.add(service_full_name)

    def on_startup(self, callback: ShutdownCallback) -> None:
        """Run ``callback`` (sync or async) once the ports are bound, before serving traffic.

        For work that needs the bound address (e.g. announcing it to a peer). A failing
        callback stops the server and :meth:`start` raises :class:`ServerStartError`.

        Parameters
        ----------
        callback
            A no-argument function or coroutine function.
        """
        self._check_not_started()
        self._startup_callbacks.append(callback)

    def on_drain(self, callback: ShutdownCallback) -> None:
        """Run ``callback`` (sync or async) when the drain begins, once new calls are refused.

        For ending long-lived streams the server itself would otherwise wait ``grace``
        seconds for (e.g. the GM closing its node streams so nodes reconnect elsewhere).

        Parameters
        ----------
        callback
            A no-argument function or coroutine function.
        """
        self._drain_callbacks.append(callback)

    def on_shutdown(self, callback: ShutdownCallback) -> None:
        """Run ``callback`` (sync or async) after the drain, e.g. to close a store.

        Callbacks run in registration order; a failing one is logged and the rest still run.

        Parameters
        ----------
        callback
            A no-argument function or coroutine function.
        """
        self._shutdown_callbacks.append(callback)

    @property
    def service_names(self) -> tuple[str, ...]:
        """The registered application services (without health and reflection)."""
        return tuple(self._service_names)

    # -- lifecycle -----------------------------------------------------------------------

    def _server_options(self) -> list[tuple[str, Any]]:
        s = self.settings
        return [
            ("grpc.max_receive_message_length", s.max_receive_message_bytes),
            ("grpc.max_send_message_length", s.max_send_message_bytes),
            ("grpc.keepalive_time_ms", int(s.keepalive_time_seconds * 1000)),
            ("grpc.keepalive_timeout_ms", int(s.keepalive_timeout_seconds * 1000)),
            # Accept client keepalive pings on idle connections (edge links behind NAT)
            # as often as keepalive_min_ping_interval_seconds.
            ("grpc.keepalive_permit_without_calls", 1),
            (
                "grpc.http2.min_recv_ping_interval_without_data_ms",
                int(s.keepalive_min_ping_interval_seconds * 1000),
            ),
            ("grpc.http2.max_pings_without_data", 0),
            # Without this a second server on the same port would silently share it.
            ("grpc.so_reuseport", 0),
            *self._extra_options,
        ]

    def _interceptors(self, tokens: Sequence[SecretStr]) -> list[grpc.aio.ServerInterceptor]:
        interceptors: list[grpc.aio.ServerInterceptor] = [self._metrics_interceptor]
        if tokens:
            interceptors.append(TokenAuthInterceptor(tokens, exempt_services=self._auth_exempt))
        interceptors.extend(self._extra_interceptors)
        return interceptors

    def _bind(self, server: grpc.aio.Server) -> int:
        s = self.settings
        address = _format_address(s.host, s.port)
        try:
            if s.tls_cert_file is not None and s.tls_key_file is not None:
                credentials = server_credentials(
                    s.tls_cert_file, s.tls_key_file, s.tls_client_ca_file
                )
                port = server.add_secure_port(address, credentials)
            else:
                port = server.add_insecure_port(address)
        except TLSConfigError as exc:
            raise ServerStartError(f"TLS configuration: {exc}") from exc
        except RuntimeError as exc:
            raise ServerStartError(f"cannot bind gRPC server to {address}: {exc}") from exc
        if port == 0:
            raise ServerStartError(f"cannot bind gRPC server to {address}")
        return port

    async def start(self) -> None:
        """Bind, start serving and report SERVING; returns once the port is bound.

        Raises
        ------
        ServerStartError
            The gRPC or metrics port cannot be bound, or the TLS files are unusable.
        RuntimeError
            Called twice.
        """
        if self._server is not None:
            raise RuntimeError("server already started")
        s = self.settings
        tokens = s.resolved_auth_tokens()
        server = grpc.aio.server(
            interceptors=self._interceptors(tokens),
            options=self._server_options(),
            maximum_concurrent_rpcs=s.max_concurrent_rpcs,
        )
        for register in self._registrations:
            register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [*self._service_names, HEALTH_SERVICE, REFLECTION_SERVICE], server
        )
        try:
            port = self._bind(server)
        except ServerStartError:
            await server.stop(None)
            raise
        endpoint: MetricsEndpoint | None = None
        if s.metrics_port is not None:
            endpoint = MetricsEndpoint(self.registry, s.metrics_host, s.metrics_port)
            try:
                await asyncio.to_thread(endpoint.start)
            except OSError as exc:
                await server.stop(None)
                address = _format_address(s.metrics_host, s.metrics_port)
                raise ServerStartError(f"cannot bind metrics endpoint to {address}: {exc}") from exc
        try:
            await server.start()
        except BaseException:
            if endpoint is not None:
                await asyncio.to_thread(endpoint.stop)
            raise
        self._server, self._port, self._metrics_endpoint = server, port, endpoint
        for callback in self._startup_callbacks:
            try:
                result = callback()
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                await self.stop(0)
                raise ServerStartError(f"startup failed: {type(exc).__name__}: {exc}") from exc
        await self._publish_health()
        _log.info(
            "gRPC server started",
            extra={
                "address": _format_address(s.host, port),
                "port": port,
                "metrics_port": self.metrics_port,
                "tls": s.tls_enabled,
                "mtls": s.mtls_enabled,
                "bearer_auth": bool(tokens),
                "services": list(self._service_names),
            },
        )

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has completed."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound gRPC port (the real one when settings asked for port 0)."""
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` to dial (IPv6 hosts in brackets)."""
        return _format_address(self.settings.host, self.port)

    @property
    def metrics_port(self) -> int | None:
        """The bound ``/metrics`` port, or None when the endpoint is disabled."""
        if self._metrics_endpoint is None:
            if self._server is None and self.settings.metrics_port is not None:
                raise RuntimeError("server not started")
            return None
        return self._metrics_endpoint.port

    async def _publish_health(self) -> None:
        for service in self._service_names:
            await self.health.set(service, _SERVING if self._serving[service] else _NOT_SERVING)
        overall = all(self._serving.values())
        await self.health.set("", _SERVING if overall else _NOT_SERVING)

    async def set_serving(self, service: str, serving: bool) -> None:
        """Report a service (or ``""``, the whole server) as SERVING or NOT_SERVING.

        The overall status (``""``, what Kubernetes probes check) is SERVING only while
        every registered service and the server itself are. Before :meth:`start` this
        sets the initial status; after :meth:`stop` began it is ignored.

        Parameters
        ----------
        service
            A registered service name, or ``""``.
        serving
            The new status.

        Raises
        ------
        KeyError
            Unknown service.
        """
        if service not in self._serving:
            raise KeyError(f"unknown service {service!r}; registered: {self._service_names}")
        self._serving[service] = serving
        if self._server is not None:
            await self._publish_health()

    async def stop(self, grace: float | None = None) -> None:
        """Drain and stop: NOT_SERVING, refuse new calls, let in-flight calls finish.

        Order: health reports NOT_SERVING (Watch streams get it and end); the server
        stops accepting calls; in-flight calls get ``grace`` seconds, then are cancelled;
        shutdown callbacks run; the metrics endpoint stops. Idempotent: a second call
        waits for the first, and a shorter ``grace`` cuts the drain short.

        Parameters
        ----------
        grace
            Drain deadline in seconds; ``settings.drain_seconds`` when None.
        """
        grace = self.settings.drain_seconds if grace is None else grace
        server = self._server
        if server is None:
            return
        if self._stop_task is None:
            self._stop_grace = grace
            self._stop_task = asyncio.ensure_future(self._drain(server, grace))
        elif self._stop_grace is not None and grace < self._stop_grace:
            # A concurrent grpc stop() with a shorter grace cancels in-flight calls sooner.
            self._stop_grace = grace
            await server.stop(grace)
        await asyncio.shield(self._stop_task)

    def request_exit(self, code: int = 0) -> None:
        """Drain and stop from inside the service (its work is done), as a signal would;
        :func:`run_service` then returns ``code`` as the process's exit code.

        Must be called on the server's event loop. Idempotent: the first code stays.
        """
        if self._exit_task is not None:
            return
        self.exit_code = code
        _log.info("the service asked to exit", extra={"exit_code": code})
        self._exit_task = asyncio.ensure_future(self.stop())

    async def _drain(self, server: grpc.aio.Server, grace: float) -> None:
        began = time.monotonic()
        _log.info("draining", extra={"grace_seconds": grace})
        await self.health.enter_graceful_shutdown()
        # grpc refuses new calls as soon as stop() begins; the drain callbacks then end the
        # long-lived streams so the wait below does not last the whole grace period.
        stopping = asyncio.ensure_future(server.stop(grace))
        await asyncio.sleep(0)
        await _run_callbacks(self._drain_callbacks, "drain")
        await stopping
        await _run_callbacks(self._shutdown_callbacks, "shutdown")
        if self._metrics_endpoint is not None:
            await asyncio.to_thread(self._metrics_endpoint.stop)
        self._stopped.set()
        _log.info(
            "gRPC server stopped", extra={"drain_seconds": round(time.monotonic() - began, 3)}
        )

    async def wait_for_termination(self) -> None:
        """Wait until :meth:`stop` has finished."""
        await self._stopped.wait()

    async def serve_forever(self) -> None:
        """Start if needed and serve until someone calls :meth:`stop`."""
        if self._server is None:
            await self.start()
        await self.wait_for_termination()

    async def run_until_signal(
        self, signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        """Start if needed, serve until a signal, then drain within ``drain_seconds``.

        A second signal during the drain cancels the remaining in-flight calls at once.
        Must run in the main thread (signal handlers). Returns after the drain.

        Parameters
        ----------
        signals
            Signals that trigger the drain.
        """
        if self._server is None:
            await self.start()
        loop = asyncio.get_running_loop()
        requested = asyncio.Event()
        installed: list[signal.Signals] = []

        def on_signal(sig: signal.Signals) -> None:
            if not requested.is_set():
                _log.info("received %s, draining", sig.name, extra={"signal": sig.name})
                requested.set()
            else:
                _log.warning(
                    "received %s again, cancelling in-flight calls",
                    sig.name,
                    extra={"signal": sig.name},
                )
                # Keep a reference so the task is not garbage-collected mid-flight.
                self._force_task = asyncio.ensure_future(self.stop(0))

        for sig in signals:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        try:
            waiters = [
                asyncio.ensure_future(requested.wait()),
                asyncio.ensure_future(self._stopped.wait()),
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            await self.stop()
        except asyncio.CancelledError:
            await self.stop(0)
            raise
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    async def __aenter__(self) -> Self:
        """Start the server."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server with the configured drain deadline."""
        await self.stop()


async def _run_callbacks(callbacks: Sequence[ShutdownCallback], stage: str) -> None:
    """Run each callback in order; a failing one is logged and the rest still run."""
    for callback in callbacks:
        try:
            result = callback()
            if inspect.isawaitable(result):
                await result
        except Exception:
            _log.exception(f"{stage} callback failed", extra={"callback": repr(callback)})


def run_service(settings: ServiceSettings, setup_fn: SetupFn) -> int:
    """Run a service until SIGTERM/SIGINT; the body of a console script's ``main()``.

    Configures logging from the settings, builds a :class:`ServiceServer`, lets
    ``setup_fn`` add servicers (and open stores, register shutdown callbacks), then
    serves and drains on a signal.

    Parameters
    ----------
    settings
        The loaded settings (see :func:`sedna.runtime.load_settings`).
    setup_fn
        ``setup_fn(server)``, sync or async, called before the server starts.

    Returns
    -------
    int
        Process exit code: 0 after a clean drain (or the code the service passed to
        :meth:`ServiceServer.request_exit`), 1 when the server could not start.
    """
    configure_logging(settings.log_level, settings.log_format)

    async def main() -> int:
        server = ServiceServer(settings)
        result = setup_fn(server)
        if inspect.isawaitable(result):
            await result
        await server.run_until_signal()
        return server.exit_code

    try:
        return asyncio.run(main())
    except ServerStartError as exc:
        _log.error("cannot start: %s", exc)
        return 1
