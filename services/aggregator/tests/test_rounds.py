"""Rounds end to end on a manual clock: FedAvg, deadlines, stragglers, exit conditions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from sedna_aggregator.core import (
    BelowMinimum,
    MalformedUpdateError,
    ManualClock,
    Session,
    SessionConfig,
    SessionConfigError,
    SessionFailedError,
    SessionState,
    TargetMode,
    WrongRoundError,
)

Array = npt.NDArray[Any]
Weights = Callable[..., list[Array]]
Reference = Callable[[list[tuple[list[Array], int]]], list[Array]]
Factory = Callable[..., Session]


async def _join_all(session: Session, clients: dict[str, int]) -> None:
    for cid, samples in clients.items():
        await session.join(cid, samples)


async def test_full_fedavg_rounds_match_the_reference(
    make_session: Factory, make_weights: Weights, reference_fedavg: Reference, metrics: Any
) -> None:
    initial = make_weights(0)
    session = make_session(
        exit_round=2, min_participants=3, session_kwargs={"initial_weights": initial}
    )
    clients = {"a": 10, "b": 30, "c": 60}
    assert session.state is SessionState.WAITING_FOR_CLIENTS
    first = await session.wait_for_round(0)
    assert first.round == 0
    assert first.weights is not None
    assert all(got is want for got, want in zip(first.weights, initial, strict=True))
    await _join_all(session, clients)
    assert session.state is SessionState.ROUND_OPEN
    assert session.selected == ("a", "b", "c")

    for round_number in (1, 2):
        waiter = asyncio.ensure_future(session.wait_for_round(round_number))
        updates = []
        for k, (cid, n) in enumerate(clients.items()):
            w = make_weights(10 * round_number + k)
            ack = await session.submit_update(cid, round_number, w, n, {"accuracy": 0.1 * k})
            assert ack.received_updates == k + 1
            updates.append((w, n))
        await session.drain()
        result = await waiter
        assert result.round == round_number
        assert result.participants == ("a", "b", "c")
        assert result.dropped == ()
        assert result.total_samples == 100
        assert result.metrics["accuracy"] == pytest.approx((0 * 10 + 0.1 * 30 + 0.2 * 60) / 100)
        assert result.weights is not None
        for got, want in zip(result.weights, reference_fedavg(updates), strict=True):
            assert got.dtype == np.float32
            np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-6)
        assert result.exit is (round_number == 2)

    assert session.state is SessionState.COMPLETED
    assert session.reason == "exit_round 2 reached"
    assert session.completed_round == 2
    assert [r.round for r in session.history] == [1, 2]
    # Waiters after completion get the last result with the exit flag, whatever they ask.
    late = await session.wait_for_round(7)
    assert late.round == 2
    assert late.exit
    assert [r.round for r in metrics.rounds] == [1, 2]
    assert metrics.states == [
        SessionState.ROUND_OPEN,
        SessionState.AGGREGATING,
        SessionState.ROUND_OPEN,
        SessionState.AGGREGATING,
        SessionState.COMPLETED,
    ]
    assert all(accepted for _n, accepted, _r in metrics.updates)
    assert metrics.rounds[0].bytes_in == 3 * sum(w.nbytes for w in initial)


async def test_straggler_is_dropped_at_the_deadline(
    make_session: Factory, make_weights: Weights, reference_fedavg: Reference, clock: ManualClock
) -> None:
    session = make_session(exit_round=3, min_participants=2, expected_clients=3, round_timeout=30.0)
    await _join_all(session, {"a": 1, "b": 3, "c": 5})
    wa, wb = make_weights(1), make_weights(2)
    await session.submit_update("a", 1, wa, 1)
    clock.advance(10)
    await session.submit_update("b", 1, wb, 3)
    await session.drain()
    assert session.state is SessionState.ROUND_OPEN  # c is still expected
    assert session.current_round == 1
    clock.advance(20)  # the deadline
    await session.drain()
    result = await session.wait_for_round(1)
    assert result.participants == ("a", "b")
    assert result.dropped == ("c",)
    assert session.history[0].duration == 30.0
    assert session.history[0].extended is False
    assert result.weights is not None
    for got, want in zip(result.weights, reference_fedavg([(wa, 1), (wb, 3)]), strict=True):
        np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-6)
    # The straggler is not blocked out of the job: it trains round 2 from the new weights.
    assert session.current_round == 2
    assert session.state is SessionState.ROUND_OPEN
    assert "c" in session.selected
    with pytest.raises(WrongRoundError) as info:
        await session.submit_update("c", 1, make_weights(3), 5)
    assert info.value.current_round == 2


async def test_below_minimum_extends_the_deadline_once(
    make_session: Factory, make_weights: Weights, clock: ManualClock
) -> None:
    session = make_session(exit_round=1, min_participants=2, expected_clients=3, round_timeout=10.0)
    await _join_all(session, {"a": 1, "b": 1, "c": 1})
    await session.submit_update("a", 1, make_weights(1), 1)
    clock.advance(10)
    await session.drain()
    assert session.state is SessionState.ROUND_OPEN  # extended, not failed
    await session.submit_update("b", 1, make_weights(2), 1)
    clock.advance(10)
    await session.drain()
    assert session.state is SessionState.COMPLETED
    record = session.history[0]
    assert record.extended
    assert record.participants == ("a", "b")
    assert record.dropped == ("c",)
    assert record.duration == 20.0


async def test_below_minimum_after_the_extension_fails_the_session(
    make_session: Factory, make_weights: Weights, clock: ManualClock
) -> None:
    session = make_session(exit_round=3, min_participants=2, round_timeout=10.0)
    await _join_all(session, {"a": 1, "b": 1})
    waiter = asyncio.ensure_future(session.wait_for_round(1))
    await session.submit_update("a", 1, make_weights(1), 1)
    clock.advance(10)
    await session.drain()
    clock.advance(10)
    await session.drain()
    assert session.state is SessionState.FAILED
    assert "1 of the 2 required" in session.reason
    assert "extended once" in session.reason
    with pytest.raises(SessionFailedError):
        await waiter
    assert clock.pending == 0


async def test_below_minimum_with_fail_policy_fails_at_the_first_deadline(
    make_session: Factory, clock: ManualClock
) -> None:
    session = make_session(min_participants=2, round_timeout=10.0, below_minimum=BelowMinimum.FAIL)
    await _join_all(session, {"a": 1, "b": 1})
    clock.advance(10)
    await session.drain()
    assert session.state is SessionState.FAILED
    assert "0 of the 2 required" in session.reason


async def test_target_metric_completes_early(make_session: Factory, make_weights: Weights) -> None:
    session = make_session(
        exit_round=10, target_metric="loss", target_metric_value=0.5, target_mode=TargetMode.MIN
    )
    await session.join("a", 1)
    await session.submit_update("a", 1, make_weights(1), 1, {"loss": 0.9})
    await session.drain()
    assert session.state is SessionState.ROUND_OPEN
    await session.submit_update("a", 2, make_weights(2), 1, {"loss": 0.4})
    await session.drain()
    assert session.state is SessionState.COMPLETED
    assert session.completed_round == 2
    assert "target loss min 0.5" in session.reason
    assert (await session.wait_for_round(3)).exit


async def test_waiter_is_released_by_the_round_it_waits_for(
    make_session: Factory, make_weights: Weights
) -> None:
    session = make_session(exit_round=2)
    await session.join("a", 1)
    waiter = asyncio.ensure_future(session.wait_for_round(2))
    await session.submit_update("a", 1, make_weights(1), 1)
    await session.drain()
    await asyncio.sleep(0)
    assert not waiter.done()
    await session.submit_update("a", 2, make_weights(2), 1)
    await session.drain()
    assert (await waiter).round == 2


async def test_rejoin_keeps_identity_and_selection(
    make_session: Factory, make_weights: Weights
) -> None:
    session = make_session(min_participants=2)
    first = await session.join("a", 5)
    assert not first.rejoined
    assert first.state is SessionState.WAITING_FOR_CLIENTS
    await session.join("b", 5)
    again = await session.join("a", 0)  # a reconnect that forgot its sample count
    assert again.rejoined
    assert again.selected
    assert again.current_round == 1
    assert session.status().clients[0].sample_count == 5
    await session.submit_update("a", 1, make_weights(1), 5)
    assert (await session.join("a", 5)).selected
    assert session.reported == ("a",)


async def test_a_selected_client_leaving_does_not_block_the_round(
    make_session: Factory, make_weights: Weights
) -> None:
    session = make_session(exit_round=2, min_participants=1, expected_clients=2)
    await _join_all(session, {"a": 1, "b": 1})
    await session.submit_update("a", 1, make_weights(1), 1)
    assert session.state is SessionState.ROUND_OPEN
    await session.leave("b")
    await session.leave("b")  # idempotent
    await session.drain()
    result = await session.wait_for_round(1)
    assert result.participants == ("a",)
    assert result.dropped == ("b",)
    assert session.selected == ("a",)


async def test_too_few_clients_after_a_round_waits_for_joins(
    make_session: Factory, make_weights: Weights
) -> None:
    session = make_session(exit_round=2, min_participants=2)
    await _join_all(session, {"a": 1, "b": 1})
    await session.submit_update("a", 1, make_weights(1), 1)
    await session.submit_update("b", 1, make_weights(2), 1)
    await session.leave("b")
    await session.drain()
    assert session.state is SessionState.WAITING_FOR_CLIENTS
    assert session.current_round == 2
    joined = await session.join("b", 1)
    assert joined.state is SessionState.ROUND_OPEN
    assert joined.selected


async def test_expected_clients_gate_the_first_round_with_a_grace(
    make_session: Factory, clock: ManualClock
) -> None:
    session = make_session(min_participants=2, expected_clients=3, round_timeout=60.0)
    await _join_all(session, {"a": 1, "b": 1})
    assert session.state is SessionState.WAITING_FOR_CLIENTS
    clock.advance(59)
    await session.drain()
    assert session.state is SessionState.WAITING_FOR_CLIENTS
    clock.advance(1)  # the grace (round_timeout by default) is over: start with who is here
    await session.drain()
    assert session.state is SessionState.ROUND_OPEN
    assert session.selected == ("a", "b")


async def test_expected_clients_open_the_round_once_all_joined(make_session: Factory) -> None:
    session = make_session(min_participants=1, expected_clients=2)
    await session.join("a", 1)
    assert session.state is SessionState.WAITING_FOR_CLIENTS
    await session.join("b", 1)
    assert session.state is SessionState.ROUND_OPEN


async def test_client_fraction_selects_a_deterministic_subset(make_session: Factory) -> None:
    session = make_session(min_participants=2, client_fraction=0.5, expected_clients=6)
    await _join_all(session, {f"n{i}": 1 for i in range(6)})
    assert len(session.selected) == 3
    other = make_session(min_participants=2, client_fraction=0.5, expected_clients=6)
    await _join_all(other, {f"n{i}": 1 for i in reversed(range(6))})
    assert other.selected == session.selected


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"aggregation": "NoSuchAlgo"}, "NoSuchAlgo"),
        ({"aggregation": "FedAdam", "aggregation_parameters": {"beta_1": 2}}, "beta_1"),
        ({"exit_round": 0}, "exit_round"),
        ({"min_participants": 3, "expected_clients": 2}, "expected_clients"),
        ({"client_fraction": 0.0}, "client_fraction"),
        ({"round_timeout": -1.0}, "round_timeout"),
    ],
)
def test_bad_configuration_is_a_config_error(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(SessionConfigError, match=message):
        Session("ns/job", SessionConfig(**fields))


def test_config_error_maps_to_invalid_argument() -> None:
    assert SessionConfigError.code == "INVALID_ARGUMENT"


async def test_loop_clock_runs_timers_on_the_event_loop() -> None:
    from sedna_aggregator.core import LoopClock

    clock = LoopClock()
    fired = asyncio.get_running_loop().create_future()
    cancelled = clock.call_later(0.0, lambda: fired.set_exception(AssertionError("cancelled")))
    cancelled.cancel()
    clock.call_later(0.0, lambda: fired.set_result(clock.now()))
    assert await fired >= 0.0


def counted_runner_session(
    participants: int = 1, clock: ManualClock | None = None
) -> tuple[Session, list[int]]:
    """A FedAvg session whose runner runs each step inline and counts it in the list."""
    handed_off: list[int] = []

    async def counting_runner(fn: Callable[[], Any], /) -> Any:
        handed_off.append(1)
        return fn()

    config = SessionConfig(
        aggregation="FedAvg", min_participants=participants, expected_clients=participants
    )
    session = Session("ns/job", config, clock=clock or ManualClock(), runner=counting_runner)
    return session, handed_off


async def test_chunk_sized_upload_steps_run_on_the_event_loop_and_bigger_ones_in_the_runner() -> (
    None
):
    session, handed_off = counted_runner_session()
    await session.join("a", 1)
    chunk = (4 << 20) // 4  # float32 elements in a default-sized chunk (4 MiB)
    layout = [((10,), np.dtype(np.float32)), ((2 * chunk + 1,), np.dtype(np.float32))]
    upload = await session.begin_update("a", 1, 4, layout=layout)
    # A bias vector, then a default-sized chunk: a worker thread's hand-off costs more.
    await upload.add_part(0, 0, np.ones(10, np.float32))
    await upload.add_part(1, 0, np.ones(chunk, np.float32))
    assert handed_off == []
    await upload.add_part(1, chunk, np.ones(chunk + 1, np.float32))  # over 4 MiB: a worker's
    assert handed_off == [1]
    await upload.commit()
    result = await session.wait_for_round(1)
    assert result.weights is not None
    np.testing.assert_array_equal(result.weights[0], np.ones(10, np.float32))
    np.testing.assert_array_equal(result.weights[1], np.ones(2 * chunk + 1, np.float32))


async def test_a_refused_inline_part_is_backed_out_in_the_runner() -> None:
    session, ran = counted_runner_session(participants=2)
    await session.join("a", 1)
    await session.join("b", 1)
    layout = [((4,), np.dtype(np.float32)), ((2,), np.dtype(np.float32))]
    upload = await session.begin_update("a", 1, 1, layout=layout)
    await upload.add_part(0, 0, np.full(4, 100.0, np.float32))
    with pytest.raises(MalformedUpdateError, match="NaN or infinite"):
        await upload.add_part(1, 0, np.array([1.0, np.nan], np.float32))
    assert ran == []  # both parts were small enough for the event loop...
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while session.aggregator.updates_in_progress:
        assert loop.time() < deadline, "the refused update was never backed out"
        await asyncio.sleep(0.01)
    assert len(ran) == 1  # ...but its back-out (reading the undo log) went to the runner
    for cid, value in (("a", 1.0), ("b", 3.0)):
        retry = await session.begin_update(cid, 1, 1, layout=layout)
        await retry.add_part(0, 0, np.full(4, value, np.float32))
        await retry.add_part(1, 0, np.full(2, value, np.float32))
        await retry.commit()
    result = await session.wait_for_round(1)
    assert result.weights is not None
    np.testing.assert_allclose(result.weights[0], np.full(4, 2.0))  # no trace of the 100s
    np.testing.assert_allclose(result.weights[1], np.full(2, 2.0))


async def test_an_inline_step_that_held_the_loop_too_long_sends_later_steps_to_the_runner(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    session, handed_off = counted_runner_session(clock=clock)
    real_add = session.aggregator.add_layer_part

    def slow_add(*args: Any, **kwargs: Any) -> bool:
        clock.advance(0.2)  # as a write the kernel throttled would take
        return bool(real_add(*args, **kwargs))

    session.aggregator.add_layer_part = slow_add  # type: ignore[method-assign]
    await session.join("a", 1)
    layout = [((4,), np.dtype(np.float32)), ((4,), np.dtype(np.float32))]
    upload = await session.begin_update("a", 1, 4, layout=layout)
    with caplog.at_level(logging.WARNING):
        await upload.add_part(0, 0, np.ones(4, np.float32))
    assert handed_off == []  # this one ran inline and took 200 ms
    assert "held the event loop for 200 ms" in caplog.text
    await upload.add_part(1, 0, np.ones(4, np.float32))
    assert handed_off == [1]  # from now on in the runner, however small
    await upload.commit()
    result = await session.wait_for_round(1)
    assert result.weights is not None
    np.testing.assert_array_equal(result.weights[1], np.ones(4, np.float32))
