"""Checkpoints: the local-file store (npz + JSON, atomic, no pickle) and restart/resume."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from sedna_aggregator.core import (
    Checkpoint,
    CheckpointError,
    LocalFileRoundStore,
    ManualClock,
    Session,
    SessionConfig,
    SessionState,
    run_inline,
)

Array = npt.NDArray[Any]
Weights = Callable[..., list[Array]]

SID = "team-a/fl-job"
CLIENTS = {"a": 10, "b": 20, "c": 30}


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


async def _join(session: Session) -> None:
    for cid, n in CLIENTS.items():
        await session.join(cid, n)


async def test_restart_resumes_with_identical_weights_and_optimiser_state(
    tmp_path: Path, make_weights: Weights
) -> None:
    initial = make_weights(0)
    kwargs: dict[str, Any] = {"clock": ManualClock(), "runner": run_inline}
    # The reference: a session that never restarts.
    steady = Session(SID, _config(), initial_weights=initial, **kwargs)
    # The victim: checkpoints to disk, "crashes" after round 2 (mid-round 3).
    store = LocalFileRoundStore(tmp_path)
    first = await Session.restore(SID, _config(), store, initial_weights=initial, **kwargs)
    assert first.restored_round is None
    for r in (1, 2):
        await _round(steady, r, make_weights)
        await _round(first, r, make_weights)
    await _join(first)
    await first.submit_update("a", 3, make_weights(7), 10)  # lost with the crash
    await first.aclose()

    second = await Session.restore(SID, _config(), LocalFileRoundStore(tmp_path), **kwargs)
    assert second.restored_round == 2
    assert second.state is SessionState.WAITING_FOR_CLIENTS
    assert second.current_round == 3
    assert [r.round for r in second.history] == [1, 2]
    assert second.history == steady.history
    latest = await second.wait_for_round(0)
    assert latest.round == 2
    assert second.global_weights is not None
    assert steady.global_weights is not None
    for got, want in zip(second.global_weights, steady.global_weights, strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    saved, live = second.aggregator.state_dict(), steady.aggregator.state_dict()
    assert saved.keys() == live.keys()
    assert {k for k in saved if k.startswith(("m.", "v."))}  # FedAdam moments are there
    for key, value in live.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(saved[key], value)
        else:
            assert saved[key] == value

    # Both run rounds 3 and 4 with the same updates and end bit-identical.
    for r in (3, 4):
        await _round(steady, r, make_weights)
        await _round(second, r, make_weights)
    assert second.state is SessionState.COMPLETED
    for got, want in zip(second.global_weights, steady.global_weights, strict=True):
        np.testing.assert_array_equal(got, want)

    # A restart after completion stays completed and tells clients to exit.
    third = await Session.restore(SID, _config(), store, **kwargs)
    assert third.state is SessionState.COMPLETED
    assert (await third.wait_for_round(5)).exit


async def test_checkpoint_files_are_npz_and_json_without_pickle(
    tmp_path: Path, make_weights: Weights
) -> None:
    store = LocalFileRoundStore(tmp_path)
    session = Session(
        SID,
        _config(aggregation="FedAvg", aggregation_parameters={}, exit_round=3),
        store=store,
        clock=ManualClock(),
        runner=run_inline,
    )
    await _round(session, 1, make_weights)
    await _round(session, 2, make_weights)
    directory = store.session_dir(SID)
    assert directory.name == "session-team-a%2Ffl-job"
    assert sorted(p.name for p in directory.iterdir()) == ["checkpoint.json", "round-000002.npz"]
    manifest = json.loads((directory / "checkpoint.json").read_text())
    assert manifest["round"] == 2
    assert [r["participants"] for r in manifest["history"]] == [["a", "b", "c"]] * 2
    # FedAvg's last aggregate is the global weights: stored once, referenced twice.
    assert manifest["aggregator_state"]["weights.0"] == {"array": "global.0"}
    with zipfile.ZipFile(directory / "round-000002.npz") as npz:
        assert sorted(npz.namelist()) == ["global.0.npy", "global.1.npy"]
    with np.load(directory / "round-000002.npz", allow_pickle=False) as arrays:
        assert session.global_weights is not None
        np.testing.assert_array_equal(arrays["global.0"], session.global_weights[0])


async def test_unreadable_or_foreign_checkpoint_is_a_checkpoint_error(
    tmp_path: Path, make_weights: Weights
) -> None:
    store = LocalFileRoundStore(tmp_path)
    fedavg = _config(aggregation="FedAvg", aggregation_parameters={}, exit_round=3)
    session = Session(SID, fedavg, store=store, clock=ManualClock(), runner=run_inline)
    await _round(session, 1, make_weights)
    with pytest.raises(CheckpointError, match="FedAvg"):
        await Session.restore(SID, _config(), store)  # configured for FedAdam now
    (store.session_dir(SID) / "checkpoint.json").write_text("{not json")
    with pytest.raises(CheckpointError):
        await store.load(SID)
    await store.delete(SID)
    assert await store.load(SID) is None
    assert not store.session_dir(SID).exists()


async def test_store_refuses_object_arrays(tmp_path: Path) -> None:
    store = LocalFileRoundStore(tmp_path)
    checkpoint = Checkpoint(
        session_id=SID,
        round=1,
        global_weights=None,
        aggregator_state={"evil": np.array([object()], dtype=object)},
        history=(),
        aggregation="FedAvg",
    )
    with pytest.raises(CheckpointError, match="pickle"):
        await store.save(checkpoint)
    assert await store.load(SID) is None


class _BrokenStore:
    async def save(self, checkpoint: Checkpoint) -> None:
        raise OSError("disk full")

    async def load(self, session_id: str) -> Checkpoint | None:
        return None

    async def delete(self, session_id: str) -> None:
        return


async def test_a_failed_checkpoint_does_not_stop_the_job(
    make_session: Callable[..., Session], make_weights: Weights, metrics: Any
) -> None:
    session = make_session(exit_round=2, session_kwargs={"store": _BrokenStore()})
    await session.join("a", 1)
    await session.submit_update("a", 1, make_weights(1), 1)
    await session.drain()
    assert session.completed_round == 1
    assert session.state is SessionState.ROUND_OPEN
    assert [str(e) for e in metrics.checkpoint_errors] == ["disk full"]
