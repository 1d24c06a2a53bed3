"""Settings of the GlobalManager (``SEDNA_GM_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from sedna.runtime import ServiceSettings

__all__ = ["DEFAULT_METRICS_PORT", "DEFAULT_PORT", "GMSettings"]

DEFAULT_PORT = 9000
DEFAULT_METRICS_PORT = 9001


class GMSettings(ServiceSettings):
    """Settings of the GlobalManager: the shared service settings under ``SEDNA_GM_``."""

    model_config = SettingsConfigDict(env_prefix="SEDNA_GM_")

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
