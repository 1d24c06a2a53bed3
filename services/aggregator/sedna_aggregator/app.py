"""Wiring of the aggregation server: checkpoint store, weight objects, metrics, servicer."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from typing import Final

from threadpoolctl import threadpool_limits

from sedna.runtime import ServiceServer
from sedna.runtime.memory import limit_malloc_arenas, tune_malloc
from sedna_aggregator.bulk import BulkServer
from sedna_aggregator.core import Clock, LocalFileRoundStore, RoundStore, Runner
from sedna_aggregator.core.ports import WeightsObjects
from sedna_aggregator.exit_when_done import watch_sessions
from sedna_aggregator.metrics import AggregatorMetrics
from sedna_aggregator.servicer import SERVICE_NAME, AggregationServicer, add_aggregation_service
from sedna_aggregator.settings import AggregatorSettings

__all__ = [
    "BLAS_THREADS",
    "MALLOC_ARENAS",
    "MMAP_THRESHOLD",
    "bulk_ssl_context",
    "limit_blas_threads",
    "make_objects",
    "make_store",
    "server_options",
    "setup",
]

MALLOC_ARENAS: Final = 1
"""glibc malloc arenas of the aggregator (``MALLOC_ARENA_MAX`` overrides it). Chunk buffers
are allocated and freed by different threads; one arena keeps one reserve of freed memory
instead of one per thread: K=8, P=25M peak RSS 2.3x the model instead of 2.6-3.2x, same
round time (bench/README.md)."""
MMAP_THRESHOLD: Final = 8 << 20
"""glibc's mmap threshold in the aggregator (``SEDNA_MALLOC_MMAP_THRESHOLD`` overrides it).

Above the 4 MiB chunk messages, so each message's buffers are reused from the heap instead of
being mapped and zeroed afresh; below most layers, so a round's sums and assembled layers
are mapped and handed back to the kernel when freed, and the resident size follows the live
memory. Measured on the federated-learning bench (K=8, 100 MB model): peak RSS 2.6x the
model at 8 MiB, 3.2x at sedna.runtime.memory's 16 MiB default (and 2.94 s per round
against 3.29 s)."""

BLAS_THREADS: Final = 1
"""BLAS threads of the aggregator (``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS`` override it).
Its BLAS calls (the finiteness check's dot product, FedAvg's axpy) run on chunks, from
worker threads, beside the receiving threads and the trainers: a second BLAS thread spun on
the other core for ~60% more CPU and a round no shorter on two cores (measured K=8, 100 MB
model: 0.76 CPU-s vs 1.27 CPU-s for the adds of a round)."""

_log = logging.getLogger(__name__)


def limit_blas_threads() -> None:
    """Run BLAS on :data:`BLAS_THREADS` threads unless the environment says otherwise."""
    if any(os.environ.get(name) for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")):
        return
    # threadpoolctl limits the libraries loaded so far: SciPy's BLAS (FedAvg's axpy) too.
    import scipy.linalg.blas  # noqa: F401, PLC0415

    threadpool_limits(limits=BLAS_THREADS, user_api="blas")


def make_store(settings: AggregatorSettings) -> RoundStore | None:
    """The checkpoint store: Redis when ``redis_url`` is set, else ``checkpoint_dir``, else
    none."""
    if settings.redis_url is not None:
        from sedna_aggregator.adapters.redis_store import RedisRoundStore  # noqa: PLC0415

        password = settings.redis_password
        store = RedisRoundStore(
            settings.redis_url,
            password=None if password is None else password.get_secret_value(),
            key_prefix=settings.redis_key_prefix,
        )
        _log.info("checkpoints in Redis at %s", store.where)
        return store
    if settings.checkpoint_dir is not None:
        return LocalFileRoundStore(settings.checkpoint_dir)
    return None


def make_objects(settings: AggregatorSettings) -> WeightsObjects | None:
    """The S3 weight objects of ``agg_data_path`` (TRANSMITTER=s3), None when unset."""
    if settings.agg_data_path is None:
        return None
    from sedna_aggregator.adapters.s3_objects import S3WeightsObjects  # noqa: PLC0415

    objects = S3WeightsObjects(
        settings.agg_data_path,
        endpoint_url=settings.s3_endpoint_url,
        access_key=settings.s3_access_key_id.get_secret_value(),
        secret_key=settings.s3_secret_access_key.get_secret_value(),
    )
    _log.info("S3 transmitter: weight objects under %s", settings.agg_data_path)
    return objects


def server_options(server: ServiceServer, settings: AggregatorSettings) -> None:
    """Add the aggregator's gRPC server options to ``server`` (before it starts).

    ``grpc.http2.bdp_probe`` follows ``settings.http2_bdp_probe`` (see its description: the
    receive windows BDP probing grows are most of the peak RSS above the traced bound).
    """
    if server.started:
        raise RuntimeError("server options must be set before the server starts")
    # ServiceServer takes extra options only in its constructor, which service_main calls;
    # they are read at start, so appending here (setup runs before start) takes effect.
    # TODO(lead): replace with a public ServiceServer.add_options() when sedna.runtime has one.
    extra = server._extra_options
    server._extra_options = (
        *extra,
        ("grpc.http2.bdp_probe", int(settings.http2_bdp_probe)),
    )


def setup(
    server: ServiceServer,
    settings: AggregatorSettings,
    *,
    clock: Clock | None = None,
    runner: Runner | None = None,
) -> AggregationServicer:
    """Register the aggregation service on ``server`` (not started) from ``settings``.

    Sessions get ``settings.session_config()``; checkpoints go to Redis
    (``settings.redis_url``) or ``settings.checkpoint_dir`` (neither: no checkpoints); S3
    weight objects are served from ``settings.agg_data_path`` when set; the Prometheus
    metrics go to the server's registry. The sessions' timers are stopped on shutdown, then
    the store's connections closed.

    Returns
    -------
    AggregationServicer
        The registered servicer.
    """
    server_options(server, settings)
    tune_malloc(default=MMAP_THRESHOLD)
    limit_malloc_arenas(MALLOC_ARENAS)
    limit_blas_threads()
    metrics = AggregatorMetrics(server.registry)
    store = make_store(settings)
    objects = make_objects(settings)
    servicer = AggregationServicer(
        settings.session_config(),
        store=store,
        metrics=metrics,
        max_update_bytes=settings.max_update_bytes,
        max_update_tensors=settings.max_update_tensors,
        max_concurrent_updates=settings.max_concurrent_updates,
        send_chunk_bytes=settings.send_chunk_bytes,
        max_sessions=settings.max_sessions,
        clock=clock,
        runner=runner,
        on_assembly=metrics.updates_in_flight.inc,
        on_waiting=metrics.updates_waiting.inc,
        objects=objects,
        weights_dir=(
            False
            if settings.weights_in_memory
            else None
            if settings.weights_dir is None
            else str(settings.weights_dir)
        ),
    )
    server.add_servicer(add_aggregation_service, servicer, SERVICE_NAME)
    if settings.bulk_port is not None:
        _serve_bulk_port(server, servicer, settings, metrics)
    if settings.exit_when_done:
        _exit_when_done(server, servicer, settings.exit_grace_seconds)
    server.on_shutdown(servicer.aclose)
    close_store = getattr(store, "aclose", None)
    if close_store is not None:
        server.on_shutdown(close_store)
    return servicer


def bulk_ssl_context(settings: AggregatorSettings) -> ssl.SSLContext | None:
    """The bulk port's TLS context: the gRPC port's certificate and client CA; None without
    TLS."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    if settings.tls_client_ca_file is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=str(settings.tls_client_ca_file))
    return context


