"""SharedChunks: the chunk messages that concurrent pulls of one round share."""

from __future__ import annotations

import pytest

from sedna_aggregator.pull_chunks import SharedChunks


def test_the_pulls_behind_the_first_get_its_message() -> None:
    shared = SharedChunks(capacity=4)
    key = ("default/job", 3, 0, 0)
    assert shared.get(key) is None
    message = b"chunk"
    shared.put(key, message)
    assert shared.get(key) is message
    assert shared.get(key) is message
    assert (shared.hits, shared.misses) == (2, 1)


def test_only_the_most_recent_messages_are_kept() -> None:
    shared = SharedChunks(capacity=2)
    for offset in range(3):
        shared.put(("s", 1, 0, offset), bytes([offset]))
    assert len(shared) == 2
    assert shared.get(("s", 1, 0, 0)) is None  # the oldest went first
    assert shared.get(("s", 1, 0, 1)) == b"\x01"
    assert shared.get(("s", 1, 0, 2)) == b"\x02"


def test_keys_keep_sessions_rounds_and_chunks_apart() -> None:
    shared = SharedChunks()
    shared.put(("a", 1, 0, 0), b"a1")
    for other in [("b", 1, 0, 0), ("a", 2, 0, 0), ("a", 1, 1, 0), ("a", 1, 0, 1024)]:
        assert shared.get(other) is None


def test_capacity_zero_keeps_nothing() -> None:
    shared = SharedChunks(capacity=0)
    shared.put(("s", 1, 0, 0), b"x")
    assert len(shared) == 0
    assert shared.get(("s", 1, 0, 0)) is None


def test_a_negative_capacity_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity must be >= 0"):
        SharedChunks(capacity=-1)
