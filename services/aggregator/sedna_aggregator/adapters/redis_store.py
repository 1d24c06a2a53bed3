"""``RedisRoundStore``: the :class:`~sedna_aggregator.core.ports.RoundStore` port on Redis.

Same semantics as :class:`~sedna_aggregator.core.file_store.LocalFileRoundStore` (atomic
replace, no pickle), for aggregators whose disk does not survive them (a pod rescheduled to
another node) or several aggregator replicas sharing state.

Keys, per session (the id percent-encoded, so ``:`` and glob characters cannot collide)::

    <prefix><quoted id>:current          the generation holding the latest checkpoint
    <prefix><quoted id>:gen:<generation> a hash: "manifest" (JSON: scalars, history, and
                                         dtype/shape/chunks of each array) and the arrays'
                                         raw bytes as fields "a:<name>:<chunk>"

A save writes a new generation's hash (pipelined, arrays in chunks well under Redis's 512 MB
value limit), then, in one MULTI/EXEC transaction watched on the pointer, points ``current``
at it and deletes the previous generation. The pointer switch is the commit: a crash before
it leaves the previous checkpoint intact (the orphan hash is removed by the next save), a
crash after it leaves the new one. Arrays are raw little-endian bytes plus their dtype and
shape in the JSON manifest; nothing is pickled, and a load checks that every array's bytes
match its dtype and shape (``CheckpointError`` naming the array otherwise).

The password (``password=`` or in the URL) is never logged: messages show only
``host:port/db``.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlsplit

import numpy as np

from sedna_aggregator.core.checkpoint_manifest import checkpoint_from_manifest, manifest_of
from sedna_aggregator.core.errors import CheckpointError
from sedna_aggregator.core.model import Array, Checkpoint

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["FORMAT_VERSION", "RedisRoundStore", "redact_redis_url"]

FORMAT_VERSION: Final = 1
DEFAULT_KEY_PREFIX: Final = "sedna:aggregator:"
DEFAULT_CHUNK_BYTES: Final = 64 << 20
"""Bytes per Redis value of an array (Redis caps one value at 512 MB)."""
_MANIFEST: Final = b"manifest"
_DTYPE: Final = re.compile(r"^[<>|=]?[biufc][0-9]{1,2}$")
_EXTRA_DTYPES: Final = frozenset({"bfloat16"})
_SAVE_ATTEMPTS: Final = 5


def redact_redis_url(url: str) -> str:
    """``url`` as logs may show it: scheme, host, port and database, no user or password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _dtype_text(array: Array, name: str) -> str:
    dtype = array.dtype
    if dtype.name in _EXTRA_DTYPES:
        return dtype.name
    if dtype.hasobject or dtype.kind not in "biufc":
        raise CheckpointError(f"array {name!r} has dtype {dtype}; it cannot be checkpointed")
    return dtype.newbyteorder("<").str if dtype.byteorder != "|" else dtype.str


def _dtype_of(text: object, name: str) -> np.dtype[Any]:
    if not isinstance(text, str):
        raise CheckpointError(f"array {name!r}: dtype {text!r} is not a string")
    if text in _EXTRA_DTYPES:
        import importlib  # noqa: PLC0415 - only bfloat16 checkpoints need ml_dtypes

        try:
            dtype: np.dtype[Any] = np.dtype(getattr(importlib.import_module("ml_dtypes"), text))
        except ImportError:
            raise CheckpointError(f"array {name!r}: dtype {text} needs ml_dtypes") from None
        return dtype
    if not _DTYPE.match(text):
        raise CheckpointError(f"array {name!r}: unknown dtype {text!r}")
    try:
        return np.dtype(text)
    except TypeError:
        raise CheckpointError(f"array {name!r}: unknown dtype {text!r}") from None


