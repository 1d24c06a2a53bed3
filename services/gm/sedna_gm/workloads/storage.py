"""Storage and S3 credential rules for workers (upstream ``storage_initializer_injector.go``).

- A host path (no URL scheme) on Kubernetes is mounted as a ``hostPath`` volume under
  ``/home/data`` (a file: its parent directory; a directory: itself) and the env value is the
  container path; ``DATA_PATH_PREFIX=/home/data`` is added. In the local mode the worker runs on
  the host, so the path is used as is.
- ``s3://``, ``http://`` and ``https://`` URLs are passed through (the worker reads and writes
  them itself); several URLs for one variable are joined with ``;``.
- S3 credentials come from a Secret (``credentialName``) with the annotation ``s3-endpoint``
  (required) and ``s3-usehttps`` ("0" means http), and the data ``ACCESS_KEY_ID`` and
  ``SECRET_ACCESS_KEY``. On Kubernetes the keys are injected as ``valueFrom.secretKeyRef``
  (upstream injected plain values); in the local mode they are resolved into the worker's
  secret environment, which travels only over the authenticated hub stream.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from sedna_gm.workloads.port import RuntimeMode, WorkloadError

__all__ = [
    "ACCESS_KEY_ENV",
    "DATA_PATH_PREFIX",
    "S3_ENDPOINT_ENV",
    "SECRET_KEY_ENV",
    "S3Secret",
    "SecretNotFoundError",
    "SecretSource",
    "StaticSecretSource",
    "StoragePlan",
]

DATA_PATH_PREFIX = "/home/data"
ACCESS_KEY_ENV = "ACCESS_KEY_ID"
SECRET_KEY_ENV = "SECRET_ACCESS_KEY"
S3_ENDPOINT_ENV = "S3_ENDPOINT_URL"
_REMOTE_SCHEMES = frozenset({"s3", "http", "https"})


class SecretNotFoundError(WorkloadError):
    """The Secret named by ``credentialName`` does not exist."""


@dataclass(frozen=True)
class S3Secret:
    """The S3 credentials of one Secret (repr hides the keys)."""

    name: str
    endpoint: str
    use_https: bool = True
    access_key_id: str = field(default="", repr=False)
    secret_access_key: str = field(default="", repr=False)

    @property
    def endpoint_url(self) -> str:
        """The endpoint with its scheme (``https://`` unless ``s3-usehttps`` is "0")."""
        if "://" in self.endpoint:
            return self.endpoint
        return f"{'https' if self.use_https else 'http'}://{self.endpoint}"

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> S3Secret:
        """Read a Kubernetes Secret manifest (``data`` base64 or ``stringData``).

        Raises
        ------
        WorkloadError
            The ``s3-endpoint`` annotation is missing or ``data`` is not base64.
        """
        meta = manifest.get("metadata") or {}
        name = str(meta.get("name", ""))
        annotations = meta.get("annotations") or {}
        endpoint = str(annotations.get("s3-endpoint", "")).strip()
        if not endpoint:
            raise WorkloadError(
                f"secret {name!r}: annotation 's3-endpoint' is required for S3 credentials"
            )
        values: dict[str, str] = {}
        for key, raw in (manifest.get("data") or {}).items():
            try:
                values[str(key)] = base64.b64decode(str(raw), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise WorkloadError(f"secret {name!r}: data.{key} is not base64 text") from exc
        values.update({str(k): str(v) for k, v in (manifest.get("stringData") or {}).items()})
        return cls(
            name=name,
            endpoint=endpoint,
            use_https=str(annotations.get("s3-usehttps", "1")).strip() != "0",
            access_key_id=values.get(ACCESS_KEY_ENV, ""),
            secret_access_key=values.get(SECRET_KEY_ENV, ""),
        )


class SecretSource(Protocol):
    """Where the GM reads the Secrets named by ``credentialName``."""

    async def get_s3_secret(self, namespace: str, name: str) -> S3Secret:
        """Return the credentials; raises :class:`SecretNotFoundError`."""
        ...


class StaticSecretSource:
    """Secrets given up front (the local mode: from GM settings or manifests applied to it)."""

    def __init__(self, secrets: Mapping[tuple[str, str], S3Secret] | None = None) -> None:
        self._secrets: dict[tuple[str, str], S3Secret] = dict(secrets or {})

    def put(self, namespace: str, secret: S3Secret) -> None:
        """Add or replace a secret."""
        self._secrets[(namespace, secret.name)] = secret

    async def get_s3_secret(self, namespace: str, name: str) -> S3Secret:
        """Return the secret; raises :class:`SecretNotFoundError`."""
        try:
            return self._secrets[(namespace, name)]
        except KeyError:
            raise SecretNotFoundError(f"secret {namespace}/{name} not found") from None


def _volume_name(host_dir: str) -> str:
    # Upstream's ConvertK8SValidName, plus a short hash so distinct paths never collide.
    base = re.sub(r"[^a-z0-9]+", "-", host_dir.lower()).strip("-") or "root"
    digest = hashlib.sha256(host_dir.encode()).hexdigest()[:6]
    return f"{base[:50].strip('-')}-{digest}"


def is_remote_url(url: str) -> bool:
    """True for ``s3://``, ``http://`` and ``https://`` URLs."""
    return urlsplit(url).scheme.lower() in _REMOTE_SCHEMES


@dataclass
class StoragePlan:
    """Env values, volumes and mounts for a worker's URLs, built by :meth:`add`.

    Attributes
    ----------
    mode
        Kubernetes mounts host paths under ``/home/data``; local uses them as is.
    env
        Variable -> value (container paths, or URLs passed through).
    volumes, volume_mounts
        Kubernetes ``hostPath`` volumes and the mounts every container gets.
    needs_s3
        True when some URL is ``s3://`` (the S3 credentials must be injected).
    """

    mode: RuntimeMode
    env: dict[str, str] = field(default_factory=dict)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    volume_mounts: list[dict[str, Any]] = field(default_factory=list)
    needs_s3: bool = False

    def add(
        self,
        env_name: str,
        urls: str | Sequence[str],
        *,
        is_dir: bool = False,
        writable: bool = False,
    ) -> str:
        """Resolve one or more URLs for ``env_name`` and return the env value.

        Parameters
        ----------
        env_name
            The variable, e.g. ``MODEL_URL``.
        urls
            A URL or host path, or several (joined with ``;``, as upstream's ``MODEL_URLS``).
        is_dir
            The host path is a directory (mounted itself) rather than a file (its parent).
        writable
            An output location: mounted read-write, created when missing.

        Raises
        ------
        WorkloadError
            A URL is empty, relative, or has an unsupported scheme.
        """
        items = [urls] if isinstance(urls, str) else list(urls)
        if not items:
            raise WorkloadError(f"{env_name}: no URL given")
        values = [self._resolve(env_name, url, is_dir=is_dir, writable=writable) for url in items]
        value = ";".join(values)
        self.env[env_name] = value
        return value

    def _resolve(self, env_name: str, url: str, *, is_dir: bool, writable: bool) -> str:
        url = url.strip()
        scheme = urlsplit(url).scheme.lower()
        if scheme in _REMOTE_SCHEMES:
            self.needs_s3 = self.needs_s3 or scheme == "s3"
            return url
        if scheme == "file":
            url = urlsplit(url).path
        elif scheme:
            raise WorkloadError(
                f"{env_name}: URL {url!r} has unsupported scheme {scheme!r} "
                "(expected s3://, http(s)://, file:// or an absolute host path)"
            )
        if not url.startswith("/"):
            raise WorkloadError(f"{env_name}: host path {url!r} must be absolute")
        path = posixpath.normpath(url)
        if self.mode is RuntimeMode.LOCAL:
            return path
        host_dir = path if is_dir else posixpath.dirname(path)
        container_dir = posixpath.normpath(DATA_PATH_PREFIX + host_dir)
        self._mount(host_dir, container_dir, writable=writable)
        self.env["DATA_PATH_PREFIX"] = DATA_PATH_PREFIX
        return posixpath.normpath(DATA_PATH_PREFIX + path)

    def _mount(self, host_dir: str, container_dir: str, *, writable: bool) -> None:
        name = _volume_name(host_dir)
        for existing in self.volume_mounts:
            if existing["name"] == name:
                # The same directory used read-only and read-write: read-write wins.
                if writable:
                    existing.pop("readOnly", None)
                    for volume in self.volumes:
                        if volume["name"] == name:
                            volume["hostPath"]["type"] = "DirectoryOrCreate"
                return
        host_type = "DirectoryOrCreate" if writable else "Directory"
        self.volumes.append({"name": name, "hostPath": {"path": host_dir, "type": host_type}})
        mount: dict[str, Any] = {"name": name, "mountPath": container_dir}
        if not writable:
            mount["readOnly"] = True
        self.volume_mounts.append(mount)
