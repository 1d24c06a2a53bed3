"""The shared service runtime: one way to run a gRPC server and to open a channel.

Servers get health, reflection, Prometheus metrics, TLS/mTLS, bearer tokens, explicit
limits and a graceful drain; channels get deadlines, retries for idempotent calls,
TLS and tokens. See ``docs/runtime.md``.
"""

from sedna.runtime.auth import (
    AUTHORIZATION_METADATA_KEY,
    DEFAULT_EXEMPT_SERVICES,
    TokenAuthInterceptor,
    bearer_token_interceptors,
    bearer_token_metadata,
    sync_bearer_token_interceptor,
)
from sedna.runtime.channel import (
    DEFAULT_TIMEOUT_SECONDS,
    ChannelConfig,
    RetryPolicy,
    default_deadline_interceptors,
    open_channel,
    open_sync_channel,
    sync_default_deadline_interceptor,
)
from sedna.runtime.config import (
    CONFIG_FILE_ENV,
    DEFAULT_MAX_MESSAGE_BYTES,
    ConfigError,
    ServiceSettings,
    format_validation_error,
    load_settings,
    read_token_file,
    require_positive,
)
from sedna.runtime.logging import (
    REDACTED,
    RedactingFilter,
    configure_logging,
    redact_text,
    register_secret,
)
from sedna.runtime.metrics import (
    GrpcServerMetrics,
    MetricsEndpoint,
    MetricsInterceptor,
    new_registry,
)
from sedna.runtime.server import (
    HEALTH_SERVICE,
    REFLECTION_SERVICE,
    ServerStartError,
    ServiceServer,
    run_service,
)
from sedna.runtime.tasks import wait_first
from sedna.runtime.tls import TLSConfigError, client_credentials, server_credentials

__all__ = [
    "AUTHORIZATION_METADATA_KEY",
    "CONFIG_FILE_ENV",
    "DEFAULT_EXEMPT_SERVICES",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_TIMEOUT_SECONDS",
    "HEALTH_SERVICE",
    "REDACTED",
    "REFLECTION_SERVICE",
    "ChannelConfig",
    "ConfigError",
    "GrpcServerMetrics",
    "MetricsEndpoint",
    "MetricsInterceptor",
    "RedactingFilter",
    "RetryPolicy",
    "ServerStartError",
    "ServiceServer",
    "ServiceSettings",
    "TLSConfigError",
    "TokenAuthInterceptor",
    "bearer_token_interceptors",
    "bearer_token_metadata",
    "client_credentials",
    "configure_logging",
    "default_deadline_interceptors",
    "format_validation_error",
    "load_settings",
    "new_registry",
    "open_channel",
    "open_sync_channel",
    "read_token_file",
    "redact_text",
    "register_secret",
    "require_positive",
    "run_service",
    "server_credentials",
    "sync_bearer_token_interceptor",
    "sync_default_deadline_interceptor",
    "wait_first",
]
