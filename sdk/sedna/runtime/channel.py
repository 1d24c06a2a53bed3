"""Client channels: the one way Sedna code opens a gRPC channel (grpc.aio or sync grpc).

Every channel gets explicit message-size limits and keepalive, a default deadline for
calls that set none, optional TLS/mTLS and bearer token, and gRPC-native retries with
exponential backoff for the services/methods the caller declares idempotent.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
from pydantic import SecretStr

from sedna.runtime._interceptors import (
    CallDefaults,
    SyncCallDefaultsInterceptor,
    aio_call_defaults_interceptors,
)
from sedna.runtime.auth import bearer_token_interceptors, sync_bearer_token_interceptor
from sedna.runtime.config import DEFAULT_MAX_MESSAGE_BYTES
from sedna.runtime.tls import client_credentials

__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "ChannelConfig",
    "RetryPolicy",
    "default_deadline_interceptors",
    "open_channel",
    "open_sync_channel",
    "sync_default_deadline_interceptor",
]

DEFAULT_TIMEOUT_SECONDS: Final = 30.0
"""Deadline of calls that do not pass ``timeout``."""

# gRPC clamps maxAttempts to 5; refusing more avoids a silently ignored setting.
_MAX_ATTEMPTS_LIMIT: Final = 5

StrPath = str | os.PathLike[str]


def _duration(seconds: float) -> str:
    """A protobuf JSON Duration: decimal seconds with an ``s`` suffix."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """gRPC retryPolicy for idempotent methods: attempts and exponential backoff.

    The n-th retry waits a random time in ``[0, min(initial_backoff *
    backoff_multiplier**(n-1), max_backoff)]``. The call's deadline bounds all attempts.

    Parameters
    ----------
    max_attempts
        Total attempts including the first (2-5).
    initial_backoff
        Seconds, upper bound of the first retry's delay.
    max_backoff
        Seconds, cap of the delay.
    backoff_multiplier
        Growth of the delay bound per retry.
    retryable_status_codes
        Codes that trigger a retry; UNAVAILABLE by default (the server did not process
        the call, or a transient outage).
    """

    max_attempts: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    backoff_multiplier: float = 2.0
    retryable_status_codes: tuple[grpc.StatusCode, ...] = (grpc.StatusCode.UNAVAILABLE,)

    def __post_init__(self) -> None:
        """Check the values gRPC would otherwise reject or clamp silently."""
        if not 2 <= self.max_attempts <= _MAX_ATTEMPTS_LIMIT:
            raise ValueError(
                f"max_attempts must be 2..{_MAX_ATTEMPTS_LIMIT}, not {self.max_attempts}"
            )
        if self.initial_backoff <= 0 or self.max_backoff <= 0:
            raise ValueError("initial_backoff and max_backoff must be > 0")
        if self.max_backoff < self.initial_backoff:
            raise ValueError("max_backoff must be >= initial_backoff")
        if self.backoff_multiplier <= 0:
            raise ValueError("backoff_multiplier must be > 0")
        if not self.retryable_status_codes:
            raise ValueError("retryable_status_codes must not be empty")
        if grpc.StatusCode.OK in self.retryable_status_codes:
            raise ValueError("OK cannot be a retryable status code")

    def to_json(self) -> dict[str, Any]:
        """The ``retryPolicy`` object of a gRPC service config.

        Returns
        -------
        dict
            JSON-ready mapping.
        """
        return {
            "maxAttempts": self.max_attempts,
            "initialBackoff": _duration(self.initial_backoff),
            "maxBackoff": _duration(self.max_backoff),
            "backoffMultiplier": self.backoff_multiplier,
            "retryableStatusCodes": [code.name for code in self.retryable_status_codes],
        }


def _method_name(name: str) -> dict[str, str]:
    text = name.strip().lstrip("/")
    service, _, method = text.partition("/")
    if not service or "/" in method or " " in text:
        raise ValueError(
            f"idempotent entry {name!r} must be 'package.Service' or 'package.Service/Method'"
        )
    return {"service": service, "method": method} if method else {"service": service}


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelConfig:
    """Everything needed to open a channel; reusable with :func:`dataclasses.replace`.

    Parameters
    ----------
    target
        gRPC target, e.g. ``"gm.sedna:50051"``, ``"dns:///gm:50051"``, ``"127.0.0.1:5000"``.
    tls
        Use TLS. Implied when ``ca_file`` or ``cert_file`` is set.
    ca_file
        CA bundle to verify the server; None with TLS uses the system roots.
    cert_file, key_file
        Client certificate and key, for servers requiring mutual TLS.
    server_name
        Expected server name in its certificate when it differs from the target host.
    token
        Bearer token sent as ``authorization`` metadata on every call.
    default_timeout
        Deadline (seconds) of every call that does not pass ``timeout``. Long-lived
        streams must pass their own, larger ``timeout``.
    idempotent
        ``"package.Service"`` or ``"package.Service/Method"`` names whose calls are safe
        to repeat; only these are retried, with ``retry``.
    retry
        The retry policy of the idempotent methods.
    max_send_message_bytes, max_receive_message_bytes
        Message-size limits (explicit, both directions).
    keepalive_time
        Seconds between keepalive pings while calls are active; None disables them.
        Must not be below the server's minimum ping interval (10 s for Sedna servers;
        5 minutes for gRPC's defaults) or the server closes the connection.
    keepalive_timeout
        Seconds to wait for a ping ack before closing the connection.
    keepalive_without_calls
        Also ping idle connections (keeps NAT/firewall state alive; the server must allow
        it, as Sedna servers do).
    options
        Extra raw channel arguments (must not repeat the ones set here).
    interceptors
        Extra grpc.aio client interceptors (aio channels only), run after the built-in ones.
    """

    target: str
    tls: bool = False
    ca_file: StrPath | None = None
    cert_file: StrPath | None = None
    key_file: StrPath | None = None
    server_name: str | None = None
    token: SecretStr | str | None = field(default=None, repr=False)
    default_timeout: float = DEFAULT_TIMEOUT_SECONDS
    idempotent: tuple[str, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_send_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_receive_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    keepalive_time: float | None = 30.0
    keepalive_timeout: float = 10.0
    keepalive_without_calls: bool = False
    options: tuple[tuple[str, Any], ...] = ()
    interceptors: tuple[grpc.aio.ClientInterceptor, ...] = ()

    def __post_init__(self) -> None:
        """Validate values and normalise ``idempotent`` to a tuple."""
        if not self.target.strip():
            raise ValueError("target must not be empty")
        if self.default_timeout <= 0:
            raise ValueError("default_timeout must be > 0: every call needs a deadline")
        if self.max_send_message_bytes <= 0 or self.max_receive_message_bytes <= 0:
            raise ValueError("message-size limits must be > 0")
        if self.keepalive_time is not None and self.keepalive_time <= 0:
            raise ValueError("keepalive_time must be > 0 (or None to disable)")
        if self.keepalive_timeout <= 0:
            raise ValueError("keepalive_timeout must be > 0")
        if isinstance(self.idempotent, str):
            # A bare string would be iterated character by character.
            object.__setattr__(self, "idempotent", (self.idempotent,))
        else:
            object.__setattr__(self, "idempotent", tuple(self.idempotent))
        for name in self.idempotent:
            _method_name(name)

    @property
    def secure(self) -> bool:
        """Whether the channel uses TLS."""
        return self.tls or self.ca_file is not None or self.cert_file is not None

    def service_config(self) -> dict[str, Any]:
        """The gRPC service config: a retryPolicy for the idempotent methods only.

        Returns
        -------
        dict
            ``{"methodConfig": [...]}``; empty list when nothing is idempotent.
        """
        if not self.idempotent:
            return {"methodConfig": []}
        names = [_method_name(name) for name in self.idempotent]
        return {"methodConfig": [{"name": names, "retryPolicy": self.retry.to_json()}]}

    def channel_options(self) -> list[tuple[str, Any]]:
        """The channel arguments this config sets.

        Returns
        -------
        list[tuple[str, Any]]
            Options for ``grpc.*_channel``.
        """
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", self.max_send_message_bytes),
            ("grpc.max_receive_message_length", self.max_receive_message_bytes),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", json.dumps(self.service_config())),
            # Our retry policy must not be replaced by a service config from DNS TXT records.
            ("grpc.service_config_disable_resolution", 1),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout * 1000)),
        ]
        if self.keepalive_time is not None:
            options += [
                ("grpc.keepalive_time_ms", int(self.keepalive_time * 1000)),
                ("grpc.keepalive_permit_without_calls", int(self.keepalive_without_calls)),
                # Keep pinging a quiet connection instead of stopping after two pings.
                ("grpc.http2.max_pings_without_data", 0),
            ]
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        options.extend(self.options)
        return options

    def _credentials(self) -> grpc.ChannelCredentials:
        return client_credentials(self.ca_file, self.cert_file, self.key_file)


def default_deadline_interceptors(timeout: float) -> list[grpc.aio.ClientInterceptor]:
    """grpc.aio interceptors giving every call without ``timeout`` this deadline.

    Parameters
    ----------
    timeout
        Seconds.

    Returns
    -------
    list[grpc.aio.ClientInterceptor]
        One per call kind.
    """
    return aio_call_defaults_interceptors(CallDefaults(timeout=timeout))


def sync_default_deadline_interceptor(timeout: float) -> SyncCallDefaultsInterceptor:
    """The sync-grpc counterpart of :func:`default_deadline_interceptors`.

    Parameters
    ----------
    timeout
        Seconds.

    Returns
    -------
    SyncCallDefaultsInterceptor
        Use with ``grpc.intercept_channel``.
    """
    return SyncCallDefaultsInterceptor(CallDefaults(timeout=timeout))


def open_channel(config: ChannelConfig, *, intercept_bidi_streams: bool = True) -> grpc.aio.Channel:
    """Open a grpc.aio channel (call from inside the event loop that will use it).

    Parameters
    ----------
    config
        Target, TLS, token, deadline, retries, limits.
    intercept_bidi_streams
        False: bidirectional-streaming calls get neither the default deadline nor the token
        (pass ``timeout`` and :func:`~sedna.runtime.auth.bearer_token_metadata` per call).
        grpc.aio runs an intercepted bidi call written with ``write()`` through a proxy
        task that it leaves pending when the server ends the call first (grpc/grpc#37355);
        a long-lived stream that outlives server restarts then logs "Task was destroyed but
        it is pending!" at ERROR on every reconnect.

    Returns
    -------
    grpc.aio.Channel
        The channel; close it with ``await channel.close()`` or ``async with``.

    Raises
    ------
    sedna.runtime.tls.TLSConfigError
        A TLS file is missing or invalid.
    """
    interceptors: list[grpc.aio.ClientInterceptor] = default_deadline_interceptors(
        config.default_timeout
    )
    if config.token is not None:
        interceptors += bearer_token_interceptors(config.token)
    if not intercept_bidi_streams:
        interceptors = [
            i for i in interceptors if not isinstance(i, grpc.aio.StreamStreamClientInterceptor)
        ]
    interceptors += config.interceptors
    options = config.channel_options()
    if config.secure:
        return grpc.aio.secure_channel(
            config.target, config._credentials(), options=options, interceptors=interceptors
        )
    return grpc.aio.insecure_channel(config.target, options=options, interceptors=interceptors)


def open_sync_channel(config: ChannelConfig) -> grpc.Channel:
    """Open a sync grpc channel with the same behaviour as :func:`open_channel`.

    Parameters
    ----------
    config
        Target, TLS, token, deadline, retries, limits (``interceptors`` must be empty:
        they are grpc.aio interceptors; wrap the result with ``grpc.intercept_channel``).

    Returns
    -------
    grpc.Channel
        The channel; close it with ``channel.close()`` or ``with``.

    Raises
    ------
    ValueError
        ``config.interceptors`` is not empty.
    sedna.runtime.tls.TLSConfigError
        A TLS file is missing or invalid.
    """
    if config.interceptors:
        raise ValueError("ChannelConfig.interceptors are grpc.aio interceptors; use open_channel")
    options = config.channel_options()
    channel = (
        grpc.secure_channel(config.target, config._credentials(), options=options)
        if config.secure
        else grpc.insecure_channel(config.target, options=options)
    )
    interceptors: list[SyncCallDefaultsInterceptor] = [
        sync_default_deadline_interceptor(config.default_timeout)
    ]
    if config.token is not None:
        interceptors.append(sync_bearer_token_interceptor(config.token))
    return grpc.intercept_channel(channel, *interceptors)
