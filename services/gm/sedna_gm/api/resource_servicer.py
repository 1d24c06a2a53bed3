"""gRPC adapter of the resource API (``sedna.api.gm.v1.ResourceService``).

Thin on purpose: decode the request, call :class:`~sedna_gm.api.resources.ResourceApi`, encode
the result. Errors become status codes, never tracebacks:

==============================  ==================  =========================================
error                           gRPC code           client should
==============================  ==================  =========================================
RequestError, bad JSON,         INVALID_ARGUMENT    fix the field(s) named in the message and
InvalidObjectError                                  in the ``sedna-field-violations`` trailer
NotFoundError                   NOT_FOUND           -
AlreadyExistsError              ALREADY_EXISTS      -
ConflictError                   ABORTED             re-read the object and retry
GoneError (watch)               OUT_OF_RANGE        list again, then watch from the list's
                                                    ``resource_version`` (as the proto says)
StoreUnavailableError           UNAVAILABLE         retry later
anything else                   INTERNAL            read the GlobalManager log
==============================  ==================  =========================================

OUT_OF_RANGE is the code for a watch version that is too old because it is what the proto
documents and what gRPC defines for "a position past the valid range"; Kubernetes' HTTP 410
has no closer gRPC code. Field violations travel in the ``sedna-field-violations`` trailing
metadata as a JSON array of ``{"field", "description"}`` (google.rpc.BadRequest would need
googleapis-common-protos, which Sedna does not depend on); the status message lists them too.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import grpc

from sedna.api.gm.v1 import resource_service_pb2 as pb
from sedna.api.gm.v1 import resource_service_pb2_grpc as pb_grpc
from sedna.resources.wire import resource_to_proto
from sedna.runtime import ServiceServer
from sedna_gm.api.apply import parse_manifest_json
from sedna_gm.api.convert import (
    apply_response,
    list_events_response,
    list_response,
    watch_response,
)
from sedna_gm.api.errors import FieldViolation, RequestError
from sedna_gm.api.resources import ResourceApi
from sedna_gm.controllers.events import EventSource
from sedna_gm.store.errors import (
    AlreadyExistsError,
    ConflictError,
    GoneError,
    InvalidObjectError,
    NotFoundError,
    StoreUnavailableError,
)
from sedna_gm.store.port import ResourceStore, WatchEvent

__all__ = [
    "FIELD_VIOLATIONS_METADATA_KEY",
    "SERVICE_NAME",
    "ResourceServicer",
    "add_resource_service",
    "status_for",
]

SERVICE_NAME = "sedna.api.gm.v1.ResourceService"
FIELD_VIOLATIONS_METADATA_KEY = "sedna-field-violations"
"""Trailing metadata with the offending fields of an INVALID_ARGUMENT, as a JSON array."""

_MAX_VIOLATIONS = 50  # keeps the trailer well under gRPC's 8 KiB metadata limit
_MAX_DESCRIPTION = 200

_log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[object, object]


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str, tuple[FieldViolation, ...]]:
    """Map an error of the core or the store to a status code, a message and field violations.

    Parameters
    ----------
    exc
        What the core raised.

    Returns
    -------
    tuple
        ``(code, message, violations)``; INTERNAL for anything unexpected.
    """
    if isinstance(exc, RequestError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc), exc.violations
    if isinstance(exc, InvalidObjectError):
        violation = FieldViolation(exc.field, str(exc).removeprefix(f"{exc.field}: "))
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc), (violation,)
    if isinstance(exc, NotFoundError):
        return grpc.StatusCode.NOT_FOUND, str(exc), ()
    if isinstance(exc, AlreadyExistsError):
        return grpc.StatusCode.ALREADY_EXISTS, str(exc), ()
    if isinstance(exc, ConflictError):
        return grpc.StatusCode.ABORTED, str(exc), ()
    if isinstance(exc, GoneError):
        detail = str(exc) or "resource_version is too old"
        message = f"{detail}: list again, then watch from the list's resource_version"
        return grpc.StatusCode.OUT_OF_RANGE, message, ()
    if isinstance(exc, StoreUnavailableError):
        return grpc.StatusCode.UNAVAILABLE, f"resource store unavailable: {exc}", ()
    return (
        grpc.StatusCode.INTERNAL,
        f"internal error ({type(exc).__name__}); see the GlobalManager log",
        (),
    )


def _violations_trailer(violations: tuple[FieldViolation, ...]) -> tuple[tuple[str, str], ...]:
    if not violations:
        return ()
    data = [
        {"field": v.field, "description": v.description[:_MAX_DESCRIPTION]}
        for v in violations[:_MAX_VIOLATIONS]
    ]
    return ((FIELD_VIOLATIONS_METADATA_KEY, json.dumps(data, ensure_ascii=True)),)


async def _abort(context: Context, method: str, exc: Exception) -> None:
    code, message, violations = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        _log.error("ResourceService/%s failed", method, exc_info=exc)
    else:
        _log.debug("ResourceService/%s: %s %s", method, code.name, message)
    await context.abort(code, message, trailing_metadata=_violations_trailer(violations))


class ResourceServicer(pb_grpc.ResourceServiceServicer):
    """``sedna.api.gm.v1.ResourceService`` over a :class:`ResourceApi`.

    Parameters
    ----------
    api
        The core that does the work.
    """

    def __init__(self, api: ResourceApi) -> None:
        self._api = api
        self._closing = asyncio.Event()

    def close_watches(self) -> None:
        """End every open Watch with UNAVAILABLE (the server is draining; clients re-watch)."""
        self._closing.set()

    async def Apply(self, request: pb.ApplyRequest, context: Context) -> pb.ApplyResponse:  # noqa: N802
        """Validate and create or update one object."""
        try:
            manifest = parse_manifest_json(request.manifest_json)
            result = await self._api.apply(
                manifest,
                dry_run=request.dry_run,
                expected_resource_version=request.expected_resource_version,
            )
        except Exception as exc:
            await _abort(context, "Apply", exc)
            raise  # unreachable: abort raises
        return apply_response(result)

    async def Get(self, request: pb.GetRequest, context: Context) -> pb.GetResponse:  # noqa: N802
        """Return one object."""
        try:
            obj = await self._api.get(request.kind, request.namespace, request.name)
        except Exception as exc:
            await _abort(context, "Get", exc)
            raise
        return pb.GetResponse(resource=resource_to_proto(obj))

    async def List(self, request: pb.ListRequest, context: Context) -> pb.ListResponse:  # noqa: N802
        """Return one page of objects."""
        try:
            page = await self._api.list(
                request.kind,
                request.namespace,
                dict(request.label_selector),
                request.page_size,
                request.page_token,
            )
        except Exception as exc:
            await _abort(context, "List", exc)
            raise
        return list_response(page)

    async def Watch(  # noqa: N802
        self, request: pb.WatchRequest, context: Context
    ) -> AsyncIterator[pb.WatchResponse]:
        """Stream changes until the client cancels, the server stops or the store fails."""
        events = self._api.watch(
            request.kind, request.namespace, request.resource_version, request.allow_bookmarks
        )
        closing = asyncio.ensure_future(self._closing.wait())
        following: asyncio.Future[WatchEvent] | None = None
        try:
            while True:
                following = asyncio.ensure_future(anext(events))
                await asyncio.wait({following, closing}, return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    break
                try:
                    event = following.result()
                except StopAsyncIteration:
                    return
                yield watch_response(event)
        except Exception as exc:
            await _abort(context, "Watch", exc)
        finally:
            closing.cancel()
            # Also runs when the client cancels (CancelledError): stop the pending read, then
            # close the store's watch.
            if following is not None and not following.done():
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)
            await events.aclose()
        await context.abort(
            grpc.StatusCode.UNAVAILABLE,
            "GlobalManager is shutting down; watch again from the last resourceVersion",
        )

    async def Delete(self, request: pb.DeleteRequest, context: Context) -> pb.DeleteResponse:  # noqa: N802
        """Request deletion of one object."""
        try:
            obj = await self._api.delete(
                request.kind,
                request.namespace,
                request.name,
                request.expected_resource_version,
            )
        except Exception as exc:
            await _abort(context, "Delete", exc)
            raise
        return pb.DeleteResponse(resource=resource_to_proto(obj))

    async def ListEvents(  # noqa: N802
        self, request: pb.ListEventsRequest, context: Context
    ) -> pb.ListEventsResponse:
        """Return the events recorded about one object (empty when none)."""
        try:
            events = await self._api.list_events(request.kind, request.namespace, request.name)
        except Exception as exc:
            await _abort(context, "ListEvents", exc)
            raise
        return list_events_response(events)


def add_resource_service(
    server: ServiceServer, store: ResourceStore, events: EventSource | None = None
) -> ResourceServicer:
    """Register ``ResourceService`` backed by ``store`` on a (not yet started) server.

    Parameters
    ----------
    server
        The GlobalManager's gRPC server.
    store
        Where objects live; the caller starts and closes it.
    events
        Where ``ListEvents`` reads events (the GM's recorder); none: always empty.

    Returns
    -------
    ResourceServicer
        The registered servicer.
    """
    servicer = ResourceServicer(ResourceApi(store, events=events))
    server.add_servicer(pb_grpc.add_ResourceServiceServicer_to_server, servicer, SERVICE_NAME)
    # Watches last until the client leaves: end them when the drain begins.
    server.on_drain(servicer.close_watches)
    return servicer
