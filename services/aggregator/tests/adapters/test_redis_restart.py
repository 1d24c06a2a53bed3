"""An aggregator with ``redis_url`` checkpoints to Redis; a new one resumes the session."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.redis_server import RedisServer

from sedna.runtime import ServiceServer
from sedna.service.aggregation_client import AggregationClient
from sedna_aggregator import app
from sedna_aggregator.adapters.redis_store import RedisRoundStore
from sedna_aggregator.core import LocalFileRoundStore
from sedna_aggregator.settings import AggregatorSettings

SID = "default/fl-redis"
SHAPES = [(4, 3), (3,)]


class Aggregator:
    """``sedna-aggregator`` (``app.setup``) served from its own event loop in a thread."""

    def __init__(self, settings: AggregatorSettings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = ServiceServer(settings)

        async def start() -> None:
            app.setup(self.server, settings)
            await self.server.start()

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(20)
        self.port = int(self.server.address.rsplit(":", 1)[1])

    def stop(self) -> None:
        if not self.loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(self.server.stop(0.1), self.loop).result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def settings(redis_db: RedisServer, key_prefix: str) -> AggregatorSettings:
    assert redis_db.password is not None
    return AggregatorSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        drain_seconds=0.1,
        log_format="console",
        redis_url=redis_db.url,
        redis_password=redis_db.password,
        redis_key_prefix=key_prefix,
        exit_round=3,
        min_participants=2,
        round_timeout_seconds=30,
    )


@pytest.fixture
def started() -> Iterator[list[Aggregator]]:
    servers: list[Aggregator] = []
    yield servers
    for server in servers:
        server.stop()


def _weights(seed: int) -> list[np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def _round(clients: list[AggregationClient], round_number: int) -> list[np.ndarray[Any, Any]]:
    for k, client in enumerate(clients):
        client.push(round_number, _weights(10 * round_number + k), sample_count=10 * (k + 1))
    results = [client.pull(round_number, timeout=20) for client in clients]
    assert all(r.round == round_number for r in results)
    return results[0].weights


def test_a_new_aggregator_resumes_from_redis_at_the_right_round(
    settings: AggregatorSettings,
    started: list[Aggregator],
    redis_db: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    first = Aggregator(settings)
    started.append(first)
    clients = [AggregationClient("127.0.0.1", first.port, timeout=20) for _ in range(2)]
    try:
        for k, client in enumerate(clients):
            client.join(SID, f"trainer-{k}", 10 * (k + 1))
        _round(clients, 1)
        before = _round(clients, 2)
    finally:
        for client in clients:
            client.close()
    first.stop()  # the aggregator goes away; its memory with it

    second = Aggregator(settings)
    started.append(second)
    clients = [AggregationClient("127.0.0.1", second.port, timeout=20) for _ in range(2)]
    try:
        joined = [
            client.join(SID, f"trainer-{k}", 10 * (k + 1)) for k, client in enumerate(clients)
        ]
        assert [j.current_round for j in joined] == [3, 3]
        resumed = clients[0].pull(2, timeout=20)
        assert resumed.round == 2
        for got, want in zip(resumed.weights, before, strict=True):
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
        assert set(resumed.participants) == {"trainer-0", "trainer-1"}
        # The job goes on from there and completes at its exit round.
        after = _round(clients, 3)
        assert clients[1].pull(3, timeout=20).exit
        expected = [
            (_weights(30)[i] * 10.0 + _weights(31)[i] * 20.0) / 30.0 for i in range(len(SHAPES))
        ]
        for got, want in zip(after, expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6)
    finally:
        for client in clients:
            client.close()
    assert redis_db.password is not None
    assert redis_db.password not in caplog.text
    assert f"checkpoints in Redis at {redis_db.url}" in caplog.text


def test_the_store_follows_the_settings(tmp_path: Path, redis_db: RedisServer) -> None:
    assert app.make_store(AggregatorSettings()) is None
    assert isinstance(
        app.make_store(AggregatorSettings(checkpoint_dir=tmp_path)), LocalFileRoundStore
    )
    settings = AggregatorSettings(
        checkpoint_dir=tmp_path, redis_url=redis_db.url, redis_password="secret-word"
    )
    store = app.make_store(settings)
    assert isinstance(store, RedisRoundStore)  # Redis wins over the directory
    assert "secret-word" not in repr(store)
    assert "secret-word" not in repr(settings)
    assert "secret-word" not in settings.model_dump_json()
    with pytest.raises(ValueError, match="must not hold a password"):
        AggregatorSettings(redis_url="redis://:secret-word@127.0.0.1:6379/0")
    with pytest.raises(ValueError, match="redis://, rediss:// or unix://"):
        AggregatorSettings(redis_url="http://127.0.0.1:6379")


def test_the_s3_settings_take_the_controllers_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGG_DATA_PATH", "s3://fl-data/job")
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("ACCESS_KEY_ID", "access-id-hidden")
    monkeypatch.setenv("SECRET_ACCESS_KEY", "secret-key-hidden")
    settings = AggregatorSettings()
    assert settings.agg_data_path == "s3://fl-data/job"
    assert settings.s3_endpoint_url == "http://127.0.0.1:9000"
    assert settings.s3_secret_access_key.get_secret_value() == "secret-key-hidden"
    for shown in (repr(settings), settings.model_dump_json()):
        assert "secret-key-hidden" not in shown
        assert "access-id-hidden" not in shown
    objects = app.make_objects(settings)
    assert objects is not None
    assert objects.object_uri(SID, 4) == (
        "s3://fl-data/job/default/fl-redis/global/round-000004.safetensors"
    )
    monkeypatch.setenv("AGG_DATA_PATH", "./")  # upstream's default: no S3 transmitter
    assert app.make_objects(AggregatorSettings()) is None
    monkeypatch.setenv("AGG_DATA_PATH", "/data/fl")
    with pytest.raises(ValueError, match="not an s3://bucket"):
        AggregatorSettings()
