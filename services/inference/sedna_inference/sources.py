"""Where a model comes from: a local path, an ``s3://`` object or prefix, or an ``http(s)://`` URL.

A :class:`ModelSource` has two blocking operations, run in worker threads by the repository:

- :meth:`~ModelSource.fingerprint`, cheap, which changes when the model changes (a local
  file's mtime and size, an S3 object's ETag, an HTTP ``ETag`` or ``Last-Modified`` and
  ``Content-Length``): the hot-reload watcher polls it;
- :meth:`~ModelSource.fetch`, which returns a local file or directory to load, downloading
  remote models into the cache directory first.

What a remote location may hold:

- a model file (``.onnx``, ``.pt``, ``.keras``, ...), downloaded as it is. A TorchScript
  model (``.pt``, ``.pth``) brings its metadata sidecar: ``<url>.json`` is downloaded next
  to it when it exists (HTTP 404 or S3 ``NoSuchKey`` means it does not; the backend then
  says it is missing), and the fingerprint covers both, so editing either reloads;
- an archive (:data:`ARCHIVE_SUFFIXES`: ``.tar.gz``, ``.tgz``, ``.tar``, ``.zip``, ...),
  downloaded and unpacked into a directory of its own, e.g. a zipped SavedModel. Tar files
  are extracted with Python's ``data`` filter: a member that would land outside the
  directory (through ``..`` or a link), a link to an absolute path or a device is refused
  (a leading ``/`` is stripped); zip names that are absolute or hold ``..`` are refused;
- with ``s3://`` only, a prefix ending in ``/`` (``s3://models/resnet/``): every object
  under it is downloaded into a directory; the fingerprint covers every key, ETag and size.

A local path may be a file or a directory (its fingerprint covers every file in it).
Directories are resolved to a model by the backend loader (a SavedModel's
``saved_model.pb``, or the one model file inside).

Errors are :class:`ModelSourceError` and name the URL without credentials (user info and
query strings are dropped; S3 keys come from the environment and never appear).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.message import Message
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Final, Protocol

from sedna.serving.errors import BackendError

if TYPE_CHECKING:
    from minio import Minio

__all__ = [
    "ARCHIVE_SUFFIXES",
    "SIDECAR_SUFFIXES",
    "FetchedModel",
    "HttpSource",
    "LocalSource",
    "ModelSource",
    "ModelSourceError",
    "S3Source",
    "archive_suffix",
    "open_source",
    "redact_url",
]

S3_ENDPOINT_ENV: Final = "S3_ENDPOINT_URL"
ACCESS_KEY_ENV: Final = "ACCESS_KEY_ID"
SECRET_KEY_ENV: Final = "SECRET_ACCESS_KEY"
_TIMEOUT_S: Final = 30.0
_CHUNK: Final = 1 << 20

ARCHIVE_SUFFIXES: Final = (
    ".tar.gz",
    ".tgz",
    ".tar.bz2",
    ".tbz2",
    ".tar.xz",
    ".txz",
    ".tar",
    ".zip",
)
"""Remote models whose URL ends in one of these are unpacked into a directory."""

SIDECAR_SUFFIXES: Final[Mapping[str, tuple[str, ...]]] = {".pt": (".json",), ".pth": (".json",)}
"""Model suffix → files fetched with the model, named after it plus the suffix."""

_ABSENT: Final = "absent"


class ModelSourceError(BackendError):
    """A model could not be found or downloaded; the message names the URL, never secrets."""


class _NotFoundError(ModelSourceError):
    """The object does not exist (HTTP 404, S3 ``NoSuchKey``): fatal for a model, not a sidecar."""


@dataclass(frozen=True, slots=True)
class FetchedModel:
    """A model ready to load.

    Attributes
    ----------
    path
        Local file or directory (the original for local sources, a cached copy otherwise).
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
        """Return a local file or directory holding the current model (blocking).

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


def archive_suffix(path: str) -> str:
    """The :data:`ARCHIVE_SUFFIXES` entry ``path`` ends with (case-blind), or ``""``."""
    lower = path.lower()
    return next((suffix for suffix in ARCHIVE_SUFFIXES if lower.endswith(suffix)), "")


def _sidecars(name: str) -> tuple[str, ...]:
    return SIDECAR_SUFFIXES.get(PurePosixPath(name).suffix.lower(), ())


def _with_sidecars(main: str | None, sidecars: Iterable[tuple[str, str | None]]) -> str | None:
    """One fingerprint for a model and its sidecars (``None`` when the model has none)."""
    if main is None:
        return None
    return main + "".join(f"|{suffix}={token}" for suffix, token in sidecars)


def _tree_fingerprint(root: Path) -> str:
    """A hash over every file's relative path, mtime and size under ``root``."""
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder, name)
            try:
                info = path.stat()
            except OSError:
                continue
            relative = path.relative_to(root).as_posix()
            digest.update(f"{relative}\0{info.st_mtime_ns}\0{info.st_size}\n".encode())
    return f"tree:{digest.hexdigest()[:16]}"


