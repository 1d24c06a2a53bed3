"""Where a model file comes from: a local path, an ``s3://`` object or an ``http(s)://`` URL.

A :class:`ModelSource` has two blocking operations, run in worker threads by the repository:

- :meth:`~ModelSource.fingerprint`, cheap, which changes when the model changes (a local
  file's mtime and size, an S3 object's ETag, an HTTP ``ETag`` or ``Last-Modified`` and
  ``Content-Length``): the hot-reload watcher polls it;
- :meth:`~ModelSource.fetch`, which returns a local file to load, downloading remote models
  into the cache directory first.

Errors are :class:`ModelSourceError` and name the URL without credentials (user info and
query strings are dropped; S3 keys come from the environment and never appear).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Final, Protocol

from sedna_inference.errors import BackendError

if TYPE_CHECKING:
    from minio import Minio

__all__ = [
    "FetchedModel",
    "HttpSource",
    "LocalSource",
    "ModelSource",
    "ModelSourceError",
    "S3Source",
    "open_source",
    "redact_url",
]

S3_ENDPOINT_ENV: Final = "S3_ENDPOINT_URL"
ACCESS_KEY_ENV: Final = "ACCESS_KEY_ID"
SECRET_KEY_ENV: Final = "SECRET_ACCESS_KEY"
_TIMEOUT_S: Final = 30.0
_CHUNK: Final = 1 << 20


class ModelSourceError(BackendError):
    """A model could not be found or downloaded; the message names the URL, never secrets."""


@dataclass(frozen=True, slots=True)
class FetchedModel:
    """A model file ready to load.

    Attributes
    ----------
    path
        Local file (the original for local sources, a cache file otherwise).
    fingerprint
        The source's fingerprint when it was fetched.
    """

    path: Path
    fingerprint: str | None


class ModelSource(Protocol):
    """A model location (see the module docstring)."""

    @property
    def url(self) -> str:
        """The location, safe to log (no credentials)."""
        ...

    def fingerprint(self) -> str | None:
        """A token that changes when the model changes; ``None`` when it cannot be read.

        Raises
        ------
        ModelSourceError
            The remote location could not be queried.
        """
        ...

    def fetch(self) -> FetchedModel:
        """Return a local file holding the current model (blocking).

        Raises
        ------
        ModelSourceError
            The model could not be downloaded.
        """
        ...

    def discard(self, fetched: FetchedModel) -> None:
        """Remove a downloaded copy that is no longer served (no-op for local files)."""
        ...


def redact_url(url: str) -> str:
    """``url`` without user info, query or fragment: what logs and errors may show."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


class LocalSource:
    """A model file on the local file system.

    Parameters
    ----------
    path
        The model file; its suffix picks the backend.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def url(self) -> str:
        """The path as text."""
        return str(self.path)

    def fingerprint(self) -> str | None:
        """``mtime_ns:size`` of the file, or ``None`` while it does not exist."""
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return f"{stat.st_mtime_ns}:{stat.st_size}"

    def fetch(self) -> FetchedModel:
        """The file itself (its fingerprint taken first, so a later change is seen)."""
        return FetchedModel(self.path, self.fingerprint())

    def discard(self, fetched: FetchedModel) -> None:
        """Nothing to remove: the file is the user's."""


