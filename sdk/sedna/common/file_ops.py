"""Model and data transfer between local paths, S3 and HTTP (upstream ``sedna.common.file_ops``).

Workers get their models and outputs as URLs (``MODEL_URL``, ``OUTPUT_URL`` ...):

* a local path or ``file:///path``;
* ``s3://bucket/key``, read and written with the MinIO client. The endpoint and keys come
  from ``S3_ENDPOINT_URL`` (with ``http://`` or ``https://``; ``https`` when no scheme is
  given), ``ACCESS_KEY_ID`` and ``SECRET_ACCESS_KEY``, as the controller injects them;
* ``http://`` / ``https://``, download only.

:class:`FileOps` keeps upstream's class-method names. Pickle helpers (``dump_pickle``,
``obj_to_pickle_string``, joblib ``dump``/``load``) are deliberately not provided. Errors name
the URL without credentials.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, ClassVar, Final

if TYPE_CHECKING:
    from minio import Minio

__all__ = ["FileOps", "redact_url"]

S3_ENDPOINT_ENV: Final = "S3_ENDPOINT_URL"
ACCESS_KEY_ENV: Final = "ACCESS_KEY_ID"
SECRET_KEY_ENV: Final = "SECRET_ACCESS_KEY"
_HTTP_TIMEOUT_S: Final = 60.0
_CHUNK: Final = 1 << 20


def redact_url(url: str) -> str:
    """``url`` without user info, query or fragment: what logs and errors may show."""
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme or len(parts.scheme) == 1:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def _s3_parts(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.netloc, parts.path.lstrip("/")


class FileOps:
    """File and URL helpers, all classmethods (upstream ``FileOps``)."""

    _GCS_PREFIX: ClassVar[str] = "gs://"
    _S3_PREFIX: ClassVar[str] = "s3://"
    _LOCAL_PREFIX: ClassVar[str] = "file://"
    _URI_RE: ClassVar[str] = "https?://(.+)/(.+)"

    # ----------------------------------------------------------------------------- local paths
    @classmethod
    def join_path(cls, *args: str) -> str:
        """Join path parts; URLs (``s3://b``, ``http://h``) keep their scheme.

        Parameters
        ----------
        *args : str
            Parts; leading separators of later parts are ignored (upstream).

        Returns
        -------
        str
        """
        if not args:
            return ""
        if len(args) == 1:
            return str(args[0])
        first = str(args[0])
        rest = [str(part).lstrip("/") for part in args[1:]]
        if "://" in first:
            return "/".join([first.rstrip("/"), *[part for part in rest if part]])
        return os.path.join(first, *rest)

    @classmethod
    def make_dir(cls, *args: str) -> None:
        """Create the directory ``join_path(*args)`` (and its parents)."""
        os.makedirs(cls.join_path(*args), exist_ok=True)

    @classmethod
    def make_base_dir(cls, *args: str) -> None:
        """Create the parent directory of the file ``join_path(*args)``."""
        parent = os.path.dirname(cls.join_path(*args))
        if parent:
            os.makedirs(parent, exist_ok=True)

    @classmethod
    def clean_folder(cls, target: str | Iterable[str], clean: bool = True) -> list[str]:
        """Create each directory in ``target``; empty it first when ``clean`` (upstream).

        Parameters
        ----------
        target : str or iterable of str
            Directories.
        clean : bool, default True
            Remove existing content first.

        Returns
        -------
        list of str
            The directories.
        """
        paths = [target] if isinstance(target, str) else list(target)
        for path in dict.fromkeys(paths):
            if not path:
                continue
            if clean and os.path.isdir(path):
                shutil.rmtree(path)
            elif clean and os.path.isfile(path):
                os.remove(path)
            os.makedirs(path, exist_ok=True)
        return paths

    @classmethod
    def delete(cls, path: str) -> None:
        """Remove a file or a directory tree; a missing path is ignored."""
        local = cls.local_path(path)
        if os.path.isdir(local) and not os.path.islink(local):
            shutil.rmtree(local, ignore_errors=True)
        elif os.path.lexists(local):
            os.remove(local)

    @classmethod
    def exists(cls, folder: str) -> bool:
        """Whether ``folder`` is an existing local file or directory (``file://`` allowed)."""
        local = cls.local_path(folder)
        return os.path.isdir(local) or os.path.isfile(local)

    @classmethod
    def is_local(cls, src: str) -> bool:
        """Whether ``src`` is ``file://...`` or an existing local path (upstream)."""
        return str(src).startswith(cls._LOCAL_PREFIX) or cls.exists(str(src))

    @classmethod
    def is_remote(cls, src: str) -> bool:
        """Whether ``src`` is an ``s3://``, ``gs://`` or ``http(s)://host/path`` URL."""
        text = str(src)
        return text.startswith((cls._S3_PREFIX, cls._GCS_PREFIX)) or bool(
            re.match(cls._URI_RE, text)
        )

    @classmethod
    def local_path(cls, src: str) -> str:
        """``src`` with a ``file://`` prefix removed (other values unchanged)."""
        text = str(src)
        if text.startswith(cls._LOCAL_PREFIX):
            return urllib.parse.unquote(urllib.parse.urlsplit(text).path)
        return text

    @classmethod
    def remove_path_prefix(cls, org_str: str, prefix: str | None) -> str:
        """``org_str`` without the leading ``prefix`` (container path → host path, upstream)."""
        if not prefix:
            return org_str
        stem = prefix[:-1] if prefix.endswith(os.path.sep) else prefix
        return org_str[len(stem) :] if org_str.startswith(stem) else org_str

    @classmethod
    def get_file_hash(cls, filepath: str) -> str:
        """The MD5 hex digest of a file, or ``""`` when it is not a file (upstream)."""
        if not (filepath and os.path.isfile(filepath)):
            return ""
        digest = hashlib.md5(usedforsecurity=False)
        with open(filepath, "rb") as stream:
            for chunk in iter(lambda: stream.read(_CHUNK), b""):
                digest.update(chunk)
        return digest.hexdigest()

    @classmethod
    def copy_file(cls, src: str, dst: str) -> None:
        """Copy a file (into ``dst`` when it is a directory) or a directory tree."""
        src, dst = cls.local_path(src), cls.local_path(dst)
        if not dst:
            return
        if os.path.isfile(src):
            if os.path.isdir(dst):
                dst = os.path.join(dst, os.path.basename(src))
            if os.path.exists(dst) and os.path.samefile(src, dst):
                return
            parent = os.path.dirname(dst)
            if parent:
                os.makedirs(parent, exist_ok=True)
            shutil.copyfile(src, dst)
        elif os.path.isdir(src):
            cls.copy_folder(src, dst)
        else:
            raise FileNotFoundError(f"{src}: no such file or directory")

    @classmethod
    def copy_folder(cls, src: str, dst: str) -> None:
        """Copy the content of directory ``src`` into ``dst`` (merging, overwriting files)."""
        src, dst = cls.local_path(src), cls.local_path(dst)
        if not dst or not os.path.isdir(src):
            return
        if os.path.isdir(dst) and os.path.samefile(src, dst):
            return
        shutil.copytree(src, dst, dirs_exist_ok=True)

    # ------------------------------------------------------------------------------ transfers
    @classmethod
    def download(cls, src: str, dst: str | None = None, unzip: bool = False) -> str:
        """Fetch ``src`` to the local path ``dst`` and return that path.

        Parameters
        ----------
        src : str
            Local path, ``file://``, ``s3://bucket/key`` (an object, or a prefix: then every
            object under it is fetched into ``dst`` as a directory) or ``http(s)://``.
        dst : str, optional
            Local target; a new temporary directory when omitted (the file is then placed
            inside it under its base name). An existing directory receives the file under
            its base name.
        unzip : bool, default False
            Extract a downloaded ``.tar.gz`` next to it.

        Returns
        -------
        str
            The local path holding the data (for a local ``src`` without ``dst``: ``src``).

        Raises
        ------
        FileNotFoundError
            If ``src`` does not exist (local) or cannot be fetched (remote); the message
            names the URL without credentials.
        ValueError
            For an unsupported scheme (``gs://`` is not supported).
        """
        text = str(src)
        if text.startswith(cls._GCS_PREFIX):
            raise ValueError(f"{redact_url(text)}: gs:// is not supported")
        if not cls.is_remote(text):
            local = cls.local_path(text)
            if not os.path.exists(local):
                raise FileNotFoundError(f"{local}: no such file or directory")
            if dst is None:
                return local
            target = cls.local_path(dst)
            cls.copy_file(local, target)
            if os.path.isdir(target) and os.path.isfile(local):
                target = os.path.join(target, os.path.basename(local))
        else:
            target = cls._remote_target(text, dst)
            if text.startswith(cls._S3_PREFIX):
                target = cls.s3_download(text, target)
            else:
                cls.http_download(text, target)
        if unzip and target.endswith(".tar.gz"):
            cls._untar(target)
        return target

    @classmethod
    def _remote_target(cls, url: str, dst: str | None) -> str:
        name = os.path.basename(urllib.parse.urlsplit(url).path.rstrip("/")) or "download"
        if dst is None:
            return os.path.join(tempfile.mkdtemp(prefix="sedna-"), name)
        target = cls.local_path(dst)
        if os.path.isdir(target):
            return os.path.join(target, name)
        parent = os.path.dirname(target)
        if parent:
            os.makedirs(parent, exist_ok=True)
        return target

    @classmethod
    def upload(cls, src: str, dst: str, tar: bool = False, clean: bool = True) -> str:
        """Copy the local file or directory ``src`` to ``dst`` and return ``dst``.

        Parameters
        ----------
        src : str
            Local file or directory.
        dst : str
            Local path, ``file://`` or ``s3://bucket/key``. For S3 a directory is uploaded
            under the key prefix; a key ending in ``/`` receives the file under its base name.
        tar : bool, default False
            Upload ``src`` as ``<src>.tar.gz`` instead.
        clean : bool, default True
            Remove the local source after a successful upload (upstream), unless ``dst`` is
            the same local path.

        Returns
        -------
        str
            ``dst``.

        Raises
        ------
        FileNotFoundError
            If ``src`` does not exist.
        ValueError
            For ``http(s)://`` or ``gs://`` targets (not supported).
        """
        local = cls.local_path(src)
        if not os.path.exists(local):
            raise FileNotFoundError(f"{local}: no such file or directory")
        if tar:
            archive = f"{local.rstrip(os.sep)}.tar.gz"
            cls._tar(local, archive)
            if clean:
                cls.delete(local)
            local = archive
        text = str(dst)
        if text.startswith(cls._S3_PREFIX):
            cls.s3_upload(local, text)
        elif cls.is_remote(text):
            raise ValueError(f"cannot upload to {redact_url(text)}: only local paths and s3://")
        else:
            target = cls.local_path(text)
            if os.path.exists(target) and os.path.samefile(local, target):
                return text
            cls.copy_file(local, target)
        if clean:
            cls.delete(local)
        return text

    @classmethod
    def http_download(cls, src: str, dst: str) -> str:
        """Download ``src`` (``http(s)://``) to the file ``dst``.

        Raises
        ------
        FileNotFoundError
            On an HTTP error or a network failure (upstream raises ``URLError``).
        """
        safe = redact_url(src)
        partial = f"{dst}.part"
        try:
            with (
                urllib.request.urlopen(src, timeout=_HTTP_TIMEOUT_S) as reply,
                open(partial, "wb") as out,
            ):
                shutil.copyfileobj(reply, out, _CHUNK)
        except urllib.error.HTTPError as err:
            cls.delete(partial)
            raise FileNotFoundError(
                f"cannot download {safe}: HTTP {err.code} {err.reason}"
            ) from None
        except (OSError, ValueError) as err:
            cls.delete(partial)
            reason = getattr(err, "reason", err)
            raise FileNotFoundError(f"cannot download {safe}: {reason}") from None
        os.replace(partial, dst)
        return dst

    @classmethod
    def _s3_client(cls, environ: Mapping[str, str] | None = None) -> Minio:
        from minio import Minio  # noqa: PLC0415 - only S3 URLs need minio

        env = os.environ if environ is None else environ
        endpoint = env.get(S3_ENDPOINT_ENV, "").strip() or "https://s3.amazonaws.com"
        split = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        return Minio(
            split.netloc.rpartition("@")[2],
            access_key=env.get(ACCESS_KEY_ENV) or None,
            secret_key=env.get(SECRET_KEY_ENV) or None,
            secure=split.scheme != "http",
        )

    @classmethod
    def s3_download(cls, src: str, dst: str) -> str:
        """Download the object ``src``, or every object under the prefix ``src``, to ``dst``.

        Returns
        -------
        str
            ``dst`` (a file for an object, a directory for a prefix).

        Raises
        ------
        FileNotFoundError
            If nothing exists under ``src`` or S3 cannot be reached.
        """
        bucket, key = _s3_parts(src)
        safe = redact_url(src)
        if not bucket:
            raise FileNotFoundError(f"{safe}: an s3:// URL needs a bucket")
        client = cls._s3_client()
        try:
            if key and not key.endswith("/") and cls._s3_is_object(client, bucket, key):
                if os.path.isdir(dst):
                    dst = os.path.join(dst, os.path.basename(key))
                client.fget_object(bucket, key, dst)
                return dst
            prefix = key.rstrip("/") + "/" if key else ""
            count = 0
            for obj in client.list_objects(bucket, prefix=prefix, recursive=True):
                name = obj.object_name or ""
                if obj.is_dir or not name or name.endswith("/"):
                    continue
                client.fget_object(bucket, name, os.path.join(dst, name[len(prefix) :]))
                count += 1
        except FileNotFoundError:
            raise
        except Exception as err:
            raise FileNotFoundError(
                f"cannot download {safe}: {type(err).__name__}: {err}"
            ) from None
        if count == 0:
            raise FileNotFoundError(f"cannot download {safe}: no such object or prefix")
        return dst

    @staticmethod
    def _s3_is_object(client: Minio, bucket: str, key: str) -> bool:
        from minio.error import S3Error  # noqa: PLC0415

        try:
            client.stat_object(bucket, key)
        except S3Error as err:
            if err.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                return False
            raise
        return True

    @classmethod
    def s3_upload(cls, src: str, dst: str) -> str:
        """Upload the local file or directory ``src`` to ``dst`` (``s3://bucket/key``).

        A file goes to the key itself, or under it with its base name when the key is empty
        or ends with ``/``; a directory's files go under the key as a prefix.

        Raises
        ------
        FileNotFoundError
            If ``src`` is missing, or the upload fails (the message names the URL).
        """
        bucket, key = _s3_parts(dst)
        safe = redact_url(dst)
        if not bucket:
            raise FileNotFoundError(f"{safe}: an s3:// URL needs a bucket")
        client = cls._s3_client()
        uploads: list[tuple[str, str]] = []
        if os.path.isdir(src):
            prefix = key.rstrip("/") + "/" if key else ""
            for root, _, files in os.walk(src):
                for name in sorted(files):
                    path = os.path.join(root, name)
                    rel = os.path.relpath(path, src).replace(os.sep, "/")
                    uploads.append((path, prefix + rel))
        elif os.path.isfile(src):
            if not key or key.endswith("/"):
                key = key + os.path.basename(src)
            uploads.append((src, key))
        else:
            raise FileNotFoundError(f"{src}: no such file or directory")
        try:
            for path, name in uploads:
                client.fput_object(bucket, name, path)
        except Exception as err:
            raise FileNotFoundError(
                f"cannot upload to {safe}: {type(err).__name__}: {err}"
            ) from None
        return dst

    @classmethod
    def _untar(cls, src: str, dst: str | None = None) -> None:
        target = dst or os.path.dirname(src)
        with tarfile.open(src, "r:gz") as archive:
            archive.extractall(path=target, filter="data")

    @classmethod
    def _tar(cls, src: str, dst: str) -> None:
        with tarfile.open(dst, "w:gz") as archive:
            archive.add(src, arcname=os.path.basename(src.rstrip(os.sep)))
