"""Outgoing resource events of one node: pending (coalesced) and sent-but-unacknowledged.

Pending events have no sequence number yet: a newer upsert/remove of the same key replaces
a pending one (and moves it to the back, so the queue follows the order of latest writes).
Once sent, an event gets the next sequence number of the node's session and stays in
``unacked`` until the node acknowledges it (cumulative acks), so it can be resent after a
reconnect or a retransmit timeout.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sedna.api.gm.v1 import hub_service_pb2
from sedna.resources.objects import ObjectKey, ResourceObject
from sedna.resources.wire import reference_from_object, resource_to_proto

__all__ = ["NodeQueue", "PendingEvent", "SentMessage"]


@dataclass
class PendingEvent:
    """A queued upsert/remove waiting for its turn."""

    operation: hub_service_pb2.Operation.ValueType
    obj: ResourceObject
    credentials: Mapping[str, str]
    queued_at: float


@dataclass
class SentMessage:
    """A numbered message sent (or about to be) and not yet acknowledged."""

    seq: int
    message: hub_service_pb2.ConnectResponse
    queued_at: float
    kind: str


class NodeQueue:
    """The event queue of one node (not thread-safe; one event loop).

    Parameters
    ----------
    capacity
        Most events held (pending + unacked) before producers must wait.
    on_size_change
        Called with the size delta, for the pending-messages gauge.
    """

    def __init__(self, capacity: int, on_size_change: Callable[[int], None]) -> None:
        self.capacity = capacity
        self.pending: OrderedDict[ObjectKey, PendingEvent] = OrderedDict()
        self.unacked: deque[SentMessage] = deque()
        self.next_seq = 1
        self.acked_seq = 0
        self._on_size_change = on_size_change

    def __len__(self) -> int:
        return len(self.pending) + len(self.unacked)

    @property
    def full(self) -> bool:
        """Whether a new (not coalesced) event must wait."""
        return len(self) >= self.capacity

    def put(self, event: PendingEvent) -> bool:
        """Queue ``event``; True when it replaced a pending event of the same key."""
        key = event.obj.key
        replaced = key in self.pending
        self.pending[key] = event
        self.pending.move_to_end(key)
        if not replaced:
            self._on_size_change(1)
        return replaced

    def contains(self, key: ObjectKey) -> bool:
        """Whether an event for ``key`` is pending."""
        return key in self.pending

    def take(self) -> SentMessage | None:
        """Number the oldest pending event and move it to ``unacked``."""
        if not self.pending:
            return None
        _, event = self.pending.popitem(last=False)
        message = hub_service_pb2.ConnectResponse(
            event=hub_service_pb2.ResourceEvent(
                seq=self.next_seq,
                operation=event.operation,
                resource=resource_to_proto(event.obj),
                credentials=dict(event.credentials),
            )
        )
        return self._append(message, event.queued_at, "event")

    def number_upsert(self, obj: ResourceObject, credentials: Mapping[str, str]) -> SentMessage:
        """Number an UPSERT of a full resync directly (it bypasses ``pending``)."""
        message = hub_service_pb2.ConnectResponse(
            event=hub_service_pb2.ResourceEvent(
                seq=self.next_seq,
                operation=hub_service_pb2.OPERATION_UPSERT,
                resource=resource_to_proto(obj),
                credentials=dict(credentials),
            )
        )
        self._on_size_change(1)
        return self._append(message, time.monotonic(), "event")

    def number_resync_completed(self, objects: list[ResourceObject]) -> SentMessage:
        """Number the ResyncCompleted that ends a full resync."""
        message = hub_service_pb2.ConnectResponse(
            resync_completed=hub_service_pb2.ResyncCompleted(
                seq=self.next_seq, resources=[reference_from_object(obj) for obj in objects]
            )
        )
        self._on_size_change(1)
        return self._append(message, time.monotonic(), "resync_completed")

    def _append(
        self, message: hub_service_pb2.ConnectResponse, queued: float, kind: str
    ) -> SentMessage:
        sent = SentMessage(self.next_seq, message, queued, kind)
        self.next_seq += 1
        self.unacked.append(sent)
        return sent

    def ack(self, seq: int) -> list[SentMessage]:
        """Drop unacked messages up to ``seq``; the dropped ones (for lag metrics)."""
        done: list[SentMessage] = []
        while self.unacked and self.unacked[0].seq <= seq:
            done.append(self.unacked.popleft())
        self.acked_seq = max(self.acked_seq, min(seq, self.next_seq - 1))
        if done:
            self._on_size_change(-len(done))
        return done

    def restart(self, *, keep_pending: bool) -> None:
        """Start a new session: numbering from 1, nothing unacked (a full resync follows)."""
        dropped = len(self.unacked) + (0 if keep_pending else len(self.pending))
        self.unacked.clear()
        if not keep_pending:
            self.pending.clear()
        self.next_seq = 1
        self.acked_seq = 0
        if dropped:
            self._on_size_change(-dropped)

    def oldest_age(self, now: float) -> float:
        """Seconds since the oldest queued/unacked event was queued (0 when empty)."""
        times = [event.queued_at for event in self.pending.values()]
        if self.unacked:
            times.append(self.unacked[0].queued_at)
        return max(0.0, now - min(times)) if times else 0.0