def _stat_token(path: Path) -> str | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return f"{info.st_mtime_ns}:{info.st_size}"


class LocalSource:
    """A model file or directory on the local file system.

    Parameters
    ----------
    path
        The model file (its suffix picks the backend) or directory (e.g. a SavedModel).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def url(self) -> str:
        """The path as text."""
        return str(self.path)

    def fingerprint(self) -> str | None:
        """``None`` while the path does not exist; else what changes with the model.

        A file: ``mtime_ns:size`` (and its sidecar's, for TorchScript); a directory: a hash
        over every file's path, mtime and size.
        """
        if self.path.is_dir():
            return _tree_fingerprint(self.path)
        token = _stat_token(self.path)
        sidecars = (
            (suffix, _stat_token(self.path.with_name(self.path.name + suffix)) or _ABSENT)
            for suffix in _sidecars(self.path.name)
        )
        return _with_sidecars(token, sidecars)

    def fetch(self) -> FetchedModel:
        """The path itself (its fingerprint taken first, so a later change is seen)."""
        return FetchedModel(self.path, self.fingerprint())

    def discard(self, fetched: FetchedModel) -> None:
        """Nothing to remove: the model is the user's."""


def _safe_parts(name: str) -> tuple[str, ...] | None:
    """The path components of an archive member or key; ``None`` when it may escape."""
    if name.startswith(("/", "\\")) or "\\" in name:
        return None
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    if any(p == ".." for p in parts) or (parts and ":" in parts[0]):
        return None
    return parts


def _tar_members(bundle: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Regular files and directories with safe names (Pythons without tarfile filters)."""
    members = []
    for member in bundle.getmembers():
        if _safe_parts(member.name) is None or not (member.isfile() or member.isdir()):
            raise ModelSourceError(f"unsafe archive member {member.name!r}")
        member.mode &= stat.S_IRWXU | stat.S_IRWXG | stat.S_IRWXO
        members.append(member)
    return members


def _unpack(archive: Path, dest: Path, suffix: str, url: str) -> None:
    """Unpack ``archive`` (kind from ``suffix``) into the new directory ``dest``."""
    dest.mkdir()
    try:
        if suffix == ".zip":
            with zipfile.ZipFile(archive) as bundle:
                for name in bundle.namelist():
                    if _safe_parts(name) is None:
                        raise ModelSourceError(f"unsafe archive member {name!r}")
                bundle.extractall(dest)
        else:
            with tarfile.open(archive, "r:*") as bundle:
                if hasattr(tarfile, "data_filter"):
                    bundle.extractall(dest, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    bundle.extractall(dest, members=_tar_members(bundle))
    except ModelSourceError as exc:
        raise ModelSourceError(f"cannot unpack {url}: {exc}") from None
    except (tarfile.TarError, zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ModelSourceError(f"cannot unpack {url}: {type(exc).__name__}: {exc}") from None


def _install_dir(source: Path, target: Path) -> None:
    """Move the directory ``source`` to ``target``, replacing a copy of the same version."""
    if target.exists():
        shutil.rmtree(target)
    os.replace(source, target)


class _CachedSource:
    """Download into ``cache_dir`` under a name derived from the URL and the fingerprint.

    Subclasses implement ``_stat(suffix)`` (the fingerprint of the object at the URL plus
    ``suffix``) and ``_get(suffix, dest)`` (download it to ``dest``, return its fingerprint);
    both raise :class:`_NotFoundError` when the object does not exist.
    """

    def __init__(self, url: str, cache_dir: Path) -> None:
        self._url = url
        self._safe = redact_url(url)
        self._cache_dir = cache_dir
        path = urllib.parse.urlsplit(url).path
        self._archive = archive_suffix(path)
        self._directory = path.endswith("/")
        plain = not self._archive and not self._directory
        self._suffix = PurePosixPath(path).suffix if plain else ""
        self._sidecar_suffixes = _sidecars(path) if plain else ()
        self._stem = hashlib.sha256(self._safe.encode()).hexdigest()[:16]

    @property
    def url(self) -> str:
        """The URL without credentials."""
        return self._safe

    def _stat(self, suffix: str) -> str | None:
        raise NotImplementedError

    def _get(self, suffix: str, dest: Path) -> str | None:
        raise NotImplementedError

    def _target(self, fingerprint: str | None) -> Path:
        token = hashlib.sha256((fingerprint or "").encode()).hexdigest()[:12]
        return self._cache_dir / f"{self._stem}-{token}{self._suffix}"

    def fingerprint(self) -> str | None:
        """The model's fingerprint, with its sidecars' (``absent`` when missing)."""
        main = self._stat("")
        sidecars = []
        for suffix in self._sidecar_suffixes:
            try:
                sidecars.append((suffix, self._stat(suffix)))
            except _NotFoundError:
                sidecars.append((suffix, _ABSENT))
        return _with_sidecars(main, sidecars)

    def _workdir(self) -> Path:
        try:
            self._cache_dir.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(dir=self._cache_dir, prefix=".download-"))
        except OSError as exc:
            raise ModelSourceError(
                f"cannot download {self._safe}: cache directory {str(self._cache_dir)!r}: "
                f"{exc.strerror or exc}"
            ) from None

    def fetch(self) -> FetchedModel:
        """Download the model (and its sidecars, or unpack it) into the cache directory."""
        work = self._workdir()
        try:
            download = work / "model"
            main = self._get("", download)
            sidecars: list[tuple[str, str | None]] = []
            for suffix in self._sidecar_suffixes:
                try:
                    sidecars.append((suffix, self._get(suffix, work / f"model{suffix}")))
                except _NotFoundError:
                    sidecars.append((suffix, _ABSENT))
            fingerprint = _with_sidecars(main, sidecars)
            target = self._target(fingerprint)
            if self._archive:
                unpacked = work / "unpacked"
                _unpack(download, unpacked, self._archive, self._safe)
                _install_dir(unpacked, target)
            elif self._directory:
                _install_dir(download, target)
            else:
                os.replace(download, target)
                for suffix in self._sidecar_suffixes:
                    fetched = work / f"model{suffix}"
                    cached = target.with_name(target.name + suffix)
                    if fetched.exists():
                        os.replace(fetched, cached)
                    else:
                        cached.unlink(missing_ok=True)
        except ModelSourceError:
            raise
        except OSError as exc:
            raise ModelSourceError(
                f"cannot store {self._safe} in {str(self._cache_dir)!r}: {exc.strerror or exc}"
            ) from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return FetchedModel(target, fingerprint)

    def discard(self, fetched: FetchedModel) -> None:
        """Delete a cached copy (a file and its sidecars, or an unpacked directory)."""
        if fetched.path.is_dir():
            shutil.rmtree(fetched.path, ignore_errors=True)
            return
        for path in (
            fetched.path,
            *(fetched.path.with_name(fetched.path.name + s) for s in self._sidecar_suffixes),
        ):
            with contextlib.suppress(OSError):
                path.unlink()


def _http_fingerprint(headers: Message) -> str | None:
    etag = headers.get("ETag")
    if etag:
        return f"etag:{etag}"
    modified, length = headers.get("Last-Modified"), headers.get("Content-Length")
    return f"lm:{modified}:{length}" if modified or length else None


class HttpSource(_CachedSource):
    """A model served over ``http(s)://`` (``urllib``; redirects followed).

    Parameters
    ----------
    url
        The model URL; the suffix of its path picks the backend, or says it is an archive.
    cache_dir
        Where downloads go.
    """

    def _open(self, method: str, suffix: str = "") -> urllib.request.Request:
        parts = urllib.parse.urlsplit(self._url)
        netloc = parts.netloc.rpartition("@")[2]
        url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path + suffix, parts.query, ""))
        request = urllib.request.Request(url, method=method)
        if parts.username is not None:  # user info in the URL: HTTP basic authentication
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        return request

    def _error(self, exc: Exception, suffix: str = "") -> ModelSourceError:
        where = self._safe + suffix
        if isinstance(exc, urllib.error.HTTPError):
            error = _NotFoundError if exc.code == 404 else ModelSourceError
            return error(f"cannot fetch {where}: HTTP {exc.code} {exc.reason}")
        if isinstance(exc, urllib.error.URLError):
            return ModelSourceError(f"cannot fetch {where}: {exc.reason}")
        return ModelSourceError(f"cannot fetch {where}: {type(exc).__name__}: {exc}")

    def _stat(self, suffix: str) -> str | None:
        """``ETag``, else ``Last-Modified`` and ``Content-Length``, from a HEAD request."""
        try:
            with urllib.request.urlopen(self._open("HEAD", suffix), timeout=_TIMEOUT_S) as reply:
                return _http_fingerprint(reply.headers)
        except (OSError, ValueError) as exc:
            raise self._error(exc, suffix) from None

    def _get(self, suffix: str, dest: Path) -> str | None:
        """Download with GET; the fingerprint comes from the reply's headers."""
        try:
            with (
                urllib.request.urlopen(self._open("GET", suffix), timeout=_TIMEOUT_S) as reply,
                dest.open("wb") as out,
            ):
                fingerprint = _http_fingerprint(reply.headers)
                shutil.copyfileobj(reply, out, _CHUNK)
        except (OSError, ValueError) as exc:
            raise self._error(exc, suffix) from None
        return fingerprint


@dataclass(frozen=True, slots=True)
class _S3Credentials:
    endpoint: str
    secure: bool
    access_key: str
    secret_key: str


class S3Source(_CachedSource):
    """A model stored in S3 (``s3://bucket/key``, or ``s3://bucket/prefix/`` for a directory).

    Read with the MinIO client.

    Parameters
    ----------
    url
        ``s3://bucket/key`` (the key's suffix picks the backend, or says it is an archive),
        or ``s3://bucket/prefix/``: every object under the prefix, as a directory.
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
            raise ModelSourceError(
                f"model URL {self._safe} must be s3://bucket/key or s3://bucket/prefix/"
            )
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

    def _error(self, exc: Exception, suffix: str = "") -> ModelSourceError:
        from minio.error import S3Error  # noqa: PLC0415

        where = self._safe + suffix
        if isinstance(exc, S3Error):
            error = _NotFoundError if exc.code == "NoSuchKey" else ModelSourceError
            return error(f"cannot fetch {where}: S3 error {exc.code}: {exc.message}")
        return ModelSourceError(
            f"cannot fetch {where} from S3 endpoint {self._creds.endpoint}: "
            f"{type(exc).__name__}: {exc}"
        )

    def _objects(self, client: Minio) -> list[tuple[str, str, int]]:
        """``(key, etag, size)`` of every object under the prefix, sorted by key."""
        try:
            listing = client.list_objects(self.bucket, prefix=self.key, recursive=True)
            objects = sorted(
                (o.object_name, o.etag or "", o.size or 0)
                for o in listing
                if o.object_name and not o.object_name.endswith("/")
            )
        except Exception as exc:
            raise self._error(exc) from None
        if not objects:
            raise _NotFoundError(f"cannot fetch {self._safe}: no objects under this S3 prefix")
        return objects

    @staticmethod
    def _listing_fingerprint(objects: list[tuple[str, str, int]]) -> str:
        digest = hashlib.sha256()
        for key, etag, size in objects:
            digest.update(f"{key}\0{etag}\0{size}\n".encode())
        return f"list:{digest.hexdigest()[:16]}"

    def _stat(self, suffix: str) -> str | None:
        """The object's ETag (a prefix: a hash over its listing)."""
        client = self._client()
        if self._directory:
            return self._listing_fingerprint(self._objects(client))
        try:
            stat_ = client.stat_object(self.bucket, self.key + suffix)
        except Exception as exc:
            raise self._error(exc, suffix) from None
        return f"etag:{stat_.etag}" if stat_.etag else None

    def _download(self, client: Minio, key: str, dest: Path, suffix: str = "") -> None:
        try:
            response = client.get_object(self.bucket, key)
            try:
                with dest.open("wb") as out:
                    for chunk in response.stream(_CHUNK):
                        out.write(chunk)
            finally:
                response.close()
                response.release_conn()
        except Exception as exc:
            raise self._error(exc, suffix) from None

    def _get(self, suffix: str, dest: Path) -> str | None:
        """Download the object (a prefix: every object under it, into the directory)."""
        client = self._client()
        if self._directory:
            objects = self._objects(client)
            dest.mkdir()
            for key, _, _ in objects:
                parts = _safe_parts(key[len(self.key) :])
                if not parts:
                    raise ModelSourceError(f"cannot fetch {self._safe}: unsafe key {key!r}")
                path = dest.joinpath(*parts)
                path.parent.mkdir(parents=True, exist_ok=True)
                self._download(client, key, path)
            return self._listing_fingerprint(objects)
        try:
            stat_ = client.stat_object(self.bucket, self.key + suffix)
        except Exception as exc:
            raise self._error(exc, suffix) from None
        self._download(client, self.key + suffix, dest, suffix)
        return f"etag:{stat_.etag}" if stat_.etag else None


def open_source(
    location: str | Path, cache_dir: Path, environ: Mapping[str, str] | None = None
) -> ModelSource:
    """The source for ``location``: ``s3://``, ``http(s)://`` or else a local path.

    Parameters
    ----------
    location
        Local path (file or directory), ``s3://bucket/key``, ``s3://bucket/prefix/`` or
        ``http(s)://...`` (a model file or an archive, see the module docstring).
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
