"""Settings of the LocalController (``SEDNA_LC_*`` environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from sedna.runtime import ServiceSettings

__all__ = ["DEFAULT_HTTP_PORT", "DEFAULT_METRICS_PORT", "DEFAULT_PORT", "LCSettings"]

DEFAULT_HTTP_PORT = 9100
DEFAULT_PORT = 9101
DEFAULT_METRICS_PORT = 9102


class LCSettings(ServiceSettings):
    """Settings of the LocalController: the shared service settings under ``SEDNA_LC_``.

    Upstream's variables ``NODENAME``, ``GM_ADDRESS`` and ``BIND_PORT`` are honoured too (see
    :func:`sedna_lc.__main__.upstream_environment`).
    """

    model_config = SettingsConfigDict(env_prefix="SEDNA_LC_")

    port: int = Field(
        default=DEFAULT_PORT, ge=0, le=65535, description="gRPC port; 0 picks a free port."
    )
    metrics_port: int | None = Field(
        default=DEFAULT_METRICS_PORT,
        ge=0,
        le=65535,
        validate_default=True,
        description="/metrics port; 0 picks a free port, none disables the endpoint.",
    )
    node_name: str = Field(
        default="",
        description="This node's name (required; upstream: NODENAME).",
    )
    gm_address: str = Field(
        default="127.0.0.1:9000",
        min_length=1,
        description="GlobalManager gRPC address HOST:PORT (upstream: GM_ADDRESS).",
    )
    gm_token: SecretStr | None = Field(
        default=None, description="Bearer token presented to the GlobalManager."
    )
    gm_tls_ca_file: Path | None = Field(
        default=None, description="CA bundle to verify the GlobalManager's TLS certificate."
    )
    http_host: str = Field(
        default="127.0.0.1", min_length=1, description="Bind address of the worker HTTP API."
    )
    http_port: int = Field(
        default=DEFAULT_HTTP_PORT,
        ge=0,
        le=65535,
        description="Port of the upstream-compatible worker HTTP API "
        "(POST /sedna/workers/NAME/info; upstream: BIND_PORT).",
    )
    data_dir: Path = Field(
        default=Path("sedna-lc-data"),
        description="Local state: SQLite database with the outbox, worker logs and work dirs.",
    )
    dataset_poll_seconds: float = Field(
        default=5.0, gt=0, allow_inf_nan=False, description="How often datasets are re-counted."
    )
    keep_workers_on_exit: bool = Field(
        default=False,
        description="Leave worker processes running when the LC stops (they are adopted "
        "again on restart); by default a clean stop stops them.",
    )
    advertise_host: str = Field(
        default="",
        description="Host the GM and the CLI use to reach this LC (sedna logs); empty uses "
        "the bind host, or this machine's hostname when binding all interfaces.",
    )
    rootfs: Path | None = Field(
        default=None,
        description="Prefix for host paths in dataset URLs (upstream mounts / at /rootfs).",
    )
