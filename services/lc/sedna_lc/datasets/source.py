"""Where a dataset lives (local path, ``file://`` or ``s3://``) and how to count its samples.

All functions here block (file and network I/O); the monitor runs them in a worker thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from sedna_lc.datasets.counting import count_file_samples, count_regular_files, read_chunks

__all__ = [
    "FORMATS",
    "DatasetError",
    "DatasetSource",
    "S3Credentials",
    "count_samples",
    "parse_source",
]

FORMATS = ("txt", "csv", "dir")
_CHUNK = 1 << 20


class DatasetError(Exception):
    """The dataset cannot be counted; the message names the URL or field and is reported."""


@dataclass(frozen=True)
class S3Credentials:
    """S3 endpoint and keys, from the credentials the GM sends with the Dataset.

    Upstream keys: ``s3-endpoint`` (``host:port`` or a URL), ``s3-usehttps`` (``"0"`` means
    plain http; default ``"1"``), ``ACCESS_KEY_ID``, ``SECRET_ACCESS_KEY``.
    """

    endpoint: str
    secure: bool
    access_key: str
    secret_key: str

    @classmethod
    def from_mapping(cls, credentials: Mapping[str, str], url: str) -> S3Credentials:
        """Read the upstream credential keys; raise :class:`DatasetError` naming a missing one."""
        endpoint = str(credentials.get("s3-endpoint", "")).strip()
        if not endpoint:
            raise DatasetError(
                f"dataset {url}: no S3 endpoint: the credentials lack 's3-endpoint' "
                "(set spec.credentialName to a Secret annotated with s3-endpoint)"
            )
        secure = str(credentials.get("s3-usehttps", "1")).strip() != "0"
        if "://" in endpoint:
            parts = urlsplit(endpoint)
            secure = parts.scheme == "https"
            endpoint = parts.netloc
        missing = [k for k in ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY") if not credentials.get(k)]
        if missing:
            raise DatasetError(f"dataset {url}: the S3 credentials lack {', '.join(missing)}")
        return cls(
            endpoint=endpoint,
            secure=secure,
            access_key=credentials["ACCESS_KEY_ID"],
            secret_key=credentials["SECRET_ACCESS_KEY"],
        )


@dataclass(frozen=True)
class DatasetSource:
    """A parsed dataset URL: either ``path`` (local) or ``bucket``/``key`` (S3)."""

    url: str
    path: Path | None = None
    bucket: str = ""
    key: str = ""

    @property
    def is_s3(self) -> bool:
        """Whether the dataset is an S3 object (or prefix)."""
        return self.path is None


def parse_source(url: str, rootfs: Path | None = None) -> DatasetSource:
    """Parse ``spec.url``.

    Parameters
    ----------
    url
        A local path, ``file:///path`` or ``s3://bucket/key``.
    rootfs
        Prefix for local paths, as upstream's LC reads the host through ``/rootfs``.

    Raises
    ------
    DatasetError
        Empty URL, unsupported scheme, or an s3 URL without bucket or key.
    """
    text = url.strip()
    if not text:
        raise DatasetError("spec.url: is empty")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "s3":
        key = parts.path.lstrip("/")
        if not parts.netloc or not key:
            raise DatasetError(f"spec.url: {url!r} must be s3://BUCKET/KEY")
        return DatasetSource(url=text, bucket=parts.netloc, key=key)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise DatasetError(f"spec.url: {url!r}: file URLs must name a local path")
        raw = unquote(parts.path)
    elif scheme and len(scheme) > 1:  # "c:" style drive letters are not URLs
        raise DatasetError(
            f"spec.url: {url!r}: unsupported scheme {parts.scheme!r} "
            "(use a local path, file:// or s3://)"
        )
    else:
        raw = text
    path = Path(raw)
    if rootfs is not None and path.is_absolute():
        path = rootfs / PurePosixPath(raw).relative_to("/")
    return DatasetSource(url=text, path=path)


def count_samples(
    source: DatasetSource, fmt: str, credentials: Mapping[str, str] | None = None
) -> int:
    """Count the samples of ``source`` in format ``fmt`` (blocking, constant memory).

    Raises
    ------
    DatasetError
        Unknown format, missing or unreadable data, S3 failures; the message names the URL.
    """
    if fmt not in FORMATS:
        raise DatasetError(f"spec.format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if source.path is not None:
        return _count_local(source, source.path, fmt)
    return _count_s3(source, fmt, S3Credentials.from_mapping(credentials or {}, source.url))


def _count_local(source: DatasetSource, path: Path, fmt: str) -> int:
    try:
        if fmt == "dir":
            if not path.is_dir():
                what = "does not exist" if not path.exists() else "is not a directory"
                raise DatasetError(f"dataset {source.url}: {path} {what}")
            return count_regular_files(path)
        if path.is_dir():
            raise DatasetError(
                f"dataset {source.url}: {path} is a directory but spec.format is {fmt!r}"
            )
        with path.open("rb") as stream:
            return count_file_samples(read_chunks(stream, _CHUNK), fmt)
    except FileNotFoundError:
        raise DatasetError(f"dataset {source.url}: {path} does not exist") from None
    except OSError as exc:
        raise DatasetError(f"dataset {source.url}: cannot read {path}: {exc.strerror}") from None


def _count_s3(source: DatasetSource, fmt: str, creds: S3Credentials) -> int:
    # Imported here: minio is only needed by nodes that have S3 datasets.
    from minio import Minio  # noqa: PLC0415
    from minio.error import MinioException, S3Error  # noqa: PLC0415
    from urllib3.exceptions import HTTPError  # noqa: PLC0415

    client = Minio(
        creds.endpoint,
        access_key=creds.access_key,
        secret_key=creds.secret_key,
        secure=creds.secure,
    )
    try:
        if fmt == "dir":
            prefix = source.key.rstrip("/") + "/"
            objects = client.list_objects(source.bucket, prefix=prefix, recursive=True)
            # Keys ending in "/" are folder markers some tools create, not samples.
            return sum(1 for obj in objects if not (obj.object_name or "").endswith("/"))
        response = client.get_object(source.bucket, source.key)
        try:
            return count_file_samples(response.stream(_CHUNK), fmt)
        finally:
            response.close()
            response.release_conn()
    except S3Error as exc:
        raise DatasetError(f"dataset {source.url}: S3 error {exc.code}: {exc.message}") from None
    except (MinioException, HTTPError, OSError) as exc:
        raise DatasetError(
            f"dataset {source.url}: S3 endpoint {creds.endpoint} failed: {exc}"
        ) from None
