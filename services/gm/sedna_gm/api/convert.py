"""Conversion between the resource API's domain values and its protobuf messages.

Objects themselves convert with :mod:`sedna.resources.wire`; this adds watch events, lists and
the controllers' events.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from sedna.api.gm.v1 import resource_service_pb2 as pb
from sedna.resources.wire import resource_to_proto
from sedna_gm.api.apply import ApplyResult
from sedna_gm.api.query import ListPage
from sedna_gm.controllers.events import Event
from sedna_gm.store.port import WatchEvent, WatchEventType

__all__ = [
    "EVENT_TYPES",
    "apply_response",
    "list_events_response",
    "list_response",
    "watch_response",
]

EVENT_TYPES: dict[WatchEventType, pb.EventType.ValueType] = {
    WatchEventType.ADDED: pb.EVENT_TYPE_ADDED,
    WatchEventType.MODIFIED: pb.EVENT_TYPE_MODIFIED,
    WatchEventType.DELETED: pb.EVENT_TYPE_DELETED,
    WatchEventType.BOOKMARK: pb.EVENT_TYPE_BOOKMARK,
}
"""Store event types to wire event types."""


def apply_response(result: ApplyResult) -> pb.ApplyResponse:
    """Encode an apply result."""
    return pb.ApplyResponse(
        resource=resource_to_proto(result.object),
        created=result.created,
        spec_changed=result.spec_changed,
    )


def list_response(page: ListPage) -> pb.ListResponse:
    """Encode one list page."""
    return pb.ListResponse(
        resources=[resource_to_proto(obj) for obj in page.items],
        resource_version=page.resource_version,
        next_page_token=page.next_page_token,
    )


def watch_response(event: WatchEvent) -> pb.WatchResponse:
    """Encode a watch event (a BOOKMARK carries no resource, only its version)."""
    response = pb.WatchResponse(
        type=EVENT_TYPES[event.type], resource_version=event.resource_version
    )
    if event.object is not None:
        response.resource.CopyFrom(resource_to_proto(event.object))
    return response


def _timestamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def list_events_response(events: Sequence[Event]) -> pb.ListEventsResponse:
    """Encode an object's events (oldest first)."""
    return pb.ListEventsResponse(
        events=[
            pb.ObjectEvent(
                type=e.type,
                reason=e.reason,
                message=e.message,
                count=e.count,
                first_timestamp=_timestamp(e.first_time),
                last_timestamp=_timestamp(e.last_time),
                source=e.source,
            )
            for e in events
        ]
    )
