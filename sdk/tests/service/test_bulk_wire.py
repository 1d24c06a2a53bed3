"""The bulk port's framing helpers (``sedna.service.bulk_wire``)."""

from __future__ import annotations

import socket
import struct

import pytest

from sedna.api.aggregator.v1 import bulk_transfer_pb2 as bulk_pb
from sedna.service.bulk_wire import (
    MAX_MESSAGE_BYTES,
    BulkProtocolError,
    chunk_spans,
    recv_message,
    send_message,
)


def test_chunk_spans_cut_each_tensor_at_chunk_size() -> None:
    assert list(chunk_spans([10, 0, 4], 4)) == [(0, 0, 4), (0, 4, 4), (0, 8, 2), (2, 0, 4)]
    assert list(chunk_spans([0, 0], 0)) == []
    with pytest.raises(ValueError, match="chunk_size"):
        list(chunk_spans([3], 0))


def test_a_message_round_trips_and_eof_between_messages_is_none() -> None:
    left, right = socket.socketpair()
    with left, right:
        sent = bulk_pb.BulkRequest(token="t", timeout_seconds=2.5)
        sent.pull.session_id = "ns/job"
        send_message(left, sent)
        got = recv_message(right, bulk_pb.BulkRequest, eof_ok=True)
        assert got == sent
        left.shutdown(socket.SHUT_WR)
        assert recv_message(right, bulk_pb.BulkRequest, eof_ok=True) is None


def test_oversized_cut_and_undecodable_messages_are_protocol_errors() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(struct.pack("!I", MAX_MESSAGE_BYTES + 1))
        with pytest.raises(BulkProtocolError, match="over the"):
            recv_message(right, bulk_pb.BulkRequest)
    left, right = socket.socketpair()
    with left, right:
        left.sendall(struct.pack("!I", 3) + b"\xff\xff\xff")
        with pytest.raises(BulkProtocolError, match="undecodable"):
            recv_message(right, bulk_pb.BulkRequest)
    left, right = socket.socketpair()
    with left, right:
        left.sendall(struct.pack("!I", 10) + b"abc")
        left.shutdown(socket.SHUT_WR)
        with pytest.raises(BulkProtocolError, match="closed the connection 3 bytes into 10"):
            recv_message(right, bulk_pb.BulkRequest)
