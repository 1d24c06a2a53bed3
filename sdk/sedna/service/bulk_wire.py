"""Framing of the aggregator's bulk port (``bulk_transfer.proto``), shared by both ends.

Every message is a 4-byte big-endian length and the serialized protobuf message; tensor
bytes follow some messages raw (see the proto). These helpers work on blocking sockets, plain
or TLS, whose timeout (:func:`set_io_timeout`) bounds each operation; the callers run them in
threads.

Plain sockets stay in blocking mode with the timeout in the kernel (``SO_RCVTIMEO``,
``SO_SNDTIMEO``), so that one ``recv(MSG_WAITALL)`` fills a whole chunk and one ``send``
writes a whole tensor: Python's own socket timeout polls before every partial read (64 KiB
or so on loopback), and in a multi-threaded server each of those reads took the GIL back,
waiting for the threads running Python and NumPy.
"""

from __future__ import annotations

import errno
import socket
import ssl
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
    "set_io_timeout",
    "timed_out",
]

MAX_MESSAGE_BYTES: Final = 1 << 20
"""Largest framed message (a request or an answer; tensor bytes are not messages)."""
_LENGTH: Final = struct.Struct("!I")
_TIMEVAL: Final = struct.Struct("@ll")
_TIMED_OUT: Final = frozenset({errno.EAGAIN, errno.EWOULDBLOCK})

M = TypeVar("M", bound=Message)


class BulkProtocolError(ConnectionError):
    """The peer broke the framing (oversized or undecodable message, or closed midway)."""


def set_io_timeout(sock: socket.socket, seconds: float) -> None:
    """Bound each read and each write of ``sock`` by ``seconds``: in the kernel for a plain
    socket (kept blocking), by Python's socket timeout for a TLS one."""
    if isinstance(sock, ssl.SSLSocket):
        sock.settimeout(seconds)
        return
    sock.settimeout(None)
    whole = int(seconds)
    micro = max(int((seconds - whole) * 1_000_000), 0 if whole else 1000)
    timeval = _TIMEVAL.pack(whole, micro)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


def timed_out(err: OSError) -> bool:
    """Whether ``err`` is a socket timeout (Python's, or the kernel's ``EAGAIN``)."""
    return isinstance(err, TimeoutError) or err.errno in _TIMED_OUT


def recv_exactly(sock: socket.socket, view: memoryview) -> None:
    """Fill ``view`` from ``sock``.

    Raises
    ------
    BulkProtocolError
        The peer closed the connection before ``view`` was full.
    TimeoutError
        A read waited longer than the socket's timeout (:func:`set_io_timeout`).
    OSError
        From the socket.
    """
    wanted = len(view)
    flags = 0 if isinstance(sock, ssl.SSLSocket) else socket.MSG_WAITALL
    while view:
        try:
            got = sock.recv_into(view, len(view), flags)
        except OSError as err:
            if timed_out(err) and not isinstance(err, TimeoutError):
                raise TimeoutError(f"no data for the socket's timeout ({err})") from None
            raise
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
