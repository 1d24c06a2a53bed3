"""Transport-agnostic intake of worker reports: owner resolution, de-duplication, submission."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from sedna.api.common.v1 import types_pb2
from sedna.api.gm.v1 import hub_service_pb2
from sedna.resources import API_VERSION
from sedna.resources.objects import DEFAULT_NAMESPACE
from sedna.resources.registry import find_kind
from sedna.resources.worker import WorkerOwner
from sedna_lc.ports import ReportSink

__all__ = ["OwnerLookup", "ReportError", "SubmitResult", "WorkerReportIntake"]

logger = logging.getLogger(__name__)

OwnerLookup = Callable[[str, str], WorkerOwner | None]
"""``(namespace, worker_name) -> owner`` of a worker this node runs (namespace may be empty)."""

# The FL v1 lib never sets its owner kind and sends this placeholder instead.
_PLACEHOLDER_KIND = "default"


class ReportError(ValueError):
    """A report cannot be accepted; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class SubmitResult:
    """Outcome of :meth:`WorkerReportIntake.submit`."""

    report_id: str
    duplicate: bool


class WorkerReportIntake:
    """Turns worker reports into ``NodeReport`` messages for the GM.

    Parameters
    ----------
    sink
        Durable channel to the GM.
    owner_lookup
        Finds the owner of a worker the node runs; used for reports that lack the owner or
        carry the FL v1 lib's ``ownerKind="default"``.
    dedup_capacity
        How many recent report ids are remembered to drop repeats.
    """

    def __init__(
        self,
        sink: ReportSink,
        *,
        owner_lookup: OwnerLookup | None = None,
        dedup_capacity: int = 10_000,
    ) -> None:
        self._sink = sink
        self._owner_lookup = owner_lookup
        self._capacity = dedup_capacity
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = asyncio.Lock()

    def _resolve_owner(self, report: types_pb2.WorkerReport) -> None:
        owner = (
            self._owner_lookup(report.namespace, report.worker_name) if self._owner_lookup else None
        )
        kind = report.owner_kind.strip()
        if kind.lower() == _PLACEHOLDER_KIND or not kind:
            if owner is not None:
                report.owner_kind = owner.kind
                report.owner_name = report.owner_name or owner.name
            elif not kind:
                raise ReportError("ownerKind", "required (the kind of the worker's owner)")
            else:
                logger.warning(
                    "worker %s/%s reports ownerKind=%r and is not run by this node: "
                    "the GM may not route it",
                    report.namespace,
                    report.worker_name,
                    kind,
                )
        else:
            # Upstream libs send the lowercased kind ("jointinferenceservice").
            found = find_kind(kind)
            if found is not None:
                report.owner_kind = found.kind
        if not report.owner_name:
            if owner is None:
                raise ReportError("ownerName", "required (the name of the worker's owner)")
            report.owner_name = owner.name
        if not report.namespace:
            report.namespace = owner.namespace if owner is not None else DEFAULT_NAMESPACE

    async def submit(self, report: types_pb2.WorkerReport) -> SubmitResult:
        """Validate, complete and submit one report (a copy; the argument is not changed).

        Raises
        ------
        ReportError
            A required field is missing.
        Exception
            Whatever the sink raises when it cannot store the report.
        """
        if not report.worker_name:
            raise ReportError("name", "required (the worker's WORKER_NAME)")
        out = types_pb2.WorkerReport()
        out.CopyFrom(report)
        self._resolve_owner(out)
        now = datetime.now(UTC)
        if not out.HasField("report_time"):
            out.report_time.FromDatetime(now)
        async with self._lock:
            if out.report_id and out.report_id in self._seen:
                self._seen.move_to_end(out.report_id)
                return SubmitResult(out.report_id, duplicate=True)
            if not out.report_id:
                out.report_id = uuid.uuid4().hex
            observed = Timestamp()
            observed.FromDatetime(now)
            kind = find_kind(out.owner_kind)
            node_report = hub_service_pb2.NodeReport(
                owner=types_pb2.ObjectReference(
                    api_version=API_VERSION if kind is not None else "",
                    kind=out.owner_kind,
                    namespace=out.namespace,
                    name=out.owner_name,
                ),
                observed_time=observed,
                worker=out,
            )
            await self._sink.submit(node_report)
            self._seen[out.report_id] = None
            while len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
        return SubmitResult(out.report_id, duplicate=False)
