"""S3 plumbing shared by the trainer's transmitter and the aggregator's object adapter.

``s3://bucket/key`` URIs, a MinIO client from an endpoint URL and keys (as the controller
injects them: ``S3_ENDPOINT_URL``, ``ACCESS_KEY_ID``, ``SECRET_ACCESS_KEY``), and the blocking
upload / streaming download of one safetensors object. Errors name the URI, never a key.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Final, cast

from sedna.algorithms.transmitter.safetensors_codec import (
    EncodedTensors,
    SafetensorsError,
    SafetensorsReader,
)
from sedna.common.errors import SednaError

if TYPE_CHECKING:
    from minio import Minio

__all__ = [
    "DEFAULT_S3_ENDPOINT",
    "S3Location",
    "S3ObjectError",
    "join_uri",
    "make_minio_client",
    "open_object",
    "parse_s3_uri",
    "put_tensors",
]

DEFAULT_S3_ENDPOINT: Final = "https://s3.amazonaws.com"
_MISSING_CODES: Final = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound", "NoSuchBucket"})
_CONTENT_TYPE: Final = "application/octet-stream"
_KEY_SAFE: Final = "-_.~"


class S3ObjectError(SednaError):
    """An object could not be written or read (unreachable endpoint, refused keys, missing
    object); the message names the URI and the S3 error code.

    Attributes
    ----------
    missing : bool
        True when the object (or its bucket) does not exist.
    """

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True, slots=True)
class S3Location:
    """A parsed ``s3://bucket/key`` URI (``key`` may be empty or end with ``/``: a prefix)."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        """The URI back."""
        return f"s3://{self.bucket}/{self.key}"

    def is_under(self, prefix: S3Location) -> bool:
        """Whether this location is ``prefix`` itself or inside it (by whole path segments)."""
        if self.bucket != prefix.bucket:
            return False
        base = prefix.key.rstrip("/")
        return not base or self.key == base or self.key.startswith(base + "/")


def parse_s3_uri(uri: str, *, what: str = "URI", need_key: bool = False) -> S3Location:
    """Parse ``s3://bucket/key``.

    Parameters
    ----------
    uri
        The URI.
    what
        How messages name it (e.g. ``"AGG_DATA_PATH"``).
    need_key
        Whether it must name an object (a non-empty key not ending with ``/``).

    Raises
    ------
    ValueError
        Not ``s3://``, no bucket, or (``need_key``) no object key; the message names ``what``.
    """
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != "s3":
        raise ValueError(f"{what} {uri!r} is not an s3://bucket/key URI")
    if not parts.netloc or "@" in parts.netloc:
        raise ValueError(f"{what} {uri!r} names no bucket (s3://bucket/key)")
    if parts.query or parts.fragment:
        raise ValueError(f"{what} {uri!r} must not have a query or fragment")
    key = parts.path.lstrip("/")
    if any(segment in {".", ".."} for segment in key.split("/")):
        raise ValueError(f"{what} {uri!r} must not contain '.' or '..' path segments")
    if need_key and (not key or key.endswith("/")):
        raise ValueError(f"{what} {uri!r} names a bucket or prefix, not an object")
    return S3Location(parts.netloc, key)


def join_uri(base: S3Location, *parts: str) -> str:
    """``s3://<bucket>/<base key>/<part>/<part>...``; each segment percent-encoded.

    ``/`` inside a part separates segments (a session id ``namespace/job`` is two), so
    every name lands under ``base``.

    Raises
    ------
    ValueError
        No part, or an empty, ``.`` or ``..`` segment.
    """
    if not parts:
        raise ValueError("an object name needs at least one part")
    keys = [base.key.strip("/")] if base.key.strip("/") else []
    for part in parts:
        segments = [s for s in str(part).split("/") if s]
        if not segments or any(s in {".", ".."} for s in segments):
            raise ValueError(f"object name part {part!r} is empty or has '.'/'..' segments")
        keys.extend(urllib.parse.quote(s, safe=_KEY_SAFE) for s in segments)
    return f"s3://{base.bucket}/{'/'.join(keys)}"


def make_minio_client(
    endpoint_url: str, access_key: str | None = None, secret_key: str | None = None
) -> Minio:
    """A MinIO client for ``endpoint_url`` (``http://`` or ``https://``; https without one).

    Empty keys mean anonymous access.
    """
    from minio import Minio  # noqa: PLC0415 - only S3 transports need minio

    endpoint = endpoint_url.strip() or DEFAULT_S3_ENDPOINT
    split = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    if split.scheme not in {"http", "https"} or not split.netloc:
        raise ValueError(
            f"S3 endpoint {split.scheme}://{split.hostname or ''} must be http(s)://host[:port]"
        )
    return Minio(
        split.netloc.rpartition("@")[2],
        access_key=access_key or None,
        secret_key=secret_key or None,
        secure=split.scheme == "https",
    )


def _describe(err: Exception) -> tuple[str, bool]:
    from minio.error import S3Error  # noqa: PLC0415

    if isinstance(err, S3Error):
        return f"{err.code}: {err.message}", err.code in _MISSING_CODES
    return f"{type(err).__name__}: {err}", False


def put_tensors(
    client: Minio,
    uri: str,
    tensors: Mapping[str, Any] | Sequence[Any],
    *,
    metadata: Mapping[str, str] | None = None,
) -> int:
    """Write ``tensors`` (in order) as the safetensors object ``uri``; blocking.

    Returns
    -------
    int
        The object's size in bytes.

    Raises
    ------
    SafetensorsError
        A tensor has no safetensors form (dtype, name).
    S3ObjectError
        The upload failed.
    """
    location = parse_s3_uri(uri, need_key=True)
    body = EncodedTensors(tensors, metadata=metadata)
    try:
        client.put_object(
            location.bucket,
            location.key,
            cast(BinaryIO, body),
            body.length,
            content_type=_CONTENT_TYPE,
        )
    except Exception as err:
        text, missing = _describe(err)
        raise S3ObjectError(f"cannot write {uri}: {text}", missing=missing) from None
    return body.length


@contextmanager
def open_object(client: Minio, uri: str, *, max_bytes: int) -> Iterator[SafetensorsReader]:
    """Open the safetensors object ``uri`` for streaming; blocking.

    The object's size is checked against ``max_bytes`` and its header before any tensor is
    read; the connection is released when the block ends.

    Raises
    ------
    S3ObjectError
        The object is missing or cannot be read (``missing`` tells which).
    SafetensorsError
        The object is larger than ``max_bytes`` or not a valid tensor set.
    """
    location = parse_s3_uri(uri, need_key=True)
    try:
        size = int(client.stat_object(location.bucket, location.key).size or 0)
    except Exception as err:
        text, missing = _describe(err)
        what = "no such object" if missing else "cannot read it"
        raise S3ObjectError(f"{uri}: {what} ({text})", missing=missing) from None
    if size > max_bytes:
        raise SafetensorsError(
            f"{uri}: the object holds {size} bytes, over the limit of {max_bytes}"
        )
    try:
        response = client.get_object(location.bucket, location.key)
    except Exception as err:
        text, missing = _describe(err)
        raise S3ObjectError(f"{uri}: cannot read it ({text})", missing=missing) from None
    from urllib3.exceptions import HTTPError  # noqa: PLC0415 - minio's HTTP layer

    try:
        yield SafetensorsReader(response, max_bytes=max_bytes, source=uri, object_size=size)
    except (OSError, HTTPError) as err:  # the connection dropped mid-object
        raise S3ObjectError(f"{uri}: reading failed ({type(err).__name__}: {err})") from None
    finally:
        response.close()
        response.release_conn()
