"""Client interceptors that only rewrite call details (deadline, metadata), aio and sync."""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

__all__ = ["CallDefaults", "SyncCallDefaultsInterceptor", "aio_call_defaults_interceptors"]


@dataclass(frozen=True, slots=True)
class CallDefaults:
    """What to add to every call: a deadline when it has none, and metadata it lacks."""

    timeout: float | None = None
    metadata: tuple[tuple[str, str], ...] = ()

    def merged_metadata(
        self, existing: Iterable[tuple[str, str | bytes]] | None
    ) -> list[tuple[str, str | bytes]]:
        items = list(existing or ())
        present = {key.lower() for key, _ in items}
        # A value the caller set explicitly wins (e.g. a different token for one call).
        items.extend((key, value) for key, value in self.metadata if key not in present)
        return items

    def merged_timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout


def _aio_details(
    defaults: CallDefaults, details: grpc.aio.ClientCallDetails
) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*defaults.merged_metadata(details.metadata))
    return grpc.aio.ClientCallDetails(
        details.method,
        defaults.merged_timeout(details.timeout),
        metadata,
        details.credentials,
        details.wait_for_ready,
    )


class _AioUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, defaults: CallDefaults) -> None:
        self._defaults = defaults

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(_aio_details(self._defaults, client_call_details), request)


class _AioUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, defaults: CallDefaults) -> None:
        self._defaults = defaults

    async def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(_aio_details(self._defaults, client_call_details), request)


class _AioStreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, defaults: CallDefaults) -> None:
        self._defaults = defaults

    async def intercept_stream_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterable[Any] | Iterable[Any],
    ) -> Any:
        details = _aio_details(self._defaults, client_call_details)
        return await continuation(details, request_iterator)


class _AioStreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, defaults: CallDefaults) -> None:
        self._defaults = defaults

    async def intercept_stream_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterable[Any] | Iterable[Any],
    ) -> Any:
        details = _aio_details(self._defaults, client_call_details)
        return await continuation(details, request_iterator)


def aio_call_defaults_interceptors(defaults: CallDefaults) -> list[grpc.aio.ClientInterceptor]:
    """One grpc.aio interceptor per call kind applying ``defaults``.

    grpc.aio files each interceptor object under the first kind it implements, so a single
    class implementing all four kinds would silently skip streaming calls.
    """
    return [
        _AioUnaryUnary(defaults),
        _AioUnaryStream(defaults),
        _AioStreamUnary(defaults),
        _AioStreamStream(defaults),
    ]


class _SyncCallDetails(grpc.ClientCallDetails):
    def __init__(
        self,
        *,
        method: str,
        timeout: float | None,
        metadata: Sequence[tuple[str, str | bytes]],
        credentials: grpc.CallCredentials | None,
        wait_for_ready: bool | None,
        compression: grpc.Compression | None,
    ) -> None:
        self.method = method
        self.timeout = timeout
        self.metadata = tuple(metadata)
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


class SyncCallDefaultsInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Sync-grpc interceptor applying :class:`CallDefaults` to calls of every kind."""

    def __init__(self, defaults: CallDefaults) -> None:
        self._defaults = defaults

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _SyncCallDetails(
            method=details.method,
            timeout=self._defaults.merged_timeout(details.timeout),
            metadata=self._defaults.merged_metadata(details.metadata),
            credentials=details.credentials,
            wait_for_ready=getattr(details, "wait_for_ready", None),
            compression=getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        """Apply the defaults to a unary-unary call."""
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        """Apply the defaults to a unary-stream call."""
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Iterator[Any]], Any],
        client_call_details: grpc.ClientCallDetails,
        request_iterator: Iterator[Any],
    ) -> Any:
        """Apply the defaults to a stream-unary call."""
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Iterator[Any]], Any],
        client_call_details: grpc.ClientCallDetails,
        request_iterator: Iterator[Any],
    ) -> Any:
        """Apply the defaults to a stream-stream call."""
        return continuation(self._details(client_call_details), request_iterator)
