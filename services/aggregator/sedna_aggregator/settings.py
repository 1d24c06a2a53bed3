"""Settings of the aggregation server (``SEDNA_AGGREGATOR_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from sedna.runtime import ServiceSettings

__all__ = ["DEFAULT_METRICS_PORT", "DEFAULT_PORT", "AggregatorSettings"]

DEFAULT_PORT = 7363
DEFAULT_METRICS_PORT = 7364


class AggregatorSettings(ServiceSettings):
    """Settings of the aggregation server: the shared settings under ``SEDNA_AGGREGATOR_``."""

    model_config = SettingsConfigDict(env_prefix="SEDNA_AGGREGATOR_")

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