def _serve_bulk_port(
    server: ServiceServer,
    servicer: AggregationServicer,
    settings: AggregatorSettings,
    metrics: AggregatorMetrics,
) -> None:
    """Run a :class:`BulkServer` beside the gRPC server and advertise its port."""
    assert settings.bulk_port is not None
    explicit = "bulk_port" in settings.model_fields_set
    bulk = BulkServer(
        servicer,
        host=settings.host,
        port=settings.bulk_port,
        tokens=settings.resolved_auth_tokens(),
        ssl_context=bulk_ssl_context(settings),
        max_update_bytes=settings.max_update_bytes,
        max_update_tensors=settings.max_update_tensors,
        idle_timeout=settings.bulk_idle_timeout,
        on_request=lambda kind, outcome: metrics.bulk_requests.labels(kind, outcome).inc(),
        on_connection=metrics.bulk_connections.inc,
    )

    async def start() -> None:
        try:
            await bulk.start()
        except OSError as err:
            if explicit:
                raise OSError(f"cannot listen on bulk_port {settings.bulk_port}: {err}") from err
            _log.warning(
                "bulk port %d unavailable (%s): clients push and pull over gRPC only; set "
                "bulk_port to a free port (0: any) to enable it",
                settings.bulk_port,
                err,
            )
            return
        servicer.bulk_port = bulk.port

    server.on_startup(start)
    server.on_shutdown(bulk.aclose)


def _exit_when_done(server: ServiceServer, servicer: AggregationServicer, grace: float) -> None:
    """Run :func:`watch_sessions` while the server serves (``exit_when_done``)."""
    tasks: list[asyncio.Task[None]] = []

    def start() -> None:
        watch = watch_sessions(lambda: servicer.sessions, server.request_exit, grace=grace)
        tasks.append(asyncio.ensure_future(watch))

    async def stop() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    server.on_startup(start)
    server.on_shutdown(stop)