class _CachedSource:
    """Download into ``cache_dir`` under a name derived from the URL and the fingerprint."""

    def __init__(self, url: str, cache_dir: Path) -> None:
        self._url = url
        self._safe = redact_url(url)
        self._cache_dir = cache_dir
        suffix = PurePosixPath(urllib.parse.urlsplit(url).path).suffix
        self._suffix = suffix
        self._stem = hashlib.sha256(self._safe.encode()).hexdigest()[:16]

    @property
    def url(self) -> str:
        """The URL without credentials."""
        return self._safe

    def _target(self, fingerprint: str | None) -> Path:
        token = hashlib.sha256((fingerprint or "").encode()).hexdigest()[:12]
        return self._cache_dir / f"{self._stem}-{token}{self._suffix}"

    def _download(self, fingerprint: str | None, write: _Writer) -> FetchedModel:
        target = self._target(fingerprint)
        try:
            self._cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=self._cache_dir, prefix=".download-")
        except OSError as exc:
            raise ModelSourceError(
                f"cannot download {self._safe}: cache directory {str(self._cache_dir)!r}: "
                f"{exc.strerror or exc}"
            ) from None
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            write(tmp)
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return FetchedModel(target, fingerprint)

    def discard(self, fetched: FetchedModel) -> None:
        """Delete a cached copy."""
        with contextlib.suppress(OSError):
            fetched.path.unlink()


class _Writer(Protocol):
    def __call__(self, path: Path, /) -> None: ...


class HttpSource(_CachedSource):
    """A model served over ``http(s)://`` (``urllib``; redirects followed).

    Parameters
    ----------
    url
        The model URL; the suffix of its path picks the backend.
    cache_dir
        Where downloads go.
    """

    def _open(self, method: str) -> urllib.request.Request:
        parts = urllib.parse.urlsplit(self._url)
        netloc = parts.netloc.rpartition("@")[2]
        url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        request = urllib.request.Request(url, method=method)
        if parts.username is not None:  # user info in the URL: HTTP basic authentication
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        return request

    def _error(self, exc: Exception) -> ModelSourceError:
        if isinstance(exc, urllib.error.HTTPError):
            return ModelSourceError(f"cannot fetch {self._safe}: HTTP {exc.code} {exc.reason}")
        if isinstance(exc, urllib.error.URLError):
            return ModelSourceError(f"cannot fetch {self._safe}: {exc.reason}")
        return ModelSourceError(f"cannot fetch {self._safe}: {type(exc).__name__}: {exc}")

    def fingerprint(self) -> str | None:
        """``ETag``, else ``Last-Modified`` and ``Content-Length``, from a HEAD request."""
        try:
            with urllib.request.urlopen(self._open("HEAD"), timeout=_TIMEOUT_S) as reply:
                headers = reply.headers
        except (OSError, ValueError) as exc:
            raise self._error(exc) from None
        etag = headers.get("ETag")
        if etag:
            return f"etag:{etag}"
        modified, length = headers.get("Last-Modified"), headers.get("Content-Length")
        return f"lm:{modified}:{length}" if modified or length else None

    def fetch(self) -> FetchedModel:
        """Download the model (GET) into the cache directory."""
        fingerprint: str | None = None

        def write(path: Path) -> None:
            nonlocal fingerprint
            with (
                urllib.request.urlopen(self._open("GET"), timeout=_TIMEOUT_S) as reply,
                path.open("wb") as out,
            ):
                headers = reply.headers
                etag = headers.get("ETag")
                modified, length = headers.get("Last-Modified"), headers.get("Content-Length")
                if etag:
                    fingerprint = f"etag:{etag}"
                elif modified or length:
                    fingerprint = f"lm:{modified}:{length}"
                shutil.copyfileobj(reply, out, _CHUNK)

        try:
            fetched = self._download(None, write)
        except ModelSourceError:
            raise
        except (OSError, ValueError) as exc:
            raise self._error(exc) from None
        # Name the cache file after what was downloaded, so versions do not overwrite.
        final = self._target(fingerprint)
        os.replace(fetched.path, final)
        return FetchedModel(final, fingerprint)


@dataclass(frozen=True, slots=True)
class _S3Credentials:
    endpoint: str
    secure: bool
    access_key: str
    secret_key: str