class RedisRoundStore:
    """Checkpoints in Redis, one generation hash per session plus a pointer.

    Parameters
    ----------
    url
        ``redis://[user@]host:port/db`` (or ``rediss://`` for TLS, ``unix://``).
    password
        The Redis password (kept out of the URL so that the URL can be shown).
    key_prefix
        Prefix of every key (several aggregators may share one Redis with distinct ones).
    chunk_bytes
        Bytes per stored value of an array.
    client
        A ready ``redis.asyncio.Redis`` (tests); else one from ``url``.
    """

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        client: Redis | None = None,
    ) -> None:
        if chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes must be > 0, not {chunk_bytes}")
        self.where = redact_redis_url(url)
        self.key_prefix = key_prefix
        self.chunk_bytes = chunk_bytes
        if client is None:
            from redis.asyncio import Redis  # noqa: PLC0415 - the 'redis' extra

            client = Redis.from_url(url, password=password or None)
        self._redis: Redis = client

    def __repr__(self) -> str:
        return f"RedisRoundStore({self.where!r}, key_prefix={self.key_prefix!r})"

    # ------------------------------------------------------------------ keys

    def _session_key(self, session_id: str) -> str:
        return f"{self.key_prefix}{quote(session_id, safe='')}"

    def pointer_key(self, session_id: str) -> str:
        """The key naming ``session_id``'s current generation."""
        return f"{self._session_key(session_id)}:current"

    def generation_key(self, session_id: str, generation: str) -> str:
        """The hash of one generation of ``session_id``."""
        return f"{self._session_key(session_id)}:gen:{generation}"

    def _failed(self, what: str, err: Exception) -> CheckpointError:
        return CheckpointError(f"{what} (Redis at {self.where}): {type(err).__name__}: {err}")

    # ------------------------------------------------------------------ save

    def _encode(self, checkpoint: Checkpoint) -> dict[bytes, bytes]:
        fields: dict[bytes, bytes] = {}
        arrays: dict[str, dict[str, Any]] = {}

        def store(name: str, array: Array) -> None:
            dtype = _dtype_text(array, name)
            data = np.asarray(array, order="C")
            if dtype not in _EXTRA_DTYPES:
                data = data.astype(np.dtype(dtype), copy=False)  # little-endian bytes
            raw = data.reshape(-1).view(np.uint8).data if data.size else memoryview(b"")
            chunks = max(1, math.ceil(len(raw) / self.chunk_bytes))
            for i in range(chunks):
                part = raw[i * self.chunk_bytes : (i + 1) * self.chunk_bytes]
                fields[f"a:{name}:{i}".encode()] = bytes(part)
            arrays[name] = {
                "dtype": dtype,
                "shape": [int(d) for d in array.shape],
                "chunks": chunks,
                "nbytes": len(raw),
            }

        manifest = manifest_of(checkpoint, store)
        manifest.update(format=FORMAT_VERSION, arrays=arrays)
        fields[_MANIFEST] = json.dumps(manifest, allow_nan=False, default=str).encode()
        return fields

    async def save(self, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint`` as the session's latest: new generation, then pointer switch.

        Raises
        ------
        CheckpointError
            A value cannot be checkpointed, or Redis failed (the previous checkpoint stays).
        """
        from redis.exceptions import RedisError, WatchError  # noqa: PLC0415

        sid = checkpoint.session_id
        fields = self._encode(checkpoint)
        generation = f"{checkpoint.round:06d}-{uuid.uuid4().hex[:16]}"
        new_key = self.generation_key(sid, generation)
        pointer = self.pointer_key(sid)
        try:
            # The new generation first, in pieces (no single command holds the whole model).
            async with self._redis.pipeline(transaction=False) as pipe:
                batch: dict[bytes, bytes] = {}
                size = 0
                for name, value in fields.items():
                    batch[name] = value
                    size += len(value)
                    if size >= self.chunk_bytes:
                        pipe.hset(new_key, mapping=batch)  # type: ignore[arg-type]
                        await pipe.execute()
                        batch, size = {}, 0
                if batch:
                    pipe.hset(new_key, mapping=batch)  # type: ignore[arg-type]
                    await pipe.execute()
            # The commit: switch the pointer and drop the previous generation atomically.
            for _attempt in range(_SAVE_ATTEMPTS):
                try:
                    async with self._redis.pipeline(transaction=True) as pipe:
                        await pipe.watch(pointer)
                        old = await pipe.get(pointer)
                        pipe.multi()  # type: ignore[no-untyped-call]
                        pipe.set(pointer, generation)
                        if old is not None and _text(old) != generation:
                            pipe.delete(self.generation_key(sid, _text(old)))
                        await pipe.execute()
                    break
                except WatchError:  # another save of this session switched it meanwhile
                    continue
            else:
                await self._redis.delete(new_key)
                raise CheckpointError(
                    f"session {sid!r}: the checkpoint pointer kept changing during "
                    f"{_SAVE_ATTEMPTS} attempts (another aggregator saving the same session?)"
                )
        except RedisError as err:
            raise self._failed(f"cannot save the checkpoint of {sid!r}", err) from None
        await self._drop_stale(sid, keep=generation)

    async def _drop_stale(self, session_id: str, *, keep: str | None) -> None:
        """Delete generations other than ``keep`` (orphans of crashed saves); best effort."""
        from redis.exceptions import RedisError  # noqa: PLC0415

        pattern = self.generation_key(session_id, "*")
        keep_key = None if keep is None else self.generation_key(session_id, keep).encode()
        try:
            stale = [
                key
                async for key in self._redis.scan_iter(match=pattern, count=100)
                if key != keep_key
            ]
            if stale:
                # Only generations that are still not current (a concurrent save may have
                # switched to one of them since): checked and deleted in one transaction.
                async with self._redis.pipeline(transaction=True) as pipe:
                    await pipe.watch(self.pointer_key(session_id))
                    current = await pipe.get(self.pointer_key(session_id))
                    current_key = (
                        None
                        if current is None
                        else self.generation_key(session_id, _text(current)).encode()
                    )
                    doomed = [key for key in stale if key != current_key]
                    pipe.multi()  # type: ignore[no-untyped-call]
                    if doomed:
                        pipe.delete(*doomed)
                    await pipe.execute()
        except RedisError:
            return  # the next save tries again

    # ------------------------------------------------------------------ load

    async def load(self, session_id: str) -> Checkpoint | None:
        """The session's latest checkpoint, None when it has none.

        Raises
        ------
        CheckpointError
            Redis cannot be reached, or the checkpoint is corrupt (the message names the
            array or field at fault).
        """
        from redis.exceptions import RedisError  # noqa: PLC0415

        pointer = self.pointer_key(session_id)
        try:
            for _attempt in range(_SAVE_ATTEMPTS):
                generation = await self._redis.get(pointer)
                if generation is None:
                    return None
                key = self.generation_key(session_id, _text(generation))
                fields = {
                    _raw(name): _raw(value)
                    for name, value in (await self._redis.hgetall(key)).items()
                }
                if fields:
                    return self._decode(session_id, fields)
                if await self._redis.get(pointer) == generation:
                    raise CheckpointError(
                        f"the checkpoint of {session_id!r} (Redis at {self.where}) names "
                        f"generation {_text(generation)!r}, whose data is missing"
                    )
                # A save switched the pointer between the two reads: read again.
        except RedisError as err:
            raise self._failed(f"cannot read the checkpoint of {session_id!r}", err) from None
        raise CheckpointError(
            f"the checkpoint of {session_id!r} (Redis at {self.where}) kept changing while "
            "being read"
        )

    def _decode(self, session_id: str, fields: Mapping[bytes, bytes]) -> Checkpoint:
        where = f"the checkpoint of {session_id!r} (Redis at {self.where})"
        try:
            raw = fields.get(_MANIFEST)
            if raw is None:
                raise CheckpointError(f"{where}: no manifest")
            manifest = json.loads(raw)
            if not isinstance(manifest, dict):
                raise CheckpointError(f"{where}: the manifest is not a JSON object")
            if manifest.get("format") != FORMAT_VERSION:
                raise CheckpointError(
                    f"{where}: unknown checkpoint format {manifest.get('format')!r}"
                )
            arrays = {
                str(name): self._array(fields, str(name), entry, where)
                for name, entry in dict(manifest["arrays"]).items()
            }

            def array(name: object) -> Array:
                if not isinstance(name, str) or name not in arrays:
                    raise CheckpointError(f"{where}: the manifest names no array {name!r}")
                return arrays[name]

            return checkpoint_from_manifest(manifest, array)
        except CheckpointError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{where}: {type(err).__name__}: {err}") from err

    @staticmethod
    def _array(fields: Mapping[bytes, bytes], name: str, entry: Any, where: str) -> Array:
        if not isinstance(entry, dict):
            raise CheckpointError(f"{where}: array {name!r}: the manifest entry is not an object")
        dtype = _dtype_of(entry.get("dtype"), name)
        shape = entry.get("shape")
        chunks = entry.get("chunks")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise CheckpointError(f"{where}: array {name!r}: bad shape {shape!r}")
        if not isinstance(chunks, int) or isinstance(chunks, bool) or chunks < 1:
            raise CheckpointError(f"{where}: array {name!r}: bad chunk count {chunks!r}")
        parts = []
        for i in range(chunks):
            part = fields.get(f"a:{name}:{i}".encode())
            if part is None:
                raise CheckpointError(f"{where}: array {name!r}: chunk {i} of {chunks} is missing")
            parts.append(part)
        data = bytearray(b"".join(parts))
        expected = math.prod(shape) * dtype.itemsize
        if len(data) != expected:
            raise CheckpointError(
                f"{where}: array {name!r} holds {len(data)} bytes but dtype {dtype} x shape "
                f"{tuple(shape)} needs {expected}"
            )
        return np.frombuffer(data, dtype=dtype).reshape(shape)

    # ------------------------------------------------------------------ delete / close

    async def delete(self, session_id: str) -> None:
        """Forget the session (no error if there is nothing).

        Raises
        ------
        CheckpointError
            Redis failed.
        """
        from redis.exceptions import RedisError  # noqa: PLC0415

        try:
            await self._redis.delete(self.pointer_key(session_id))
        except RedisError as err:
            raise self._failed(f"cannot delete the checkpoint of {session_id!r}", err) from None
        await self._drop_stale(session_id, keep=None)

    async def ping(self) -> None:
        """Check that Redis answers (startup check).

        Raises
        ------
        CheckpointError
            Redis cannot be reached or refused the credentials.
        """
        from redis.exceptions import RedisError  # noqa: PLC0415

        try:
            await self._redis.ping()
        except RedisError as err:
            raise self._failed("Redis does not answer", err) from None

    async def aclose(self) -> None:
        """Close the connections."""
        await self._redis.aclose()
