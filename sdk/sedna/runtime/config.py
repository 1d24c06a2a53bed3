"""Service settings: one pydantic-settings model shared by every Sedna service.

Values come from, highest precedence first:

1. explicit values passed by the caller (``overrides``, typically CLI flags);
2. environment variables (``SEDNA_`` prefix by default, each service its own prefix);
3. a YAML file (``config_file`` or the ``SEDNA_CONFIG_FILE`` environment variable);
4. the defaults declared on the model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

__all__ = [
    "CONFIG_FILE_ENV",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "ConfigError",
    "LogFormat",
    "LogLevel",
    "ServiceSettings",
    "format_validation_error",
    "load_settings",
    "read_token_file",
    "require_positive",
]

CONFIG_FILE_ENV = "SEDNA_CONFIG_FILE"
"""Environment variable naming the YAML config file when none is passed explicitly."""

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Default gRPC message-size limit (both directions): large enough for model weights chunks."""

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["json", "console"]

_NONE_STRINGS = frozenset({"", "none", "null"})

# The YAML values of the load_settings() call in progress. A context variable rather than a
# class attribute so that concurrent loads (threads, tasks) never see each other's file.
_yaml_values: ContextVar[dict[str, Any] | None] = ContextVar("_sedna_yaml_values", default=None)

S = TypeVar("S", bound="ServiceSettings")


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or not a YAML mapping."""


def _read_yaml_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file is a directory, not a file: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of setting names to values, "
            f"not a {type(data).__name__}"
        )
    return {str(key): value for key, value in data.items()}


class _YamlFileSource(PydanticBaseSettingsSource):
    """Settings from the YAML file: the one given to load_settings(), else $SEDNA_CONFIG_FILE."""

    def __init__(self, settings_cls: type[BaseSettings], config_file_env: str) -> None:
        super().__init__(settings_cls)
        self._config_file_env = config_file_env

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ returns the whole mapping at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values = _yaml_values.get()
        if values is None:
            env_path = os.environ.get(self._config_file_env, "").strip()
            values = _read_yaml_file(Path(env_path)) if env_path else {}
        # Reuse pydantic-settings' init-kwargs matching (case, aliases, extras) for the file.
        return InitSettingsSource(self.settings_cls, init_kwargs=values)()


def _none_if_blank(value: Any) -> Any:
    """Map "", "none" and "null" to None so env vars can unset optional settings."""
    if isinstance(value, str) and value.strip().lower() in _NONE_STRINGS:
        return None
    return value


def _check_readable_file(path: Path | None) -> Path | None:
    if path is None:
        return None
    if not path.exists():
        raise ValueError(f"file not found: {path}")
    if not path.is_file():
        raise ValueError(f"not a regular file: {path}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"file is not readable: {path}")
    return path


def _check_token(token: str) -> None:
    if not token:
        raise ValueError("tokens must not be empty")
    # A token travels in the "authorization: Bearer <token>" header: it must be one
    # printable, whitespace-free ASCII word or gRPC rejects the metadata.
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise ValueError("tokens must be printable ASCII without whitespace")


def require_positive(settings: object, *names: str, optional: Iterable[str] = ()) -> None:
    """Check that the attributes ``names`` of ``settings`` (e.g. a config dataclass) are > 0.

    Parameters
    ----------
    settings
        The object to check, typically from its ``__post_init__``.
    names
        Attributes that must be > 0.
    optional
        Attributes that must be > 0 or None (None: a default derived from others).

    Raises
    ------
    ValueError
        Naming the first attribute at fault and its value, e.g. ``heartbeat_seconds must be
        > 0, not 0``.
    """
    optional = tuple(optional)
    for name in (*names, *optional):
        value = getattr(settings, name)
        if value is None and name in optional:
            continue
        if not value > 0:
            raise ValueError(f"{name} must be > 0, not {value!r}")


def read_token_file(path: Path) -> list[SecretStr]:
    """Read bearer tokens from a file: one per line, blank lines and ``#`` comments ignored.

    Parameters
    ----------
    path
        The token file (e.g. a mounted Kubernetes Secret).

    Returns
    -------
    list[SecretStr]
        The tokens, in file order.

    Raises
    ------
    ValueError
        The file cannot be read or holds an invalid token (the token is never echoed).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read token file {path}: {exc.strerror or exc}") from None
    tokens: list[SecretStr] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            _check_token(line)
        except ValueError as exc:
            raise ValueError(f"{path} line {number}: {exc}") from None
        tokens.append(SecretStr(line))
    return tokens


