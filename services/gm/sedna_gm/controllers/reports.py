"""Routing node reports to the controllers of their owners, and a node's desired state.

:class:`ReportRouter` is the GM's :class:`~sedna_gm.core.ports.ReportHandler`: the hub hands it
every :class:`NodeReport`; it picks the handler registered for the owner's kind. Handlers set
status fields (idempotent), so a report delivered twice changes nothing the second time.

:class:`DesiredStateRegistry` is the GM's :class:`~sedna_gm.core.ports.DesiredStateSource`:
each controller registers a provider of the objects it places on nodes; a reconnecting node
gets the union.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

from sedna.api.gm.v1 import hub_service_pb2
from sedna.resources.objects import DEFAULT_NAMESPACE, ObjectKey, ResourceObject
from sedna_gm.core.ports import DesiredStateSource
from sedna_gm.store.errors import NotFoundError

__all__ = ["DesiredStateRegistry", "OwnerReportHandler", "ReportRouter", "owner_key"]

_log = logging.getLogger(__name__)


class OwnerReportHandler(Protocol):
    """Applies reports about objects of one kind."""

    async def handle_owner_report(
        self, node_name: str, owner: ObjectKey, report: hub_service_pb2.NodeReport
    ) -> None:
        """Apply ``report`` to ``owner``; raise NotFoundError when the owner does not exist."""


def owner_key(report: hub_service_pb2.NodeReport) -> ObjectKey:
    """The key of the report's owner (empty namespace means ``default``)."""
    owner = report.owner
    return ObjectKey(owner.kind, owner.namespace or DEFAULT_NAMESPACE, owner.name)


class ReportRouter:
    """Dispatches each report to the handler registered for its owner's kind."""

    def __init__(self) -> None:
        self._handlers: dict[str, OwnerReportHandler] = {}

    def register(self, kind: str, handler: OwnerReportHandler) -> None:
        """Route reports whose owner is of ``kind`` to ``handler``.

        Raises
        ------
        ValueError
            A handler is already registered for ``kind``.
        """
        if kind in self._handlers:
            raise ValueError(f"a report handler for kind {kind!r} is already registered")
        self._handlers[kind] = handler

    async def handle_report(self, node_name: str, report: hub_service_pb2.NodeReport) -> None:
        """Apply one report; drop (with a log line) what cannot apply to anything.

        Reports without an owner, with an unknown owner kind or for an owner that no longer
        exists are dropped rather than raised: raising would make the node resend them
        forever.
        """
        payload = report.WhichOneof("payload")
        if payload is None:
            _log.warning("report %d from node %s has no payload; dropped", report.seq, node_name)
            return
        if not report.owner.kind or not report.owner.name:
            _log.warning(
                "%s report %d from node %s names no owner (kind %r, name %r); dropped",
                payload,
                report.seq,
                node_name,
                report.owner.kind,
                report.owner.name,
            )
            return
        key = owner_key(report)
        handler = self._handlers.get(key.kind)
        if handler is None:
            _log.warning(
                "%s report %d from node %s is about %s, a kind no controller handles; dropped",
                payload,
                report.seq,
                node_name,
                key,
            )
            return
        try:
            await handler.handle_owner_report(node_name, key, report)
        except NotFoundError:
            _log.debug(
                "%s report %d from node %s is about %s, which no longer exists; dropped",
                payload,
                report.seq,
                node_name,
                key,
            )


class DesiredStateRegistry:
    """Union of the desired-state providers of every controller."""

    def __init__(self) -> None:
        self._providers: list[DesiredStateSource] = []

    def register(self, provider: DesiredStateSource) -> None:
        """Add a provider of objects that belong on nodes."""
        self._providers.append(provider)

    async def desired_objects(
        self, node_name: str
    ) -> Sequence[tuple[ResourceObject, Mapping[str, str]]]:
        """Every object (with credentials) some controller places on ``node_name``."""
        result: list[tuple[ResourceObject, Mapping[str, str]]] = []
        for provider in self._providers:
            result.extend(await provider.desired_objects(node_name))
        return result
