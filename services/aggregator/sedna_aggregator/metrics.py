"""Prometheus metrics of the aggregation server: the core's ``SessionMetrics`` port."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sedna_aggregator.core import RoundRecord, SessionState

__all__ = ["ROUND_DURATION_BUCKETS", "AggregatorMetrics"]

ROUND_DURATION_BUCKETS: Final = (
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
)


class AggregatorMetrics:
    """:class:`~sedna_aggregator.core.SessionMetrics` on a Prometheus registry.

    Labelled by ``session`` (bounded by the server's ``max_sessions``).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.round_duration = Histogram(
            "sedna_aggregator_round_duration_seconds",
            "Time from a round opening to its aggregate.",
            ["session"],
            buckets=ROUND_DURATION_BUCKETS,
            registry=registry,
        )
        self.rounds = Counter(
            "sedna_aggregator_rounds", "Rounds aggregated.", ["session"], registry=registry
        )
        self.participants = Gauge(
            "sedna_aggregator_round_participants",
            "Clients aggregated in the last round.",
            ["session"],
            registry=registry,
        )
        self.dropped = Counter(
            "sedna_aggregator_dropped_clients",
            "Selected clients dropped from a round (no update before it closed).",
            ["session"],
            registry=registry,
        )
        self.updates = Counter(
            "sedna_aggregator_updates",
            "Updates received, by outcome (accepted, or the rejection reason).",
            ["session", "outcome"],
            registry=registry,
        )
        self.bytes_in = Counter(
            "sedna_aggregator_bytes_received",
            "Tensor bytes of the updates received (accepted or not).",
            ["session"],
            registry=registry,
        )
        self.bytes_out = Counter(
            "sedna_aggregator_bytes_sent",
            "Tensor bytes of the global weights sent to clients.",
            ["session"],
            registry=registry,
        )
        self.state = Gauge(
            "sedna_aggregator_session_state",
            "1 for the session's current state, 0 for the others.",
            ["session", "state"],
            registry=registry,
        )
        self.checkpoint_failures = Counter(
            "sedna_aggregator_checkpoint_failures",
            "Checkpoints that could not be saved.",
            ["session"],
            registry=registry,
        )
        self.updates_in_flight = Gauge(
            "sedna_aggregator_updates_in_flight",
            "Updates being received and assembled now.",
            registry=registry,
        )
        self.updates_waiting = Gauge(
            "sedna_aggregator_updates_waiting",
            "PushUpdate calls waiting for an assembly slot (max_concurrent_updates).",
            registry=registry,
        )
        self.bulk_requests = Counter(
            "sedna_aggregator_bulk_requests",
            "Requests on the bulk port, by kind (push, pull, other) and outcome (ok, refused, "
            "broken, unauthenticated, invalid).",
            ["kind", "outcome"],
            registry=registry,
        )
        self.bulk_connections = Gauge(
            "sedna_aggregator_bulk_connections",
            "Connections open on the bulk port.",
            registry=registry,
        )

    def update_received(
        self, session_id: str, nbytes: int, *, accepted: bool, reason: str = ""
    ) -> None:
        outcome = "accepted" if accepted else (reason or "rejected")
        self.updates.labels(session_id, outcome).inc()
        if nbytes > 0:
            self.bytes_in.labels(session_id).inc(nbytes)

    def round_finished(self, session_id: str, record: RoundRecord) -> None:
        self.round_duration.labels(session_id).observe(max(0.0, record.duration))
        self.rounds.labels(session_id).inc()
        self.participants.labels(session_id).set(len(record.participants))
        self.dropped.labels(session_id).inc(len(record.dropped))

    def weights_sent(self, session_id: str, nbytes: int) -> None:
        if nbytes > 0:
            self.bytes_out.labels(session_id).inc(nbytes)

    def state_changed(self, session_id: str, state: SessionState) -> None:
        for each in SessionState:
            self.state.labels(session_id, each.value).set(1 if each is state else 0)

    def checkpoint_failed(self, session_id: str, error: BaseException) -> None:
        self.checkpoint_failures.labels(session_id).inc()
