"""Per-model Prometheus metrics of the inference server."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["InferenceMetrics"]

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class InferenceMetrics:
    """The server's inference metrics, labelled by model.

    Parameters
    ----------
    registry
        Where to register them (the server's registry); one instance per registry.

    Attributes
    ----------
    requests
        ``sedna_inference_requests_total{model,status}``: ModelInfer calls by outcome
        (``ok``, ``invalid_argument``, ``not_found``, ``unavailable``, ``internal``).
    batch_size
        ``sedna_inference_batch_size{model}``: requests per backend call.
    queue_seconds
        ``sedna_inference_queue_seconds{model}``: time a request waited for its batch to start.
    compute_seconds
        ``sedna_inference_compute_seconds{model}``: time of one backend call (a whole batch).
    reloads
        ``sedna_inference_model_reloads_total{model,result}``: hot reloads by outcome
        (``success``: the new version serves; ``error``: the old one keeps serving).
    """

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.requests = Counter(
            "sedna_inference_requests",
            "ModelInfer requests by model and outcome.",
            ["model", "status"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "sedna_inference_batch_size",
            "Requests per backend call (dynamic batching).",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_seconds = Histogram(
            "sedna_inference_queue_seconds",
            "Seconds a request waited in the batch queue.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.compute_seconds = Histogram(
            "sedna_inference_compute_seconds",
            "Seconds of one backend call (one batch).",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.reloads = Counter(
            "sedna_inference_model_reloads",
            "Hot reloads of a model by result (success, error).",
            ["model", "result"],
            registry=registry,
        )
