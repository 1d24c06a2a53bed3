"""RetransmitTimer: timer with exponential back-off, fast retransmit on duplicate acks."""

from __future__ import annotations

import pytest

from sedna.runtime.retransmit import RetransmitTimer


def test_timer_starts_with_the_first_outstanding_send_not_before() -> None:
    timer = RetransmitTimer(10.0)
    timer.restart(0.0)
    # Idle for a minute, then one send: the timer runs from that send.
    timer.on_send(outstanding_before=False, now=60.0)
    assert not timer.due(outstanding=True, now=65.0)
    assert timer.due(outstanding=True, now=70.0)
    # Later sends while something is outstanding do not push the timer back.
    timer.on_send(outstanding_before=True, now=69.0)
    assert timer.due(outstanding=True, now=70.0)


def test_nothing_outstanding_is_never_due() -> None:
    timer = RetransmitTimer(1.0)
    timer.restart(0.0)
    assert not timer.due(outstanding=False, now=100.0)


def test_back_off_doubles_to_the_cap_and_progress_resets_it() -> None:
    timer = RetransmitTimer(10.0, max_factor=4)
    timer.restart(0.0)
    waits = []
    now = 0.0
    for _ in range(4):
        now += timer.wait
        assert timer.due(outstanding=True, now=now)
        timer.fired(now)
        waits.append(timer.wait)
    assert waits == [20.0, 40.0, 40.0, 40.0]
    assert timer.on_ack(5, acked_before=4, outstanding=True, now=now) is False
    assert timer.wait == 10.0
    assert timer.remaining(now) == 10.0


def test_fast_retransmit_once_per_gap() -> None:
    timer = RetransmitTimer(10.0, duplicate_threshold=3)
    timer.restart(0.0)
    fired = [timer.on_ack(7, acked_before=7, outstanding=True, now=1.0) for _ in range(6)]
    assert fired == [False, False, True, False, False, False]
    # Progress, then a new gap at 9: another fast retransmit is allowed.
    assert timer.on_ack(9, acked_before=7, outstanding=True, now=2.0) is False
    fired = [timer.on_ack(9, acked_before=9, outstanding=True, now=3.0) for _ in range(3)]
    assert fired == [False, False, True]


def test_duplicate_acks_without_anything_outstanding_are_ignored() -> None:
    timer = RetransmitTimer(10.0, duplicate_threshold=1)
    timer.restart(0.0)
    assert timer.on_ack(3, acked_before=3, outstanding=False, now=1.0) is False
    assert timer.on_ack(2, acked_before=3, outstanding=True, now=1.0) is False


@pytest.mark.parametrize("kwargs", [{"base": 0.0}, {"base": -1.0}, {"base": 1.0, "max_factor": 0}])
def test_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        RetransmitTimer(**kwargs)  # type: ignore[arg-type]
