"""``sedna demo joint-inference`` without a stack: options, data directory, ports, failures."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from sedna.cli.demo_cluster import WorkerState, condition, metric_values, worker_problem
from sedna.cli.demo_joint_inference import (
    MARKER,
    Deadline,
    DemoError,
    DemoOptions,
    _short,
    claim_data_dir,
    find_example_dir,
    pick_port,
    run_demo,
)
from sedna.cli.main import app

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "joint_inference"


def test_help_explains_every_option() -> None:
    result = CliRunner().invoke(app, ["demo", "joint-inference", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in [
        "--data-dir",
        "--samples",
        "--threshold",
        "--cloud-worker",
        "--timeout",
        "--keep-running",
        "--seed",
        "--retrain",
        "--report",
        "--example-dir",
    ]:
        assert option in result.output
    assert "inference-server|script" in result.output


def test_demo_group_lists_joint_inference() -> None:
    result = CliRunner().invoke(app, ["demo", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "joint-inference" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--cloud-worker", "triton"],
        ["--threshold", "1.5"],
        ["--samples", "-1"],
        ["--timeout", "1"],
    ],
)
def test_bad_options_exit_2(args: list[str]) -> None:
    result = CliRunner().invoke(app, ["demo", "joint-inference", *args])
    assert result.exit_code == 2


def test_find_example_dir() -> None:
    assert find_example_dir() == EXAMPLE
    assert find_example_dir(EXAMPLE) == EXAMPLE


def test_find_example_dir_names_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(DemoError, match=f"prepare.py\\) in {tmp_path}.*--example-dir"):
        find_example_dir(tmp_path)


def test_claim_a_new_or_own_data_dir_clears_the_stack_only(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    claim_data_dir(data)
    assert (data / MARKER).is_file()
    (data / "example" / "models").mkdir(parents=True)
    (data / "example" / "models" / "little.onnx").write_bytes(b"x")
    (data / "stack" / "gm").mkdir(parents=True)
    (data / "stack" / "stack.json").write_text(json.dumps({"components": [{"port": 1}]}))
    claim_data_dir(data)
    assert not (data / "stack").exists()
    assert (data / "example" / "models" / "little.onnx").exists()


def test_claim_refuses_a_foreign_directory_or_a_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DemoError, match="not empty and was not created by `sedna demo`"):
        claim_data_dir(tmp_path)
    with pytest.raises(DemoError, match="is a file"):
        claim_data_dir(tmp_path / "notes.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    claim_data_dir(empty)  # an empty directory is fine


def test_claim_refuses_while_the_previous_stack_runs(tmp_path: Path) -> None:
    claim_data_dir(tmp_path / "demo")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        plan = tmp_path / "demo" / "stack" / "stack.json"
        plan.parent.mkdir(parents=True)
        plan.write_text(json.dumps({"components": [{"port": port}]}))
        with pytest.raises(DemoError, match="still running"):
            claim_data_dir(tmp_path / "demo")
    assert plan.exists()


def test_pick_port_is_free_and_stable() -> None:
    port = pick_port("a")
    assert 20000 <= port < 25000
    assert pick_port("a") == port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_pick_port_skips_busy_ports() -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        taken = busy.getsockname()[1]
        with pytest.raises(DemoError, match="no free port"):
            pick_port("x", (taken, taken + 1))


def _worker(**overrides: object) -> WorkerState:
    values: dict[str, object] = {
        "node": "edge-1",
        "agent": "127.0.0.1:1",
        "name": "svc-deployment-edge",
        "namespace": "default",
        "phase": "Running",
        "exit_code": 0,
        "restart_count": 0,
    }
    values.update(overrides)
    return WorkerState(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({}, None),
        ({"phase": "Pending"}, None),
        ({"phase": "Pending", "restart_count": 1, "exit_code": 1}, None),
        (
            {"phase": "Failed", "exit_code": 3},
            "worker svc-deployment-edge on node edge-1 failed (exit code 3)",
        ),
        ({"phase": "Succeeded"}, "worker svc-deployment-edge on node edge-1 exited (exit code 0)"),
        (
            {"phase": "Pending", "restart_count": 2, "exit_code": 1},
            "worker svc-deployment-edge on node edge-1 keeps exiting (exit code 1, restarted "
            "2 times)",
        ),
        (
            {"phase": "Running", "restart_count": 3},
            "worker svc-deployment-edge on node edge-1 keeps exiting (restarted 3 times)",
        ),
        (
            {
                "phase": "Running",
                "restart_count": 3,
                "last_exit_code": 3,
                "last_termination_reason": "exited with code 3",
            },
            "worker svc-deployment-edge on node edge-1 keeps exiting (exited with code 3, "
            "restarted 3 times)",
        ),
    ],
)
def test_worker_problem(overrides: dict[str, object], problem: str | None) -> None:
    assert worker_problem(_worker(**overrides)) == problem


def test_condition_and_metrics_of_a_status() -> None:
    obj = {
        "status": {
            "conditions": [{"type": "Ready", "status": "False", "reason": "CloudNotReady"}],
            "metrics": [{"key": "inferenceNumber", "value": "450"}, {"value": "x"}],
        }
    }
    assert condition(obj, "Ready") == obj["status"]["conditions"][0]  # type: ignore[index]
    assert condition(obj, "Valid") is None
    assert condition(None, "Ready") is None
    assert metric_values(obj) == {"inferenceNumber": "450"}
    assert metric_values({}) == {}


def test_run_demo_fails_cleanly_without_the_example(tmp_path: Path) -> None:
    console = Console(record=True, width=200)
    options = DemoOptions(data_dir=tmp_path / "demo", example_dir=tmp_path, timeout=30)
    assert run_demo(options, console) == 1
    text = console.export_text()
    assert "error: cannot find the joint-inference example" in text
    assert "Stopping" not in text  # nothing was started


def test_run_demo_reports_a_failing_prepare_step(tmp_path: Path) -> None:
    example = tmp_path / "example"
    example.mkdir()
    (example / "prepare.py").write_text("import sys\nprint('no torch here')\nsys.exit(3)\n")
    console = Console(record=True, width=200)
    options = DemoOptions(data_dir=tmp_path / "demo", example_dir=example, timeout=30)
    assert run_demo(options, console) == 1
    text = console.export_text()
    assert "error: preparing the example failed (exit code 3)" in text
    assert "no torch here" in text


def test_deadline() -> None:
    deadline = Deadline(1000.0)
    assert 0 < deadline.remaining() <= 1000.0
    deadline.check("doing nothing")
    spent = Deadline(0.0)
    assert spent.remaining() == 0.0
    with pytest.raises(DemoError, match=r"timed out after 0s training \(raise --timeout"):
        spent.check("training")


@pytest.mark.parametrize(
    ("value", "shown"), [("450", "450"), ("0.2644444444", "0.264"), ("n/a", "n/a"), ("3.0", "3.0")]
)
def test_reported_metric_values_are_shortened(value: str, shown: str) -> None:
    assert _short(value) == shown
