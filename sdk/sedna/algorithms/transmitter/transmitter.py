"""Transmitters: how a federated-learning trainer's weights reach the aggregator and back.

Upstream names (``sedna.algorithms.transmitter``), real behaviour:

* :class:`WSTransmitter` (``TRANSMITTER=ws``, the default): the tensors travel inside the
  aggregation call itself, as chunked typed tensors over gRPC (upstream: a websocket). It
  holds no state; :class:`~sedna.service.aggregation_client.AggregationClient` does the work.
* :class:`S3Transmitter` (``TRANSMITTER=s3``): the tensors travel through object storage.
  :meth:`S3Transmitter.send` writes a set of named tensors as one safetensors object at an
  ``s3://bucket/key`` URI; :meth:`S3Transmitter.recv` reads one back tensor by tensor,
  checking the header first. Only the URI goes through the aggregation call.

:func:`get_transmitter_from_config` picks one from the worker's environment (``TRANSMITTER``,
``AGG_DATA_PATH``, ``S3_ENDPOINT_URL``, ``ACCESS_KEY_ID``, ``SECRET_ACCESS_KEY``).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final

import numpy.typing as npt

from sedna.algorithms.transmitter.s3 import (
    S3ObjectError,
    join_uri,
    make_minio_client,
    open_object,
    parse_s3_uri,
    put_tensors,
)
from sedna.algorithms.transmitter.safetensors_codec import SafetensorsError
from sedna.common.errors import SednaError

if TYPE_CHECKING:
    from minio import Minio

__all__ = [
    "DEFAULT_MAX_OBJECT_BYTES",
    "AbstractTransmitter",
    "S3Transmitter",
    "TransmitterError",
    "WSTransmitter",
    "get_transmitter_from_config",
]

Array = npt.NDArray[Any]

DEFAULT_MAX_OBJECT_BYTES: Final = 16 << 30
"""16 GiB: the largest object :meth:`S3Transmitter.recv` accepts by default."""
TRANSMITTER_ENV: Final = "TRANSMITTER"
AGG_DATA_PATH_ENV: Final = "AGG_DATA_PATH"
S3_ENDPOINT_ENV: Final = "S3_ENDPOINT_URL"
ACCESS_KEY_ENV: Final = "ACCESS_KEY_ID"
SECRET_KEY_ENV: Final = "SECRET_ACCESS_KEY"


class TransmitterError(SednaError):
    """A transmitter cannot be set up or cannot do what was asked (the message says why)."""


class AbstractTransmitter(ABC):
    """How tensors travel between a trainer and the aggregator (upstream's base class).

    Attributes
    ----------
    by_reference : bool
        True when the aggregation call carries only an object URI (S3), False when it
        carries the tensors themselves (gRPC streaming).
    parameters : dict
        Upstream's description of the transport (what Plato consumed).
    """

    by_reference: ClassVar[bool] = False

    @property
    @abstractmethod
    def parameters(self) -> dict[str, Any]:
        """Upstream's transport description."""

    @abstractmethod
    def send(self, data: Mapping[str, Any] | Sequence[Any], uri: str | None = None) -> str:
        """Send a tensor set; returns where it went."""

    @abstractmethod
    def recv(self, uri: str | None = None) -> list[tuple[str, Array]]:
        """Receive a tensor set."""


class WSTransmitter(AbstractTransmitter):
    """``TRANSMITTER=ws``: the tensors go inside the aggregation call (gRPC streaming).

    Upstream sent JSON over a websocket; here the
    :class:`~sedna.service.aggregation_client.AggregationClient` streams typed tensor chunks.
    There is no separate place to send to, so :meth:`send` and :meth:`recv` refuse with a
    :class:`TransmitterError` that says to use the client.
    """

    by_reference: ClassVar[bool] = False

    @property
    def parameters(self) -> dict[str, Any]:
        return {}

    def send(self, data: Mapping[str, Any] | Sequence[Any], uri: str | None = None) -> str:
        raise TransmitterError(
            "WSTransmitter carries tensors inside the aggregation call: push them with "
            "AggregationClient.push (FederatedLearning.train does)"
        )

    def recv(self, uri: str | None = None) -> list[tuple[str, Array]]:
        raise TransmitterError(
            "WSTransmitter carries tensors inside the aggregation call: pull them with "
            "AggregationClient.pull (FederatedLearning.train does)"
        )

    def __repr__(self) -> str:
        return "WSTransmitter()"


class S3Transmitter(AbstractTransmitter):
    """``TRANSMITTER=s3``: tensor sets as safetensors objects under an ``s3://`` prefix.

    Parameters
    ----------
    s3_endpoint_url
        ``S3_ENDPOINT_URL``: ``http(s)://host[:port]`` (https when no scheme is given; AWS
        when empty).
    access_key, secret_key
        ``ACCESS_KEY_ID``, ``SECRET_ACCESS_KEY`` (empty: anonymous). Never shown by ``repr``
        or in messages.
    transmitter_url
        ``AGG_DATA_PATH``: ``s3://bucket/prefix``, where the job's objects go.
    max_bytes
        Largest object :meth:`recv` accepts.
    client
        A ready MinIO client (tests); else one is made from the endpoint and keys.

    Raises
    ------
    ValueError
        ``transmitter_url`` is not an ``s3://bucket[/prefix]`` URI, or the endpoint is bad.

    Notes
    -----
    Objects are never unpickled: safetensors is raw typed bytes behind a JSON header, which
    :meth:`recv` checks before reading a tensor (see
    :mod:`sedna.algorithms.transmitter.safetensors_codec`).
    """

    by_reference: ClassVar[bool] = True

    def __init__(
        self,
        s3_endpoint_url: str,
        access_key: str,
        secret_key: str,
        transmitter_url: str,
        *,
        max_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
        client: Minio | None = None,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, not {max_bytes}")
        self.base = parse_s3_uri(transmitter_url.strip(), what=AGG_DATA_PATH_ENV)
        self.s3_endpoint_url = s3_endpoint_url
        self.transmitter_url = transmitter_url.strip()
        self.max_bytes = max_bytes
        self._access_key = access_key
        self._secret_key = secret_key
        self._client = (
            client
            if client is not None
            else make_minio_client(s3_endpoint_url, access_key, secret_key)
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> S3Transmitter:
        """The transmitter of a worker's environment (what the controller injects).

        ``AGG_DATA_PATH`` (required, ``s3://bucket/prefix``), ``S3_ENDPOINT_URL``,
        ``ACCESS_KEY_ID``, ``SECRET_ACCESS_KEY``; ``kwargs`` go to the constructor.

        Raises
        ------
        TransmitterError
            ``AGG_DATA_PATH`` is missing or not an ``s3://`` URI (the message names it).
        """
        env = os.environ if environ is None else environ
        path = env.get(AGG_DATA_PATH_ENV, "").strip()
        if not path:
            raise TransmitterError(
                f"TRANSMITTER=s3 needs {AGG_DATA_PATH_ENV} (s3://bucket/prefix where the "
                "job's weights go); it is not set (the job's spec.transmitter.s3.aggDataPath)"
            )
        try:
            return cls(
                env.get(S3_ENDPOINT_ENV, ""),
                env.get(ACCESS_KEY_ENV, ""),
                env.get(SECRET_KEY_ENV, ""),
                path,
                **kwargs,
            )
        except ValueError as err:
            raise TransmitterError(f"TRANSMITTER=s3: {err}") from None

    @property
    def parameters(self) -> dict[str, Any]:
        """Upstream's ``{"s3_endpoint_url", "s3_bucket", "access_key", "secret_key"}``.

        Holds the keys: never log it.
        """
        return {
            "s3_endpoint_url": self.s3_endpoint_url,
            "s3_bucket": self.transmitter_url,
            "access_key": self._access_key,
            "secret_key": self._secret_key,
        }

    def __repr__(self) -> str:
        return (
            f"S3Transmitter(s3_endpoint_url={self.s3_endpoint_url!r}, access_key='***', "
            f"secret_key='***', transmitter_url={self.transmitter_url!r})"
        )

    # ------------------------------------------------------------------ naming

    def object_uri(self, *parts: str) -> str:
        """``<transmitter_url>/<part>/<part>...``, each segment percent-encoded (``/`` kept).

        Raises
        ------
        ValueError
            No part, or an empty, ``.`` or ``..`` segment.
        """
        return join_uri(self.base, *parts)

    def update_uri(self, session_id: str, round_number: int, client_id: str) -> str:
        """Where a trainer writes its update of ``round_number``:
        ``<AGG_DATA_PATH>/<session>/round-<n>/<client>.safetensors``."""
        return self.object_uri(
            session_id, f"round-{int(round_number):06d}", f"{client_id}.safetensors"
        )

    # ------------------------------------------------------------------ transfer

    def _target(self, uri: str | None) -> str:
        target = self.transmitter_url if uri is None else uri
        parse_s3_uri(target, need_key=True)
        return target

    def send(
        self,
        data: Mapping[str, Any] | Sequence[Any],
        uri: str | None = None,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Write ``data`` as one safetensors object, replacing any object of that name.

        Parameters
        ----------
        data
            A mapping of names to arrays, ``(name, array)`` pairs, or a list of arrays
            (named ``layer.0``, ``layer.1``...); the order is kept.
        uri
            The object; default ``transmitter_url`` itself (which then must name an object).
        metadata
            Strings stored in the header's ``__metadata__``.

        Returns
        -------
        str
            The object's URI.

        Raises
        ------
        TransmitterError
            The upload failed (the message names the URI and the S3 error), or a tensor has
            no safetensors form.
        """
        target = self._target(uri)
        try:
            put_tensors(self._client, target, data, metadata=metadata)
        except (S3ObjectError, SafetensorsError) as err:
            raise TransmitterError(f"S3Transmitter.send: {err}") from None
        return target

    def iter_recv(
        self, uri: str | None = None, *, max_bytes: int | None = None
    ) -> Iterator[tuple[str, Array]]:
        """The tensors of object ``uri`` one at a time (bounded memory), in stored order.

        Raises
        ------
        TransmitterError
            The object is missing, unreadable, over ``max_bytes`` (default: the
            transmitter's) or not a valid safetensors object; the message names the URI,
            the tensor and the problem.
        """
        target = self._target(uri)
        limit = self.max_bytes if max_bytes is None else max_bytes
        try:
            with open_object(self._client, target, max_bytes=limit) as reader:
                yield from reader
        except (S3ObjectError, SafetensorsError) as err:
            raise TransmitterError(f"S3Transmitter.recv: {err}") from None

    def recv(
        self, uri: str | None = None, *, max_bytes: int | None = None
    ) -> list[tuple[str, Array]]:
        """All tensors of object ``uri`` as ``[(name, array)]`` (see :meth:`iter_recv`)."""
        return list(self.iter_recv(uri, max_bytes=max_bytes))


def get_transmitter_from_config(
    environ: Mapping[str, str] | None = None,
) -> WSTransmitter | S3Transmitter:
    """The transmitter named by ``TRANSMITTER`` (upstream's helper).

    ``ws`` (default) or ``grpc``: :class:`WSTransmitter`; ``s3``:
    :meth:`S3Transmitter.from_env`.

    Raises
    ------
    TransmitterError
        Another ``TRANSMITTER`` value, or ``s3`` without a usable ``AGG_DATA_PATH``.
    """
    env = os.environ if environ is None else environ
    name = (env.get(TRANSMITTER_ENV, "") or "ws").strip().lower()
    if name in {"ws", "grpc"}:
        return WSTransmitter()
    if name == "s3":
        return S3Transmitter.from_env(env)
    raise TransmitterError(f"{TRANSMITTER_ENV}={name!r}: expected 'ws' (or 'grpc') or 's3'")
