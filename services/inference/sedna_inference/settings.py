"""Settings of the inference server (``SEDNA_INFERENCE_*`` environment variables)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from sedna.runtime import ServiceSettings
from sedna_inference.repository import DEFAULT_CACHE_DIR

__all__ = ["DEFAULT_METRICS_PORT", "DEFAULT_PORT", "InferenceSettings"]

DEFAULT_PORT = 8001
DEFAULT_METRICS_PORT = 8002


class InferenceSettings(ServiceSettings):
    """Settings of the inference server: the shared service settings under ``SEDNA_INFERENCE_``."""

    model_config = SettingsConfigDict(env_prefix="SEDNA_INFERENCE_")

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

    model_name: str | None = Field(
        default=None,
        min_length=1,
        description="Name clients call the model by; needs --model-path. None serves no model.",
    )
    model_path: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "Model to serve as --model-name: a local file (.onnx), s3://bucket/key (credentials"
            " from S3_ENDPOINT_URL, ACCESS_KEY_ID, SECRET_ACCESS_KEY) or an http(s):// URL."
        ),
    )
    model_cache_dir: Path = Field(
        default=DEFAULT_CACHE_DIR, description="Where s3:// and http(s):// models are downloaded."
    )
    reload_interval_seconds: float = Field(
        default=0.0,
        ge=0,
        le=86_400,
        description="How often to check the model for a new version and hot-reload it; 0 never.",
    )
    model_version: str = Field(default="1", min_length=1, description="Version served.")
    max_batch_size: int = Field(
        default=8, ge=1, le=4096, description="Most requests per backend call; 1 disables batching."
    )
    max_queue_delay_ms: float = Field(
        default=2.0, ge=0, le=10_000, description="Longest a batch waits for more requests (ms)."
    )

    @field_validator("model_path", mode="before")
    @classmethod
    def _path_as_text(cls, value: object) -> object:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @model_validator(mode="after")
    def _model_name_and_path(self) -> Self:
        if (self.model_name is None) != (self.model_path is None):
            raise ValueError("model_name and model_path must be given together")
        return self
