"""Framing of the aggregator's bulk port (``bulk_transfer.proto``), shared by both ends.

Every message is a 4-byte big-endian length and the serialized protobuf message; tensor
bytes follow some messages raw (see the proto). These helpers work on blocking sockets
(plain or TLS) whose timeout bounds each operation; the callers run them in threads.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator, Sequence
from typing import Final, TypeVar

from google.protobuf.message import DecodeError, Message

__all__ = [
    "MAX_MESSAGE_BYTES",
    "BulkProtocolError",
    "chunk_spans",
    "recv_exactly",
    "recv_message",
    "send_message",
]

MAX_MESSAGE_BYTES: Final = 1 << 20
"""Largest framed message (a request or an answer; tensor bytes are not messages)."""
_LENGTH: Final = struct.Struct("!I")

M = TypeVar("M", bound=Message)


class BulkProtocolError(ConnectionError):
    """The peer broke the framing (oversized or undecodable message, or closed midway)."""


def recv_exactly(sock: socket.socket, view: memoryview) -> None:
    """Fill ``view`` from ``sock``.

    Raises
    ------
    BulkProtocolError
        The peer closed the connection before ``view`` was full.
    TimeoutError, OSError
        From the socket (its timeout bounds each read).
    """
    wanted = len(view)
    while view:
        got = sock.recv_into(view)
        if not got:
            raise BulkProtocolError(
                f"the peer closed the connection {wanted - len(view)} bytes into {wanted}"
            )
        view = view[got:]


def send_message(sock: socket.socket, message: Message) -> None:
    """Send ``message`` framed (length first, one ``sendall``)."""
    data = message.SerializeToString()
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(
            f"{type(message).__name__} of {len(data)} bytes exceeds the bulk port's "
            f"{MAX_MESSAGE_BYTES}-byte message limit"
        )
    sock.sendall(_LENGTH.pack(len(data)) + data)


def recv_message(sock: socket.socket, cls: type[M], *, eof_ok: bool = False) -> M | None:
    """Receive one framed ``cls`` message.

    Parameters
    ----------
    eof_ok
        Return None when the peer closed the connection before the message's first byte
        (between requests); otherwise that is a :class:`BulkProtocolError` too.

    Raises
    ------
    BulkProtocolError
        Oversized, undecodable, or cut message.
    """
    header = bytearray(_LENGTH.size)
    view = memoryview(header)
    if eof_ok:
        got = sock.recv_into(view)
        if not got:
            return None
        view = view[got:]
    recv_exactly(sock, view)
    (length,) = _LENGTH.unpack(header)
    if length > MAX_MESSAGE_BYTES:
        raise BulkProtocolError(
            f"a {cls.__name__} of {length} bytes announced, over the {MAX_MESSAGE_BYTES}-byte "
            "limit (is the peer speaking the bulk protocol?)"
        )
    data = bytearray(length)
    recv_exactly(sock, memoryview(data))
    message = cls()
    try:
        message.ParseFromString(bytes(data))
    except DecodeError as err:
        raise BulkProtocolError(f"undecodable {cls.__name__}: {err}") from None
    return message


def chunk_spans(byte_lengths: Sequence[int], chunk_size: int) -> Iterator[tuple[int, int, int]]:
    """``(tensor_index, offset, size)`` of every chunk of tensors of these byte lengths, in
    stream order: the cuts a ``TensorChunk`` stream of ``chunk_size`` would have (a tensor's
    last chunk may be shorter; an empty tensor has none).
    """
    if chunk_size <= 0 and any(byte_lengths):
        raise ValueError(f"chunk_size must be > 0, not {chunk_size}")
    for index, length in enumerate(byte_lengths):
        if not length:
            continue
        for offset in range(0, length, chunk_size):
            yield index, offset, min(chunk_size, length - offset)
