"""Settings of the inference server (``SEDNA_INFERENCE_*`` environment variables)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from sedna.runtime import ServiceSettings
from sedna_inference.backends.base import RuntimeOptions
from sedna_inference.repository import DEFAULT_CACHE_DIR

__all__ = [
    "DEFAULT_METRICS_PORT",
    "DEFAULT_PORT",
    "UPSTREAM_BIND_IP",
    "UPSTREAM_BIND_PORT",
    "UPSTREAM_FORMAT_ENV",
    "InferenceSettings",
    "default_intra_op_threads",
    "upstream_model",
]

DEFAULT_PORT = 8001
DEFAULT_METRICS_PORT = 8002
UPSTREAM_BIND_IP: Final = "0.0.0.0"
"""Bind address of a JointInferenceService cloud worker when ``BIG_MODEL_BIND_IP`` is unset."""
UPSTREAM_BIND_PORT: Final = 5000
"""Port of a JointInferenceService cloud worker when ``BIG_MODEL_BIND_PORT`` is unset."""
UPSTREAM_FORMAT_ENV: Final = "MODEL_FORMAT"
"""The cloud worker's model format (a Sedna addition to upstream's env contract)."""


def upstream_model(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The model a JointInferenceService cloud worker serves, from the upstream env contract.

    Parameters
    ----------
    environ
        The process environment.

    Returns
    -------
    tuple of (str, str) or None
        ``(name, MODEL_URL)`` with the name from ``BIG_MODEL_NAME``, else ``SERVICE_NAME``,
        else ``JOB_NAME`` (what the edge calls it); None when ``MODEL_URL`` or every name
        is unset or blank.
    """
    url = environ.get("MODEL_URL", "").strip()
    names = (environ.get(key, "").strip() for key in ("BIG_MODEL_NAME", "SERVICE_NAME", "JOB_NAME"))
    name = next((n for n in names if n), "")
    return (name, url) if url and name else None


def _upstream_port(environ: Mapping[str, str]) -> int:
    text = environ.get("BIG_MODEL_BIND_PORT", "").strip()
    if not text:
        return UPSTREAM_BIND_PORT
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"BIG_MODEL_BIND_PORT must be a port number, not {text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"BIG_MODEL_BIND_PORT must be 0..65535, not {port}")
    return port


def default_intra_op_threads() -> int:
    """Intra-op threads when unset: the CPUs this process may use, minus one (at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus - 1)


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
        description=(
            "Name clients call the model by; needs --model-path. Without both, MODEL_URL is"
            " served as SERVICE_NAME (a joint-inference cloud worker), else no model."
        ),
    )
    model_path: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "Model to serve as --model-name: a local file (.onnx, .pt/.pth, .keras, .h5) or"
            " directory (e.g. a SavedModel), s3://bucket/key or s3://bucket/prefix/"
            " (credentials from S3_ENDPOINT_URL, ACCESS_KEY_ID, SECRET_ACCESS_KEY), or an"
            " http(s):// URL; remote archives (.tar.gz, .zip, ...) are unpacked first."
        ),
    )
    model_format: str | None = Field(
        default=None,
        description=(
            "The Model resource's format (e.g. onnx, pt, savedmodel, keras): picks the backend"
            " when the model file's suffix does not (a URL without one). In the cloud worker"
            " mode MODEL_FORMAT is used unless this is set."
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
    inline_compute_ms: float = Field(
        default=2.0,
        ge=0,
        le=1_000,
        description=(
            "Run a lone request on the event loop, without the hop to the model's worker"
            " thread (~0.2 ms), while the model's single-request calls average at most this"
            " long (ms); 0: always on the worker thread."
        ),
    )

    intra_op_threads: int | None = Field(
        default=None,
        ge=0,
        le=1024,
        description=(
            "ONNX Runtime threads inside one operator. Unset: one per CPU this process may"
            " use, minus one left to the server's gRPC and event-loop threads (at least 1);"
            " 0: ONNX Runtime's own choice (one per physical core)."
        ),
    )
    inter_op_threads: int = Field(
        default=0,
        ge=0,
        le=1024,
        description=(
            "ONNX Runtime threads running independent operators (parallel execution mode"
            " only); 0: ONNX Runtime's choice."
        ),
    )
    ort_spinning: bool = Field(
        default=False,
        description=(
            "Let idle ONNX Runtime threads spin-wait for work (ONNX Runtime's default): a"
            " little less latency on a dedicated host, but the spinning takes CPU from the"
            " server's own threads when cores are shared."
        ),
    )

    @field_validator("model_path", mode="before")
    @classmethod
    def _path_as_text(cls, value: object) -> object:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("model_format", mode="before")
    @classmethod
    def _blank_format_is_none(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip() or None
        return value

    @model_validator(mode="after")
    def _model_name_and_path(self) -> Self:
        if (self.model_name is None) != (self.model_path is None):
            raise ValueError("model_name and model_path must be given together")
        if self.model_name is None:
            self._apply_upstream_env(os.environ)
        return self

    def runtime_options(self) -> RuntimeOptions:
        """The backend runtime's threads and spinning (ONNX Runtime)."""
        intra = self.intra_op_threads
        return RuntimeOptions(
            intra_op_threads=default_intra_op_threads() if intra is None else intra,
            inter_op_threads=self.inter_op_threads,
            spinning=self.ort_spinning,
        )

    def _apply_upstream_env(self, environ: Mapping[str, str]) -> None:
        """Act as a JointInferenceService cloud worker when its env contract is present.

        Without --model-name/--model-path, ``MODEL_URL`` is served under ``BIG_MODEL_NAME``
        / ``SERVICE_NAME`` / ``JOB_NAME`` on ``BIG_MODEL_BIND_IP`` (default 0.0.0.0) and
        ``BIG_MODEL_BIND_PORT`` (default 5000); an explicit --host or --port still wins.
        ``MODEL_FORMAT`` (not part of upstream's contract) is the model's format unless
        --model-format is given.
        """
        found = upstream_model(environ)
        if found is None:
            return
        self.model_name, self.model_path = found
        if "port" not in self.model_fields_set:
            self.port = _upstream_port(environ)
        if "host" not in self.model_fields_set:
            self.host = environ.get("BIG_MODEL_BIND_IP", "").strip() or UPSTREAM_BIND_IP
        if self.model_format is None:
            self.model_format = environ.get(UPSTREAM_FORMAT_ENV, "").strip() or None
