"""``sedna demo federated-learning``'s round announcements, without a stack."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.progress import Progress

from sedna.api.aggregator.v1 import aggregation_service_pb2 as apb
from sedna.cli import demo_federated_learning as demo
from sedna.cli.demo_common import Deadline


class _FakeStack:
    def supervise(self) -> None:
        pass

    def fail_with_logs(self, message: str, workers: Any) -> Exception:
        return RuntimeError(message)


class _ScriptedRun(demo._Run):
    """Replays session replies and job statuses, one pair per poll."""

    polls: Iterator[tuple[apb.GetSessionStatusResponse | None, dict[str, Any]]]
    last_job: dict[str, Any]
    final_session: apb.GetSessionStatusResponse | None = None

    def check_workers(self) -> list[Any]:
        return []

    def session_status(self, stub: Any) -> apb.GetSessionStatusResponse | None:
        try:
            reply, self.last_job = next(self.polls)
        except StopIteration:
            return self.final_session  # the re-check after the job succeeded
        return reply

    def job_status(self) -> dict[str, Any]:
        return self.last_job


def _running(round_number: int) -> apb.GetSessionStatusResponse:
    return apb.GetSessionStatusResponse(
        state=apb.SESSION_STATE_TRAINING, current_round=round_number
    )


def _job(phase: str, current_round: int) -> dict[str, Any]:
    return {"status": {"phase": phase, "currentRound": current_round}}


def _follow(
    tmp_path: Path,
    polls: list[tuple[apb.GetSessionStatusResponse | None, dict[str, Any]]],
    final_session: apb.GetSessionStatusResponse | None = None,
) -> tuple[str, _ScriptedRun]:
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    run = _ScriptedRun(
        options=demo.FederatedOptions(data_dir=tmp_path),
        console=console,
        deadline=Deadline(30),
        cluster=_FakeStack(),  # type: ignore[arg-type]
        example={"rounds": 3, "namespace": "default", "job": "fl"},
        agg_port=1,
    )
    run.polls = iter(polls)
    run.last_job = {}
    run.final_session = final_session
    with Progress(console=console, transient=True) as progress:
        run.follow_rounds(progress)
    return out.getvalue(), run


@pytest.fixture(autouse=True)
def _no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "POLL_SECONDS", 0.0)


def test_rounds_finished_between_polls_are_announced_from_the_job(tmp_path: Path) -> None:
    # Round 2 was running at one poll; by the next the last round was done and the
    # aggregator gone: the job's reported round says what was aggregated.
    output, run = _follow(
        tmp_path,
        [(_running(2), _job("Running", 1)), (None, _job("Succeeded", 3))],
    )
    assert "round 1 aggregated" in output
    assert "rounds 2-3 aggregated" in output
    assert "succeeded" in output
    assert set(run.round_metrics) == {1, 3}


def test_the_last_round_is_taken_from_the_completed_session_when_it_still_answers(
    tmp_path: Path,
) -> None:
    completed = apb.GetSessionStatusResponse(
        state=apb.SESSION_STATE_COMPLETED, current_round=3, metrics={"accuracy": 0.9}
    )
    output, run = _follow(
        tmp_path,
        [(_running(3), _job("Running", 2)), (_running(3), _job("Succeeded", 2))],
        final_session=completed,
    )
    assert "rounds 1-2 aggregated" in output
    assert "round 3 aggregated" in output
    assert "accuracy 0.900" in output
    assert run.round_metrics[3] == {"accuracy": 0.9}


def test_each_round_is_announced_once(tmp_path: Path) -> None:
    output, _ = _follow(
        tmp_path,
        [
            (_running(2), _job("Running", 1)),
            (_running(3), _job("Running", 2)),
            (
                apb.GetSessionStatusResponse(state=apb.SESSION_STATE_COMPLETED, current_round=3),
                _job("Succeeded", 3),
            ),
        ],
    )
    announced = [
        line.split(" aggregated")[0] for line in output.splitlines() if "aggregated" in line
    ]
    assert announced == ["✓ round 1", "✓ round 2", "✓ round 3"]
