"""``S3WeightsObjects``: the :class:`~sedna_aggregator.core.ports.WeightsObjects` port on S3.

One safetensors object per tensor set (the SDK's
:mod:`sedna.algorithms.transmitter.safetensors_codec`, shared with the trainers' S3
transmitter). The MinIO client blocks, so every call runs in a worker thread; :meth:`read`
yields one tensor at a time, the header checked before the first, so an aggregator reads a
client's update with memory for one layer at a time on top of what the round keeps.

Only objects under the configured ``AGG_DATA_PATH`` (``s3://bucket/prefix``) are read or
written: a header naming anything else is refused (``InvalidRequestError``), so a client can
not make the aggregator read, or overwrite, another job's objects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, ClassVar

from sedna.algorithms.transmitter.s3 import (
    S3Location,
    S3ObjectError,
    join_uri,
    make_minio_client,
    open_object,
    parse_s3_uri,
    put_tensors,
)
from sedna.algorithms.transmitter.safetensors_codec import SafetensorsError
from sedna_aggregator.core.errors import (
    InvalidRequestError,
    MalformedUpdateError,
    UpdateRejectedError,
)
from sedna_aggregator.core.model import Array

if TYPE_CHECKING:
    from minio import Minio

__all__ = ["ObjectStoreUnavailableError", "S3WeightsObjects"]


class ObjectStoreUnavailableError(UpdateRejectedError):
    """S3 could not be reached or refused the aggregator's keys (not the client's fault:
    UNAVAILABLE, so a client retries)."""

    reason: ClassVar[str] = "object_store_unavailable"
    code: ClassVar[str] = "UNAVAILABLE"


class S3WeightsObjects:
    """Weight objects under ``data_path`` (``s3://bucket/prefix``).

    Parameters
    ----------
    data_path
        ``AGG_DATA_PATH``: where the job's objects live.
    endpoint_url, access_key, secret_key
        ``S3_ENDPOINT_URL``, ``ACCESS_KEY_ID``, ``SECRET_ACCESS_KEY`` (never logged).
    client
        A ready MinIO client (tests); else one from the endpoint and keys.

    Raises
    ------
    ValueError
        ``data_path`` is not an ``s3://bucket[/prefix]`` URI.
    """

    def __init__(
        self,
        data_path: str,
        *,
        endpoint_url: str = "",
        access_key: str = "",
        secret_key: str = "",
        client: Minio | None = None,
    ) -> None:
        self.base: S3Location = parse_s3_uri(data_path.strip(), what="AGG_DATA_PATH")
        self.data_path = data_path.strip()
        self._client = (
            client
            if client is not None
            else make_minio_client(endpoint_url, access_key, secret_key)
        )

    def __repr__(self) -> str:
        return f"S3WeightsObjects({self.data_path!r})"

    def object_uri(self, session_id: str, round_number: int) -> str:
        """``<AGG_DATA_PATH>/<session>/global/round-<n>.safetensors``."""
        return join_uri(
            self.base, session_id, "global", f"round-{int(round_number):06d}.safetensors"
        )

    def _check(self, uri: str) -> str:
        try:
            location = parse_s3_uri(uri, what="weights_uri", need_key=True)
        except ValueError as err:
            raise InvalidRequestError(str(err)) from None
        if not location.is_under(self.base):
            raise InvalidRequestError(
                f"weights_uri {uri!r} is outside this job's AGG_DATA_PATH {self.data_path!r}"
            )
        return uri

    async def read(self, uri: str, *, max_bytes: int) -> AsyncIterator[tuple[str, Array]]:
        """The tensors of ``uri`` in stored order, one at a time (each read in a thread).

        Raises
        ------
        InvalidRequestError
            ``uri`` is not an object under ``AGG_DATA_PATH``.
        MalformedUpdateError
            The object is missing, over ``max_bytes`` or not a valid safetensors object (the
            message names the object, the tensor and the problem).
        ObjectStoreUnavailableError
            S3 could not be reached or refused the keys.
        """
        self._check(uri)
        stack = contextlib.ExitStack()
        try:
            try:
                reader = await asyncio.to_thread(
                    stack.enter_context, open_object(self._client, uri, max_bytes=max_bytes)
                )
                while True:
                    item = await asyncio.to_thread(reader.read_next)
                    if item is None:
                        break
                    yield item
                    del item  # one tensor held at a time, not the last and the next
            except SafetensorsError as err:
                raise MalformedUpdateError(f"weights object {err}") from None
            except S3ObjectError as err:
                if err.missing:
                    raise MalformedUpdateError(f"weights object {err}") from None
                raise ObjectStoreUnavailableError(f"weights object {err}") from None
        finally:
            stack.close()  # releases the HTTP connection; quick, no thread needed

    async def write(self, uri: str, tensors: Sequence[tuple[str, Array]]) -> None:
        """Store ``tensors`` (in order) as ``uri`` (under ``AGG_DATA_PATH``), replacing it.

        Raises
        ------
        InvalidRequestError
            ``uri`` is not an object under ``AGG_DATA_PATH``.
        MalformedUpdateError
            A tensor has no safetensors form.
        ObjectStoreUnavailableError
            The upload failed.
        """
        self._check(uri)
        try:
            await asyncio.to_thread(put_tensors, self._client, uri, list(tensors))
        except SafetensorsError as err:
            raise MalformedUpdateError(f"weights object {uri}: {err}") from None
        except S3ObjectError as err:
            raise ObjectStoreUnavailableError(str(err)) from None
