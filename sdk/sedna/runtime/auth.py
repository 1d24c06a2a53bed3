"""Bearer-token authentication: a server interceptor and client interceptors.

Clients send ``authorization: Bearer <token>`` metadata; the server accepts any of its
configured tokens. The health and reflection services are exempt because Kubernetes
gRPC probes (and grpcurl's discovery) cannot send headers. Tokens protect the call
metadata only: without TLS they travel in clear text, so use TLS beyond loopback.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, NoReturn

import grpc
from pydantic import SecretStr

from sedna.runtime._handlers import split_method, with_behaviour
from sedna.runtime._interceptors import (
    CallDefaults,
    SyncCallDefaultsInterceptor,
    aio_call_defaults_interceptors,
)
from sedna.runtime.logging import register_secret

__all__ = [
    "AUTHORIZATION_METADATA_KEY",
    "DEFAULT_EXEMPT_SERVICES",
    "TokenAuthInterceptor",
    "TokenVerifier",
    "bearer_token_interceptors",
    "bearer_token_metadata",
    "sync_bearer_token_interceptor",
]

_log = logging.getLogger(__name__)

AUTHORIZATION_METADATA_KEY: Final = "authorization"

DEFAULT_EXEMPT_SERVICES: Final = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
"""Services callable without a token: health (probes) and reflection (discovery)."""

_MISSING = "missing bearer token: send metadata 'authorization: Bearer <token>'"
_MALFORMED = "malformed authorization metadata: expected 'Bearer <token>'"
_INVALID = "invalid bearer token"


def _secret_text(token: str | SecretStr) -> str:
    return token.get_secret_value() if isinstance(token, SecretStr) else token


def _digest(value: bytes) -> bytes:
    # Comparing fixed-length digests keeps compare_digest's time independent of the
    # configured tokens' lengths too.
    return hashlib.sha256(value).digest()


class TokenVerifier:
    """Whether a presented token is one of the accepted ones (constant-time comparison).

    For transports other than gRPC calls (the aggregator's bulk port); the interceptor below
    uses it too.

    Parameters
    ----------
    tokens
        Accepted tokens (at least one). Each is also registered for log redaction.

    Raises
    ------
    ValueError
        No token given, or an empty one.
    """

    def __init__(self, tokens: Iterable[str | SecretStr]) -> None:
        texts = [_secret_text(token) for token in tokens]
        if not texts or any(not text for text in texts):
            raise ValueError("token authentication needs at least one non-empty token")
        for text in texts:
            register_secret(text)
        self._digests = tuple(_digest(text.encode("utf-8")) for text in texts)

    def accepts(self, token: str) -> bool:
        """Whether ``token`` is accepted."""
        presented = _digest(token.encode("utf-8"))
        accepted = False
        # No early exit: every configured token is compared on every call.
        for digest in self._digests:
            accepted |= hmac.compare_digest(presented, digest)
        return accepted


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Reject calls without a valid ``authorization: Bearer <token>`` as UNAUTHENTICATED.

    Parameters
    ----------
    tokens
        Accepted tokens (at least one). Each is also registered for log redaction.
    exempt_services
        Fully qualified service names callable without a token.

    Raises
    ------
    ValueError
        No token given.
    """

    def __init__(
        self,
        tokens: Iterable[str | SecretStr],
        *,
        exempt_services: Iterable[str] = DEFAULT_EXEMPT_SERVICES,
    ) -> None:
        self._verifier = TokenVerifier(tokens)
        self._exempt = frozenset(exempt_services)

    def _problem(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
        """None when the metadata carries an accepted token, else the reason to reject."""
        values = [
            value for key, value in (metadata or ()) if key.lower() == AUTHORIZATION_METADATA_KEY
        ]
        if not values:
            return _MISSING
        if len(values) > 1:
            return _MALFORMED
        raw = values[0]
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        scheme, _, credential = text.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return _MALFORMED
        return None if self._verifier.accepts(credential) else _INVALID

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Pass authenticated calls through; answer the others with UNAUTHENTICATED.

        Parameters
        ----------
        continuation
            Looks up the handler.
        handler_call_details
            Method name and invocation metadata.

        Returns
        -------
        grpc.RpcMethodHandler | None
            The real handler, or one of the same kind that aborts.
        """
        handler = await continuation(handler_call_details)
        service, _ = split_method(handler_call_details.method)
        if handler is None or service in self._exempt:
            return handler
        problem = self._problem(handler_call_details.invocation_metadata)
        if problem is None:
            return handler
        method = handler_call_details.method

        async def reject(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> NoReturn:
            # Never log or echo the presented token, only that and why it failed.
            _log.warning(
                "rejected unauthenticated call",
                extra={"grpc_method": method, "peer": context.peer(), "reason": problem},
            )
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, problem)

        # A coroutine works for every call kind: grpc.aio awaits it and the abort ends the
        # call before any request is read or response written.
        return with_behaviour(handler, reject)


def _defaults(token: str | SecretStr) -> CallDefaults:
    text = _secret_text(token)
    if not text or any(c.isspace() for c in text):
        raise ValueError("bearer token must be non-empty and contain no whitespace")
    register_secret(text)
    return CallDefaults(metadata=((AUTHORIZATION_METADATA_KEY, f"Bearer {text}"),))


def bearer_token_interceptors(token: str | SecretStr) -> list[grpc.aio.ClientInterceptor]:
    """grpc.aio client interceptors adding ``authorization: Bearer <token>`` to every call.

    Metadata works on plaintext and TLS channels alike (unlike gRPC call credentials,
    which require TLS). A call that sets its own ``authorization`` keeps it.

    Parameters
    ----------
    token
        The token.

    Returns
    -------
    list[grpc.aio.ClientInterceptor]
        One interceptor per call kind; pass them all to the channel.
    """
    return aio_call_defaults_interceptors(_defaults(token))


def bearer_token_metadata(token: str | SecretStr) -> tuple[tuple[str, str], ...]:
    """The ``authorization: Bearer <token>`` pair to pass as a call's ``metadata``.

    For a call that no token interceptor sees (a bidi stream on a channel opened with
    ``open_channel(..., intercept_bidi_streams=False)``). Raises ``ValueError`` for an empty
    token or one with whitespace.
    """
    return _defaults(token).metadata


def sync_bearer_token_interceptor(token: str | SecretStr) -> SyncCallDefaultsInterceptor:
    """The sync-grpc counterpart of :func:`bearer_token_interceptors`.

    Parameters
    ----------
    token
        The token.

    Returns
    -------
    SyncCallDefaultsInterceptor
        Use with ``grpc.intercept_channel(channel, interceptor)``.
    """
    return SyncCallDefaultsInterceptor(_defaults(token))