class ServiceSettings(BaseSettings):
    """Settings every Sedna gRPC service shares.

    Services subclass it to add their own fields and environment prefix::

        class GMSettings(ServiceSettings):
            model_config = SettingsConfigDict(env_prefix="SEDNA_GM_")
            store_url: str = "sqlite:///gm.db"

    Load it with :func:`load_settings` to get the documented precedence
    (explicit overrides > environment > YAML file > defaults).
    """

    model_config = SettingsConfigDict(
        env_prefix="SEDNA_",
        extra="forbid",
        # Tokens and passwords must not be printed when a value fails validation.
        hide_input_in_errors=True,
    )

    config_file_env: ClassVar[str] = CONFIG_FILE_ENV
    """Environment variable that names the YAML file; subclasses may change it."""

    host: str = Field(default="127.0.0.1", min_length=1, description="gRPC bind address.")
    port: int = Field(default=0, ge=0, le=65535, description="gRPC port; 0 picks a free port.")
    metrics_host: str = Field(
        default="127.0.0.1", min_length=1, description="Bind address of the /metrics endpoint."
    )
    metrics_port: int | None = Field(
        default=0,
        ge=0,
        le=65535,
        validate_default=True,
        description="/metrics port; 0 picks a free port, None disables the endpoint.",
    )

    tls_cert_file: Path | None = Field(default=None, description="Server certificate (PEM).")
    tls_key_file: Path | None = Field(
        default=None, validate_default=True, description="Server private key (PEM)."
    )
    tls_client_ca_file: Path | None = Field(
        default=None,
        validate_default=True,
        description="CA bundle for client certificates; when set, clients must present one.",
    )

    auth_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Accepted bearer tokens (JSON list or comma-separated in the environment).",
    )
    auth_token_file: Path | None = Field(
        default=None, description="File with more accepted tokens, one per line."
    )

    max_receive_message_bytes: int = Field(
        default=DEFAULT_MAX_MESSAGE_BYTES,
        gt=0,
        description="Largest request message accepted; larger ones fail RESOURCE_EXHAUSTED.",
    )
    max_send_message_bytes: int = Field(
        default=DEFAULT_MAX_MESSAGE_BYTES, gt=0, description="Largest response message sent."
    )
    max_concurrent_rpcs: int | None = Field(
        default=None, gt=0, description="Cap on concurrent RPCs; none means no cap."
    )

    keepalive_time_seconds: float = Field(
        default=60.0,
        gt=0,
        allow_inf_nan=False,
        description="Interval of server keepalive pings on idle connections.",
    )
    keepalive_timeout_seconds: float = Field(
        default=20.0,
        gt=0,
        allow_inf_nan=False,
        description="Time to wait for a keepalive ack before closing.",
    )
    keepalive_min_ping_interval_seconds: float = Field(
        default=10.0,
        ge=0,
        allow_inf_nan=False,
        description="Most frequent client keepalive ping accepted; faster clients get GOAWAY.",
    )

    # Below Kubernetes' default terminationGracePeriodSeconds (30 s) so a drain finishes
    # before the kubelet sends SIGKILL.
    drain_seconds: float = Field(
        default=25.0,
        ge=0,
        allow_inf_nan=False,
        description="Graceful-shutdown deadline for in-flight RPCs.",
    )

    log_level: LogLevel = Field(
        default="INFO", description="Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL."
    )
    log_format: LogFormat = Field(
        default="json", description="Log format: json (one object per line) or console."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order the sources: explicit > environment (> .env) > YAML file > secrets dir."""
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            _YamlFileSource(settings_cls, cls.config_file_env),
            file_secret_settings,
        )

    @field_validator(
        "metrics_port",
        "tls_cert_file",
        "tls_key_file",
        "tls_client_ca_file",
        "auth_token_file",
        "max_concurrent_rpcs",
        mode="before",
    )
    @classmethod
    def _blank_means_none(cls, value: Any) -> Any:
        return _none_if_blank(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _normalise_level(cls, value: Any) -> Any:
        if isinstance(value, str):
            upper = value.strip().upper()
            return "WARNING" if upper == "WARN" else upper
        return value

    @field_validator("log_format", mode="before")
    @classmethod
    def _normalise_format(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("auth_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError:
                    # Do not echo the text: it holds tokens.
                    raise ValueError("not a valid JSON list of tokens") from None
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("auth_tokens")
    @classmethod
    def _check_tokens(cls, value: list[SecretStr]) -> list[SecretStr]:
        for token in value:
            _check_token(token.get_secret_value())
        return value

    @field_validator("tls_cert_file", "tls_client_ca_file", "auth_token_file")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        return _check_readable_file(value)

    @field_validator("auth_token_file")
    @classmethod
    def _token_file_valid(cls, value: Path | None) -> Path | None:
        if value is not None:
            read_token_file(value)
        return value

    @field_validator("tls_key_file")
    @classmethod
    def _key_pairs_with_cert(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        cert = info.data.get("tls_cert_file")
        if value is None and cert is not None:
            raise ValueError("required when tls_cert_file is set")
        if value is not None and cert is None and "tls_cert_file" in info.data:
            raise ValueError("tls_cert_file must be set too (a key alone cannot serve TLS)")
        return _check_readable_file(value)

    @field_validator("tls_client_ca_file")
    @classmethod
    def _client_ca_needs_server_cert(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and info.data.get("tls_cert_file") is None:
            raise ValueError(
                "mutual TLS needs a server certificate: set tls_cert_file/tls_key_file"
            )
        return value

    @field_validator("metrics_port")
    @classmethod
    def _metrics_port_differs(cls, value: int | None, info: ValidationInfo) -> int | None:
        port = info.data.get("port")
        if value and port and value == port:
            raise ValueError(f"must differ from port ({port})")
        return value

    @property
    def tls_enabled(self) -> bool:
        """Whether the server serves TLS."""
        return self.tls_cert_file is not None

    @property
    def mtls_enabled(self) -> bool:
        """Whether clients must present a certificate signed by ``tls_client_ca_file``."""
        return self.tls_client_ca_file is not None

    def resolved_auth_tokens(self) -> list[SecretStr]:
        """All accepted tokens: ``auth_tokens`` plus those in ``auth_token_file``.

        The file is read on every call so a rotated Secret is picked up by the next
        server start without a config change.

        Returns
        -------
        list[SecretStr]
            The tokens; empty means token authentication is off.
        """
        tokens = list(self.auth_tokens)
        if self.auth_token_file is not None:
            tokens.extend(read_token_file(self.auth_token_file))
        return tokens


def load_settings(
    settings_cls: type[S],
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> S:
    """Build settings from overrides, the environment, a YAML file and defaults.

    Parameters
    ----------
    settings_cls
        :class:`ServiceSettings` or a subclass (its ``env_prefix`` names the env vars).
    config_file
        YAML file of ``field: value`` pairs. ``None`` falls back to the file named by
        ``$SEDNA_CONFIG_FILE`` (``settings_cls.config_file_env``); neither means no file.
    overrides
        Explicit values (CLI flags); they beat every other source. Entries whose value is
        ``None`` are skipped, so an option the user did not give never masks the
        environment or the file (use ``"none"`` to set an optional setting to None).

    Returns
    -------
    S
        The validated settings.

    Raises
    ------
    ConfigError
        The YAML file is missing, unreadable, invalid YAML or not a mapping.
    pydantic.ValidationError
        A value is invalid; :func:`format_validation_error` renders it as ``field: message``.
    """
    if config_file is None:
        env_path = os.environ.get(settings_cls.config_file_env, "").strip()
        path = Path(env_path) if env_path else None
    else:
        path = Path(config_file)
    values = _read_yaml_file(path) if path is not None else {}
    explicit = {key: value for key, value in (overrides or {}).items() if value is not None}
    token = _yaml_values.set(values)
    try:
        return settings_cls(**explicit)
    finally:
        _yaml_values.reset(token)


def _format_loc(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "(settings)"


def format_validation_error(exc: ValidationError) -> str:
    """Render a settings validation error as one ``field: message`` line per problem.

    Input values are left out on purpose: they may be secrets.

    Parameters
    ----------
    exc
        The error raised by :func:`load_settings` or a settings constructor.

    Returns
    -------
    str
        e.g. ``"port: Input should be less than or equal to 65535"``.
    """
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        message = error["msg"]
        # pydantic prefixes messages raised from validators with "Value error, ".
        message = message.removeprefix("Value error, ")
        lines.append(f"{_format_loc(tuple(error['loc']))}: {message}")
    return "\n".join(lines)
