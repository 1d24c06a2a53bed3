"""RedisRoundStore against a real redis-server: round trips, atomic replace, corrupt data,
passwords, and a session restored from it."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from support.redis_server import RedisServer

from sedna_aggregator.adapters.redis_store import RedisRoundStore
from sedna_aggregator.core import (
    Checkpoint,
    CheckpointError,
    ManualClock,
    RoundRecord,
    Session,
    SessionConfig,
    run_inline,
)

redis_asyncio = pytest.importorskip("redis.asyncio")

Array = npt.NDArray[Any]
Weights = Callable[..., list[Array]]
SID = "team-a/fl job:*?"  # separators and glob characters must not confuse the keys
CLIENTS = {"a": 10, "b": 20, "c": 30}


@pytest.fixture
async def store(redis_db: RedisServer, key_prefix: str) -> AsyncIterator[RedisRoundStore]:
    store = RedisRoundStore(redis_db.url, password=redis_db.password, key_prefix=key_prefix)
    yield store
    await store.aclose()


@pytest.fixture
async def raw(redis_db: RedisServer) -> AsyncIterator[Any]:
    """A plain client, to look at and damage the stored keys."""
    client = redis_asyncio.Redis.from_url(redis_db.url, password=redis_db.password)
    yield client
    await client.aclose()


def _checkpoint(round_number: int, seed: int = 0, **fields: Any) -> Checkpoint:
    rng = np.random.default_rng(seed)
    weights = [
        rng.standard_normal((3, 4)).astype(np.float32),
        rng.standard_normal(5),
        np.array(2.5, dtype=np.float64),
    ]
    state: dict[str, Any] = {
        "weights.0": weights[0],  # shared with the global weights: stored once
        "moment": rng.standard_normal((3, 4)).astype(">f8"),  # big-endian comes back equal
        "counts": np.arange(6, dtype=np.int64).reshape(2, 3),
        "flags": np.array([True, False, True]),
        "step": np.int64(round_number),
        "lr": 0.1,
        "name": "adam",
        "none": None,
    }
    record = RoundRecord(
        round=round_number,
        participants=("a", "b"),
        dropped=("c",),
        total_samples=30,
        metrics={"acc": 0.5},
        started_at=1.0,
        duration=2.0,
        bytes_in=123,
    )
    base: dict[str, Any] = {
        "session_id": SID,
        "round": round_number,
        "global_weights": weights,
        "aggregator_state": state,
        "history": (record,),
        "aggregation": "FedAdam",
        "config": {"exit_round": 4},
    }
    base.update(fields)
    return Checkpoint(**base)


def _assert_same(loaded: Checkpoint, saved: Checkpoint) -> None:
    assert loaded.round == saved.round
    assert loaded.aggregation == saved.aggregation
    assert loaded.history == saved.history
    assert dict(loaded.config) == dict(saved.config)
    assert loaded.global_weights is not None
    assert saved.global_weights is not None
    for got, want in zip(loaded.global_weights, saved.global_weights, strict=True):
        assert got.dtype == want.dtype
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert set(loaded.aggregator_state) == set(saved.aggregator_state)
    for key, want in saved.aggregator_state.items():
        got = loaded.aggregator_state[key]
        if isinstance(want, np.ndarray):
            assert isinstance(got, np.ndarray)
            assert got.shape == want.shape
            assert got.dtype == want.dtype.newbyteorder("=")
            np.testing.assert_array_equal(got, want)
        elif isinstance(want, np.generic):
            assert got == want.item()
        else:
            assert got == want


async def _keys(raw: Any, store: RedisRoundStore) -> list[bytes]:
    return sorted([key async for key in raw.scan_iter(match=f"{store.key_prefix}*")])


async def test_round_trip_and_replace_keeps_one_generation(
    store: RedisRoundStore, raw: Any
) -> None:
    assert await store.load(SID) is None
    first = _checkpoint(1, seed=1)
    await store.save(first)
    loaded_first = await store.load(SID)
    assert loaded_first is not None
    _assert_same(loaded_first, first)
    second = _checkpoint(2, seed=2, completed=True, reason="exit_round")
    await store.save(second)
    loaded = await store.load(SID)
    assert loaded is not None
    _assert_same(loaded, second)
    assert loaded.completed
    assert loaded.reason == "exit_round"
    # Arrays come back writable (sessions update some in place) and share nothing with Redis.
    assert loaded.global_weights is not None
    assert loaded.global_weights[0].flags.writeable
    # The pointer and the one current generation, nothing else.
    keys = await _keys(raw, store)
    assert len(keys) == 2
    assert store.pointer_key(SID).encode() in keys
    await store.delete(SID)
    assert await store.load(SID) is None
    assert await _keys(raw, store) == []
    await store.delete(SID)  # nothing there: no error


async def test_arrays_larger_than_a_chunk_are_split_and_joined(
    redis_db: RedisServer, key_prefix: str, raw: Any
) -> None:
    store = RedisRoundStore(
        redis_db.url, password=redis_db.password, key_prefix=key_prefix, chunk_bytes=7
    )
    try:
        saved = _checkpoint(3, seed=3)
        await store.save(saved)
        loaded = await store.load(SID)
        assert loaded is not None
        _assert_same(loaded, saved)
        generation = (await raw.get(store.pointer_key(SID))).decode()
        fields = await raw.hkeys(store.generation_key(SID, generation))
        assert b"a:global.0:6" in fields  # 48 bytes in 7-byte chunks
    finally:
        await store.aclose()


async def test_a_crash_before_the_pointer_switch_keeps_the_previous_checkpoint(
    store: RedisRoundStore, raw: Any
) -> None:
    saved = _checkpoint(1, seed=1)
    await store.save(saved)
    # A save that died after writing its generation but before the commit.
    orphan = store.generation_key(SID, "000002-deadbeef")
    await raw.hset(orphan, mapping={"manifest": b"{half written"})
    loaded = await store.load(SID)
    assert loaded is not None
    assert loaded.round == 1
    # The next save removes the orphan.
    await store.save(_checkpoint(2, seed=2))
    assert not await raw.exists(orphan)
    assert len(await _keys(raw, store)) == 2


async def test_a_value_that_cannot_be_stored_fails_before_writing(
    store: RedisRoundStore, raw: Any
) -> None:
    saved = _checkpoint(1, seed=1)
    await store.save(saved)
    bad = _checkpoint(2, aggregator_state={"thing": object()})
    with pytest.raises(CheckpointError, match="'thing' is a object"):
        await store.save(bad)
    strings = _checkpoint(2, aggregator_state={"names": np.array(["a", "b"])})
    with pytest.raises(CheckpointError, match=r"array 'agg.names' has dtype <U1"):
        await store.save(strings)
    loaded = await store.load(SID)
    assert loaded is not None
    assert loaded.round == 1
    assert len(await _keys(raw, store)) == 2


async def _generation(raw: Any, store: RedisRoundStore) -> str:
    return str(store.generation_key(SID, (await raw.get(store.pointer_key(SID))).decode()))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda m: m["arrays"]["global.1"].update(shape=[6]), r"'global\.1' holds 40 bytes"),
        (lambda m: m["arrays"]["global.0"].update(dtype="O"), r"'global\.0': unknown dtype 'O'"),
        (lambda m: m["arrays"]["global.0"].update(dtype="V8"), r"unknown dtype 'V8'"),
        (lambda m: m["arrays"]["agg.counts"].update(chunks=3), r"'agg\.counts': chunk 1 of 3"),
        (lambda m: m["arrays"]["global.0"].update(shape=[-1, 4]), r"'global\.0': bad shape"),
        (lambda m: m.update(format=99), "unknown checkpoint format 99"),
        (lambda m: m.update(global_weights=["nope"]), "names no array 'nope'"),
        (lambda m: m.pop("history"), "KeyError"),
    ],
)
async def test_corrupt_checkpoints_name_the_problem(
    store: RedisRoundStore, raw: Any, damage: Callable[[dict[str, Any]], None], message: str
) -> None:
    await store.save(_checkpoint(1))
    key = await _generation(raw, store)
    manifest = json.loads(await raw.hget(key, "manifest"))
    damage(manifest)
    await raw.hset(key, "manifest", json.dumps(manifest))
    with pytest.raises(CheckpointError, match=message):
        await store.load(SID)


async def test_truncated_bytes_missing_manifest_and_missing_generation(
    store: RedisRoundStore, raw: Any
) -> None:
    await store.save(_checkpoint(1))
    key = await _generation(raw, store)
    await raw.hset(key, "a:global.0:0", b"\x00" * 5)
    with pytest.raises(CheckpointError, match=r"array 'global\.0' holds 5 bytes but dtype"):
        await store.load(SID)
    await raw.hset(key, "manifest", b"\xff not json")
    with pytest.raises(CheckpointError, match=r"ValueError|UnicodeDecodeError"):
        await store.load(SID)
    await raw.hdel(key, "manifest")
    with pytest.raises(CheckpointError, match="no manifest"):
        await store.load(SID)
    await raw.delete(key)
    with pytest.raises(CheckpointError, match="whose data is missing"):
        await store.load(SID)


async def test_wrong_password_and_unreachable_server_are_clear_and_secret_free(
    redis_db: RedisServer, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = RedisRoundStore(redis_db.url, password="not-the-password", key_prefix=key_prefix)
    try:
        with pytest.raises(CheckpointError, match=r"Redis at redis://127\.0\.0\.1:\d+/0") as info:
            await wrong.load(SID)
        assert "not-the-password" not in str(info.value)
        assert "not-the-password" not in repr(wrong)
        with pytest.raises(CheckpointError):
            await wrong.save(_checkpoint(1))
        with pytest.raises(CheckpointError):
            await wrong.ping()
    finally:
        await wrong.aclose()
    closed = RedisRoundStore("redis://127.0.0.1:1/0", key_prefix=key_prefix)
    try:
        with pytest.raises(CheckpointError, match="cannot read the checkpoint"):
            await closed.load(SID)
    finally:
        await closed.aclose()
    assert "not-the-password" not in caplog.text
    assert redis_db.password not in caplog.text  # type: ignore[operator]


def _config(**fields: Any) -> SessionConfig:
    base: dict[str, Any] = {
        "aggregation": "FedAdam",
        "aggregation_parameters": {"eta": "0.05", "beta_1": 0.9, "beta_2": 0.99},
        "exit_round": 4,
        "min_participants": 3,
        "expected_clients": 3,
        "round_timeout": 30.0,
    }
    base.update(fields)
    return SessionConfig(**base)


async def _round(session: Session, round_number: int, make_weights: Weights) -> None:
    for cid, n in CLIENTS.items():
        await session.join(cid, n)
    for k, (cid, n) in enumerate(CLIENTS.items()):
        await session.submit_update(
            cid, round_number, make_weights(100 * round_number + k), n, {"acc": 0.5}
        )
    await session.drain()
    assert session.completed_round == round_number


async def test_a_session_resumes_from_redis_with_identical_weights_and_optimiser_state(
    redis_db: RedisServer, key_prefix: str, make_weights: Weights
) -> None:
    initial = make_weights(0)
    kwargs: dict[str, Any] = {"clock": ManualClock(), "runner": run_inline}
    steady = Session(SID, _config(), initial_weights=initial, **kwargs)
    store = RedisRoundStore(redis_db.url, password=redis_db.password, key_prefix=key_prefix)
    first = await Session.restore(SID, _config(), store, initial_weights=initial, **kwargs)
    assert first.restored_round is None
    for r in (1, 2):
        await _round(steady, r, make_weights)
        await _round(first, r, make_weights)
    await first.aclose()
    await store.aclose()

    again = RedisRoundStore(redis_db.url, password=redis_db.password, key_prefix=key_prefix)
    try:
        second = await Session.restore(SID, _config(), again, **kwargs)
        assert second.restored_round == 2
        assert second.current_round == 3
        assert second.global_weights is not None
        assert steady.global_weights is not None
        for got, want in zip(second.global_weights, steady.global_weights, strict=True):
            np.testing.assert_array_equal(got, want)
        # The optimiser state came back too: round 3 matches the session that never stopped.
        await _round(steady, 3, make_weights)
        await _round(second, 3, make_weights)
        assert second.global_weights is not None
        assert steady.global_weights is not None
        for got, want in zip(second.global_weights, steady.global_weights, strict=True):
            np.testing.assert_array_equal(got, want)
        await second.aclose()
        # Another aggregation on the same checkpoint is refused, naming both.
        with pytest.raises(CheckpointError, match=r"'FedAdam'.*'FedAvg'"):
            await Session.restore(SID, _config(aggregation="FedAvg"), again, **kwargs)
    finally:
        await again.aclose()
    await steady.aclose()