class S3Source(_CachedSource):
    """A model stored as an S3 object (``s3://bucket/key``), read with the MinIO client.

    Parameters
    ----------
    url
        ``s3://bucket/key``; the key's suffix picks the backend.
    cache_dir
        Where downloads go.
    environ
        Where ``S3_ENDPOINT_URL`` (with scheme), ``ACCESS_KEY_ID`` and ``SECRET_ACCESS_KEY``
        come from, as Sedna injects them into workers.
    """

    def __init__(self, url: str, cache_dir: Path, environ: Mapping[str, str]) -> None:
        super().__init__(url, cache_dir)
        parts = urllib.parse.urlsplit(url)
        self.bucket = parts.netloc
        self.key = parts.path.lstrip("/")
        if not self.bucket or not self.key:
            raise ModelSourceError(f"model URL {self._safe} must be s3://bucket/key")
        endpoint = environ.get(S3_ENDPOINT_ENV, "").strip()
        if not endpoint:
            raise ModelSourceError(f"cannot fetch {self._safe}: {S3_ENDPOINT_ENV} is not set")
        split = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        self._creds = _S3Credentials(
            endpoint=split.netloc.rpartition("@")[2],
            secure=split.scheme != "http",
            access_key=environ.get(ACCESS_KEY_ENV, ""),
            secret_key=environ.get(SECRET_KEY_ENV, ""),
        )

    def _client(self) -> Minio:
        from minio import Minio  # noqa: PLC0415 - only S3 models need minio

        return Minio(
            self._creds.endpoint,
            access_key=self._creds.access_key or None,
            secret_key=self._creds.secret_key or None,
            secure=self._creds.secure,
        )

    def _error(self, exc: Exception) -> ModelSourceError:
        from minio.error import S3Error  # noqa: PLC0415

        if isinstance(exc, S3Error):
            return ModelSourceError(
                f"cannot fetch {self._safe}: S3 error {exc.code}: {exc.message}"
            )
        return ModelSourceError(
            f"cannot fetch {self._safe} from S3 endpoint {self._creds.endpoint}: "
            f"{type(exc).__name__}: {exc}"
        )

    def fingerprint(self) -> str | None:
        """The object's ETag."""
        client = self._client()
        try:
            stat = client.stat_object(self.bucket, self.key)
        except Exception as exc:
            raise self._error(exc) from None
        return f"etag:{stat.etag}" if stat.etag else None

    def fetch(self) -> FetchedModel:
        """Download the object into the cache directory."""
        client = self._client()
        try:
            stat = client.stat_object(self.bucket, self.key)
            fingerprint = f"etag:{stat.etag}" if stat.etag else None

            def write(path: Path) -> None:
                response = client.get_object(self.bucket, self.key)
                try:
                    with path.open("wb") as out:
                        for chunk in response.stream(_CHUNK):
                            out.write(chunk)
                finally:
                    response.close()
                    response.release_conn()

            return self._download(fingerprint, write)
        except ModelSourceError:
            raise
        except Exception as exc:
            raise self._error(exc) from None


def open_source(
    location: str | Path, cache_dir: Path, environ: Mapping[str, str] | None = None
) -> ModelSource:
    """The source for ``location``: ``s3://``, ``http(s)://`` or else a local path.

    Parameters
    ----------
    location
        Local path, ``s3://bucket/key`` or ``http(s)://...``.
    cache_dir
        Where remote models are downloaded.
    environ
        S3 credentials (see :class:`S3Source`); ``os.environ`` by default.

    Raises
    ------
    ModelSourceError
        An unsupported scheme, or S3 without an endpoint.
    """
    if isinstance(location, Path):
        return LocalSource(location)
    scheme = urllib.parse.urlsplit(location).scheme.lower()
    if scheme in ("http", "https"):
        return HttpSource(location, cache_dir)
    if scheme == "s3":
        return S3Source(location, cache_dir, os.environ if environ is None else environ)
    if scheme in ("", "file") or len(scheme) == 1:  # "C:\\..." on Windows
        path = urllib.parse.urlsplit(location).path if scheme == "file" else location
        return LocalSource(Path(path))
    raise ModelSourceError(
        f"unsupported model URL {redact_url(location)} (use a path, s3://, http:// or https://)"
    )
