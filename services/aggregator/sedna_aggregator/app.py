"""Wiring of the aggregation server: checkpoint store, metrics and the servicer."""

from __future__ import annotations

from sedna.api.aggregator.v1 import aggregation_service_pb2_grpc as pb_grpc
from sedna.runtime import ServiceServer
from sedna.runtime.memory import tune_malloc
from sedna_aggregator.core import Clock, LocalFileRoundStore, Runner
from sedna_aggregator.metrics import AggregatorMetrics
from sedna_aggregator.servicer import SERVICE_NAME, AggregationServicer
from sedna_aggregator.settings import AggregatorSettings

__all__ = ["setup"]


def setup(
    server: ServiceServer,
    settings: AggregatorSettings,
    *,
    clock: Clock | None = None,
    runner: Runner | None = None,
) -> AggregationServicer:
    """Register the aggregation service on ``server`` (not started) from ``settings``.

    Sessions get ``settings.session_config()``; checkpoints go to ``settings.checkpoint_dir``
    (none: no checkpoints); the Prometheus metrics go to the server's registry. The sessions'
    timers are stopped on shutdown.

    Returns
    -------
    AggregationServicer
        The registered servicer.
    """
    tune_malloc()  # large tensors from the heap, not one mmap per copy (sedna.runtime.memory)
    metrics = AggregatorMetrics(server.registry)
    store = (
        LocalFileRoundStore(settings.checkpoint_dir)
        if settings.checkpoint_dir is not None
        else None
    )
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
    )
    server.add_servicer(pb_grpc.add_AggregationServiceServicer_to_server, servicer, SERVICE_NAME)
    server.on_shutdown(servicer.aclose)
    return servicer
