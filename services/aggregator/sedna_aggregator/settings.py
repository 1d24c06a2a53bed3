"""Settings of the aggregation server (``SEDNA_AGGREGATOR_*`` environment variables)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Self
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from sedna.runtime import ServiceSettings
from sedna.service.aggregation_client import DEFAULT_AGG_BULK_PORT
from sedna.tensor import DEFAULT_MAX_TENSORS
from sedna_aggregator.core import (
    BelowMinimum,
    SessionConfig,
    SessionConfigError,
    TargetMode,
    make_aggregator,
)

__all__ = [
    "DEFAULT_BULK_PORT",
    "DEFAULT_MAX_UPDATE_BYTES",
    "DEFAULT_METRICS_PORT",
    "DEFAULT_PORT",
    "DEFAULT_SEND_CHUNK_BYTES",
    "AggregatorSettings",
]

DEFAULT_PORT = 7363
DEFAULT_METRICS_PORT = 7364
DEFAULT_BULK_PORT = DEFAULT_AGG_BULK_PORT
DEFAULT_MAX_UPDATE_BYTES = 2 << 30
"""2 GiB: the largest update (all layers together) a PushUpdate may announce."""
DEFAULT_SEND_CHUNK_BYTES = 1 << 20
"""1 MiB: chunk size of PullGlobalWeights (see ``send_chunk_bytes``)."""


class AggregatorSettings(ServiceSettings):
    """Settings of the aggregation server: the shared settings under ``SEDNA_AGGREGATOR_``.

    The session fields (``aggregation`` ... ``proximal_mu``) are the :class:`SessionConfig` of
    every session this server creates (the proto's ``JoinSessionRequest`` carries no config:
    one aggregator serves one job, as upstream's aggregation worker).
    """

    model_config = SettingsConfigDict(env_prefix="SEDNA_AGGREGATOR_", populate_by_name=True)

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

    bulk_port: int | None = Field(
        default=DEFAULT_BULK_PORT,
        ge=0,
        le=65535,
        description="Bulk port: the weights of pushes and pulls travel there as raw bytes on "
        "a TCP (or, with tls_cert_file, TLS) connection instead of in gRPC messages; on the "
        "federated-learning bench that cost the server 40% less CPU and the trainers two "
        "thirds less (bulk_transfer.proto; advertised to clients in JoinSession, which fall "
        "back to gRPC when they cannot reach it). 0 picks "
        "a free port; none disables it. If the default port is taken, the server runs "
        "without it and says so; a port given explicitly must be free.",
    )
    bulk_idle_timeout: float = Field(
        default=600.0,
        gt=0,
        description="Seconds a bulk connection may stay idle between requests before the "
        "server closes it (clients reconnect).",
    )

    # -- checkpoints and limits ------------------------------------------------------------
    checkpoint_dir: Path | None = Field(
        default=None,
        description="Directory of the sessions' checkpoints (npz + JSON); none: no checkpoints "
        "(a restarted aggregator starts its jobs over).",
    )
    max_update_bytes: int = Field(
        default=DEFAULT_MAX_UPDATE_BYTES,
        gt=0,
        description="Largest update (all tensors together) a PushUpdate may announce; larger "
        "ones are refused with INVALID_ARGUMENT before anything is allocated.",
    )
    max_update_tensors: int = Field(
        default=DEFAULT_MAX_TENSORS, gt=0, description="Most tensors (layers) in one update."
    )
    max_concurrent_updates: int = Field(
        default=2,
        gt=0,
        description="Updates received at once; further PushUpdate calls wait their turn. Each "
        "chunk is added into the round's sums as it arrives, so an update in flight holds a "
        "chunk message, not a model (measured K=8, 100 MB model: 2 is the fastest; 4 and 1 "
        "were 16% and 32% slower).",
    )
    weights_dir: Path | None = Field(
        default=None,
        description="Where each round's aggregate is kept once checkpointed: an unlinked file "
        "in this directory, mapped read-only and served to the pulls from there, so the "
        "process holds the next round's sums but not a second model (its bytes sit in the "
        "kernel's page cache, reclaimable). None: the system's temporary directory ($TMPDIR). "
        "Put it on a disk, not a tmpfs, for the saving to be real.",
    )
    weights_in_memory: bool = Field(
        default=False,
        description="Keep each round's aggregate in the process's memory instead of a file "
        "(weights_dir is then unused): about one model more of peak memory.",
    )
    send_chunk_bytes: int = Field(
        default=DEFAULT_SEND_CHUNK_BYTES,
        gt=0,
        description="Chunk size of the global weights streamed by PullGlobalWeights. 1 MiB: "
        "smaller than the clients' 4 MiB upload chunks because all K pulls stream at once and "
        "each holds a few messages in flight (measured, K=8 and a 100 MB model: 4 MiB pull "
        "chunks raised the peak RSS by ~90 MiB and were no faster).",
    )
    max_sessions: int = Field(
        default=64, gt=0, description="Sessions (jobs) served at once; more are refused."
    )
    http2_bdp_probe: bool = Field(
        default=False,
        description="gRPC's HTTP/2 bandwidth-delay probing (channel argument "
        "grpc.http2.bdp_probe) on the server. Off by default: probing grows every upload "
        "stream's receive window to several MB on a fast link, and all K clients upload at "
        "once while max_concurrent_updates are served, so the waiting streams' buffered bytes "
        "added ~0.8x a model to the peak RSS (measured K=8, 100 MB model: 520 MiB with it, "
        "350 MiB without). Turn it on for high-latency links, where a fixed window limits "
        "upload speed.",
    )

    exit_when_done: bool = Field(
        default=False,
        description="Drain and exit once every session served is finished, as upstream's "
        "aggregation worker did: 0 when all completed and their trainers left (or "
        "exit_grace_seconds after completion), 1 as soon as one failed. Lets a "
        "FederatedLearningJob's aggregation worker run sedna-aggregator directly.",
    )
    exit_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        description="With exit_when_done: seconds after completion to wait for trainers still "
        "joined (pulling the last aggregate) before exiting anyway.",
    )

    # -- Redis checkpoints -------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SEDNA_AGGREGATOR_REDIS_URL", "REDIS_URL", "redis_url"),
        description="redis://host:port/db (rediss:// for TLS): checkpoints go to Redis instead "
        "of checkpoint_dir; none: checkpoint_dir. No password in it: use redis_password.",
    )
    redis_password: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "SEDNA_AGGREGATOR_REDIS_PASSWORD", "REDIS_PASSWORD", "redis_password"
        ),
        description="The Redis password (environment or config file only; never logged).",
    )
    redis_key_prefix: str = Field(
        default="sedna:aggregator:",
        min_length=1,
        description="Prefix of the aggregator's Redis keys (aggregators sharing a Redis need "
        "distinct ones unless they serve distinct sessions).",
    )

    # -- S3 transmitter (the controller's environment for spec.transmitter.s3) --------------
    agg_data_path: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "SEDNA_AGGREGATOR_AGG_DATA_PATH", "AGG_DATA_PATH", "agg_data_path"
        ),
        description="s3://bucket/prefix of the job's weight objects (AGG_DATA_PATH, set for "
        "TRANSMITTER=s3): updates are read from, and aggregates written to, objects there; "
        "none: tensors are streamed only.",
    )
    s3_endpoint_url: str = Field(
        default="",
        validation_alias=AliasChoices(
            "SEDNA_AGGREGATOR_S3_ENDPOINT_URL", "S3_ENDPOINT_URL", "s3_endpoint_url"
        ),
        description="S3 endpoint, http(s)://host[:port] (S3_ENDPOINT_URL); empty: AWS.",
    )
    s3_access_key_id: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices(
            "SEDNA_AGGREGATOR_S3_ACCESS_KEY_ID", "ACCESS_KEY_ID", "s3_access_key_id"
        ),
        description="S3 access key (ACCESS_KEY_ID; environment only, never logged).",
    )
    s3_secret_access_key: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices(
            "SEDNA_AGGREGATOR_S3_SECRET_ACCESS_KEY", "SECRET_ACCESS_KEY", "s3_secret_access_key"
        ),
        description="S3 secret key (SECRET_ACCESS_KEY; environment only, never logged).",
    )

    # -- session defaults --------------------------------------------------------------------
    aggregation: str = Field(
        default="FedAvg", min_length=1, description="Aggregation plug-in (FedAvg, FedAdam...)."
    )
    aggregation_parameters: Annotated[dict[str, Any], NoDecode] = Field(
        default_factory=dict,
        description="The plug-in's keyword arguments as a JSON object.",
    )
    exit_round: int = Field(default=1, ge=1, description="Rounds before a session completes.")
    min_participants: int = Field(
        default=1, ge=1, description="Updates a round needs at its deadline."
    )
    expected_clients: int | None = Field(
        default=None,
        ge=1,
        description="Trainers of the job (PARTICIPANTS_COUNT): the first round waits for them "
        "(or join_grace_seconds).",
    )
    client_fraction: float = Field(
        default=1.0, gt=0.0, le=1.0, description="Fraction of joined clients selected per round."
    )
    selection_seed: int = Field(default=0, ge=0, description="Seed of the client selection.")
    round_timeout_seconds: float | None = Field(
        default=300.0,
        gt=0.0,
        description="Seconds a round stays open before stragglers are dropped; none: no deadline.",
    )
    below_minimum: BelowMinimum = Field(
        default=BelowMinimum.EXTEND,
        description="A round short of min_participants at its deadline: extend (once) or fail.",
    )
    join_grace_seconds: float | None = Field(
        default=None,
        gt=0.0,
        description="How long the first round waits for expected_clients; none: the round timeout.",
    )
    target_metric: str = Field(default="", description="Client metric for an early exit.")
    target_metric_value: float = Field(default=0.0, description="Its threshold.")
    target_mode: TargetMode = Field(
        default=TargetMode.MAX, description="max: exit when >= the value; min: when <=."
    )
    proximal_mu: float = Field(default=0.0, ge=0.0, description="FedProx mu for the clients.")

    @field_validator("aggregation_parameters", mode="before")
    @classmethod
    def _parse_parameters(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return {}
            return json.loads(text)
        return value

    @field_validator(
        "checkpoint_dir",
        "expected_clients",
        "round_timeout_seconds",
        "redis_url",
        "redis_password",
        "agg_data_path",
        mode="before",
    )
    @classmethod
    def _none_words(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in {"", "none", "null"}:
            return None
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        if parts.password is not None:
            # The URL is shown by --check-config, flags and logs; the value is not echoed.
            raise ValueError(
                "must not hold a password: set SEDNA_AGGREGATOR_REDIS_PASSWORD (or "
                "REDIS_PASSWORD) instead"
            )
        return value.strip()

    @field_validator("agg_data_path")
    @classmethod
    def _check_data_path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip()
        if text in {"./", "."}:  # upstream's default AGG_DATA_PATH: no S3 transmitter
            return None
        parts = urlsplit(text)
        if parts.scheme != "s3" or not parts.netloc or "@" in parts.netloc:
            raise ValueError(f"{text!r} is not an s3://bucket[/prefix] URI")
        return text

    @model_validator(mode="after")
    def _check_session_defaults(self) -> Self:
        if self.send_chunk_bytes >= self.max_send_message_bytes:
            raise ValueError(
                f"send_chunk_bytes ({self.send_chunk_bytes}) must be below "
                f"max_send_message_bytes ({self.max_send_message_bytes})"
            )
        try:
            make_aggregator(self.session_config())
        except SessionConfigError as err:
            raise ValueError(str(err)) from err
        return self

    def session_config(self) -> SessionConfig:
        """The :class:`SessionConfig` of the sessions this server creates."""
        return SessionConfig(
            aggregation=self.aggregation,
            aggregation_parameters=dict(self.aggregation_parameters),
            exit_round=self.exit_round,
            min_participants=self.min_participants,
            expected_clients=self.expected_clients,
            client_fraction=self.client_fraction,
            selection_seed=self.selection_seed,
            round_timeout=self.round_timeout_seconds,
            below_minimum=self.below_minimum,
            join_grace=self.join_grace_seconds,
            target_metric=self.target_metric,
            target_metric_value=self.target_metric_value,
            target_mode=self.target_mode,
            proximal_mu=self.proximal_mu,
        )
