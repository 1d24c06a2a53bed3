"""Fixtures of the adapter tests: one real ``redis-server`` per module, a key prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from support.redis_server import RedisServer, redis_server

PASSWORD = "redis-test-password-never-logged"


@pytest.fixture(scope="module")
def redis_db() -> Iterator[RedisServer]:
    """A password-protected ``redis-server`` on loopback (skips without it, unless
    ``SEDNA_REQUIRE_REDIS=1``)."""
    with redis_server(password=PASSWORD) as server:
        yield server


@pytest.fixture
def key_prefix() -> str:
    """Keys of this test only (the server is shared by the module)."""
    return f"test:{uuid.uuid4().hex[:8]}:"
