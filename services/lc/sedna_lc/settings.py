"""Settings of the LocalController (``SEDNA_LC_*`` environment variables)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from sedna.runtime import ServiceSettings

__all__ = [
    "DEFAULT_HTTP_PORT",
    "DEFAULT_METRICS_PORT",
    "DEFAULT_PORT",
    "HOSTNAME_LABEL",
    "LCSettings",
    "parse_node_labels",
]

DEFAULT_HTTP_PORT = 9100
DEFAULT_PORT = 9101
DEFAULT_METRICS_PORT = 9102

HOSTNAME_LABEL = "kubernetes.io/hostname"
"""The well-known node label, always sent and always set to the node name."""

_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _label_text(value: Any, key: str) -> str:
    # YAML reads `gpu: true` as a boolean: take it as the text the user typed.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise ValueError(f"label {key!r}: the value must be a string, not {type(value).__name__}")


def _check_label(key: str, value: str) -> None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.match(prefix)):
        raise ValueError(
            f"label key {key!r}: the prefix before '/' must be a DNS subdomain "
            "(lowercase, e.g. example.com)"
        )
    if not name or len(name) > 63 or not _NAME_RE.match(name):
        raise ValueError(
            f"label key {key!r}: the name must be 1-63 characters: letters, digits, '-', '_' "
            "or '.', starting and ending with a letter or digit"
        )
    if value and (len(value) > 63 or not _NAME_RE.match(value)):
        raise ValueError(
            f"label {key}={value!r}: a value must be at most 63 characters: letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit"
        )


def parse_node_labels(value: Any) -> dict[str, str]:
    """Node labels from ``KEY=VALUE,KEY=VALUE``, a JSON object or a mapping (YAML config).

    Raises
    ------
    ValueError
        Not one of those forms, or a key or value Kubernetes would not accept as a label.
    """
    if value is None:
        return {}
    raw: Any = value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a valid JSON object: {exc.msg}") from None
        else:
            raw = {}
            for part in (p.strip() for p in text.split(",")):
                if not part:
                    continue
                key, sep, label_value = part.partition("=")
                if not sep or not key.strip():
                    raise ValueError(f"{part!r}: expected KEY=VALUE (e.g. zone=a,gpu=true)")
                raw[key.strip()] = label_value.strip()
    if not isinstance(raw, dict):
        raise ValueError("expected KEY=VALUE,... or a mapping of label keys to values")
    labels = {str(k): _label_text(v, str(k)) for k, v in raw.items()}
    for key, label_value in labels.items():
        _check_label(key, label_value)
    return labels


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
    node_labels: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="This node's labels, for workers placed by nodeSelector/affinity: "
        "KEY=VALUE,... (e.g. zone=a,gpu=true) or a JSON object; "
        f"{HOSTNAME_LABEL}=<node name> is always added.",
    )

    @field_validator("node_labels", mode="before")
    @classmethod
    def _parse_labels(cls, value: Any) -> dict[str, str]:
        return parse_node_labels(value)

    @field_validator("node_labels")
    @classmethod
    def _hostname_is_node_name(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        given = value.get(HOSTNAME_LABEL)
        node = info.data.get("node_name", "")
        if given is not None and given != node:
            raise ValueError(
                f"{HOSTNAME_LABEL} is always the node name ({node!r}), not {given!r}; leave it out"
            )
        return value

    def hello_labels(self) -> dict[str, str]:
        """The labels this node announces to the GM: ``node_labels`` plus the hostname one."""
        return {**self.node_labels, HOSTNAME_LABEL: self.node_name}
