"""Events: short human-readable notes about an object (``sedna describe`` shows them).

:class:`EventRecorder` is the port controllers write to; :class:`MemoryEventRecorder` keeps
the most recent events per object in memory (a ring buffer) and logs each one. Like
Kubernetes, a repeat of the latest event of an object (same type, reason and message) bumps
its count instead of adding a line. :class:`EventSource` is what the resource API reads
(``ListEvents``); :class:`sedna_gm.events.SqlEventRecorder` is the persistent recorder of the
embedded mode.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal, Protocol

from sedna.resources.objects import ObjectKey, ResourceObject
from sedna_gm.controllers.conditions import utcnow

__all__ = ["Event", "EventRecorder", "EventSource", "EventType", "MemoryEventRecorder"]

_log = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class Event:
    """One event about an object.

    Attributes
    ----------
    key
        The object the event is about.
    type
        ``Normal`` or ``Warning``.
    reason
        One-word CamelCase reason, e.g. ``NodeNotFound``.
    message
        Human-readable details.
    count
        How many times it happened in a row.
    first_time, last_time
        When it first and last happened.
    source
        The controller that recorded it.
    """

    key: ObjectKey
    type: EventType
    reason: str
    message: str
    count: int
    first_time: datetime
    last_time: datetime
    source: str = ""


class EventRecorder(Protocol):
    """Where controllers record events."""

    def record(
        self,
        obj: ResourceObject | ObjectKey,
        type_: EventType,
        reason: str,
        message: str,
        *,
        source: str = "",
    ) -> None:
        """Record an event about ``obj``."""

    def events_for(self, key: ObjectKey) -> list[Event]:
        """Events about ``key``, oldest first."""
        ...


class EventSource(Protocol):
    """Where the resource API reads events from."""

    async def list_events(self, key: ObjectKey) -> list[Event]:
        """Events about ``key``, oldest first (empty when none)."""
        ...


class MemoryEventRecorder:
    """Keeps the last ``per_object`` events of each of the last ``max_objects`` objects.

    Parameters
    ----------
    per_object
        Events kept per object (older ones drop off).
    max_objects
        Objects tracked; the least recently noted object is forgotten first.
    clock
        Source of event times (tests inject one).
    """

    def __init__(
        self,
        per_object: int = 50,
        max_objects: int = 10_000,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if per_object < 1 or max_objects < 1:
            raise ValueError(
                f"per_object and max_objects must be >= 1, got {per_object!r}, {max_objects!r}"
            )
        self._per_object = per_object
        self._max_objects = max_objects
        self._clock = clock
        self._events: OrderedDict[ObjectKey, deque[Event]] = OrderedDict()

    def record(
        self,
        obj: ResourceObject | ObjectKey,
        type_: EventType,
        reason: str,
        message: str,
        *,
        source: str = "",
    ) -> None:
        """Record (and log) an event; a repeat of the object's last event bumps its count."""
        key = obj.key if isinstance(obj, ResourceObject) else obj
        level = logging.WARNING if type_ == "Warning" else logging.INFO
        _log.log(level, "event %s %s: %s %s", key, type_, reason, message)
        now = self._clock()
        ring = self._events.get(key)
        if ring is None:
            ring = deque(maxlen=self._per_object)
            self._events[key] = ring
            while len(self._events) > self._max_objects:
                evicted, _ = self._events.popitem(last=False)
                self._changed(evicted)
        else:
            self._events.move_to_end(key)
        if ring:
            last = ring[-1]
            if (last.type, last.reason, last.message, last.source) == (
                type_,
                reason,
                message,
                source,
            ):
                ring[-1] = replace(last, count=last.count + 1, last_time=now)
                self._changed(key)
                return
        ring.append(Event(key, type_, reason, message, 1, now, now, source))
        self._changed(key)

    def events_for(self, key: ObjectKey) -> list[Event]:
        """Events about ``key``, oldest first (empty when none)."""
        return list(self._events.get(key, ()))

    async def list_events(self, key: ObjectKey) -> list[Event]:
        """Events about ``key``, oldest first (the :class:`EventSource` side)."""
        return self.events_for(key)

    def forget(self, key: ObjectKey) -> None:
        """Drop the events of ``key`` (e.g. once the object is gone for good)."""
        if self._events.pop(key, None) is not None:
            self._changed(key)

    def _restore(self, events: list[Event]) -> None:
        """Put back events read from storage (each object's oldest first), without logging."""
        for event in events:
            ring = self._events.get(event.key)
            if ring is None:
                ring = self._events[event.key] = deque(maxlen=self._per_object)
            else:
                self._events.move_to_end(event.key)
            ring.append(event)
        while len(self._events) > self._max_objects:
            self._events.popitem(last=False)

    def _changed(self, key: ObjectKey) -> None:
        """Hook: the events of ``key`` changed (or were dropped); subclasses persist them."""
