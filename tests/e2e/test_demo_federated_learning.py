"""The issue's "done when": ``sedna demo federated-learning`` as a new user runs it.

The command runs as a child process, exactly as typed (with few rounds, to stay quick): it
splits the digits over three edge nodes, trains each node alone, starts the embedded stack
(GlobalManager + LocalControllers ``cloud``, ``edge-1..3``), applies the example so the
FederatedLearningJob controller starts ``sedna-aggregator`` and the three trainers, follows the
rounds and prints the table. A second run, with a trainer that crashes, must fail naming the
worker and showing its log.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sedna.cli.demo_cluster import WorkerState
from sedna.cli.demo_federated_learning import FederatedSummary, check, worker_problem
from sedna.cli.main import app

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "federated_learning"
DEADLINE = 360  # seconds the command may take; it stops itself at --timeout (300)
ROUNDS = 3


def demo(
    tools: Any, data_dir: Path, *args: str, rounds: int = ROUNDS
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            tools.script("sedna"),
            "demo",
            "federated-learning",
            "--data-dir",
            str(data_dir),
            "--rounds",
            str(rounds),
            "--epochs",
            "1",
            "--timeout",
            "300",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env={**tools.clean_env(), "COLUMNS": "200"},
        check=False,
    )


def table_rows(output: str) -> dict[str, list[str]]:
    """``model -> [test accuracy, detail]`` of the printed table."""
    rows: dict[str, list[str]] = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) >= 5 and cells[1] and cells[2]:
            rows[cells[1]] = cells[2:4]
    return rows


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory for the module (a second run reuses it, as a user would)."""
    return tmp_path_factory.mktemp("demo") / "federated-learning"


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_demo_prints_a_table_where_federated_beats_every_node(
    data_dir: Path, e2e_tools: Any
) -> None:
    report_path = data_dir.parent / "report.json"
    result = demo(e2e_tools, data_dir, "--report", str(report_path))
    output = result.stdout + result.stderr
    print(output)
    assert result.returncode == 0, output

    report = json.loads(report_path.read_text())
    summary = report["summary"]
    assert report["problems"] == []
    assert summary["final_round"] == ROUNDS
    assert sorted(summary["round_accuracy"]) == [str(r) for r in range(1, ROUNDS + 1)]
    assert set(summary["alone_accuracy"]) == {"edge-1", "edge-2", "edge-3"}
    for alone in summary["alone_accuracy"].values():
        assert summary["federated_accuracy"] > alone
    assert summary["federated_accuracy"] > summary["initial_accuracy"]
    assert summary["consistent"] is True
    # Non-IID: each node holds mostly its own classes.
    for node in summary["nodes"].values():
        counts = node["class_counts"]
        dominant = sum(counts[c] for c in node["dominant_classes"])
        assert dominant > 0.8 * sum(counts)

    # The table shows the same numbers, one row per round.
    rows = table_rows(result.stdout)
    for number, accuracy in summary["round_accuracy"].items():
        assert rows[f"global model, round {number}"][0] == f"{accuracy:.1%}"
    assert rows["federated"][0] == f"{summary['federated_accuracy']:.1%}"
    for node, alone in summary["alone_accuracy"].items():
        assert rows[f"{node} alone"][0] == f"{alone:.1%}"
        assert f"{ROUNDS} epochs" in rows[f"{node} alone"][1]
    assert "The federated model beats every node alone" in result.stdout
    # Progress: every round is announced (rounds aggregated between two polls together).
    announced: set[int] = set()
    for first, last in re.findall(r"✓ rounds? (\d+)(?:-(\d+))? aggregated", output):
        announced.update(range(int(first), int(last or first) + 1))
    assert announced == set(range(1, ROUNDS + 1)), output

    # The workers ran through GM + LC (the aggregator on cloud, a trainer per edge node),
    # the final model was saved, and everything stopped with the command.
    nodes = data_dir / "stack" / "nodes"
    assert list((nodes / "cloud").rglob("*-aggregation-*.log"))
    for node in ("edge-1", "edge-2", "edge-3"):
        assert list((nodes / node).rglob("*-train-*.log")), node
    assert (data_dir / "example" / "models" / "global.npz").is_file()
    plan = json.loads((data_dir / "stack" / "stack.json").read_text())
    assert not any(listening(c["port"]) for c in plan["components"])


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_demo_names_a_crashing_trainer_and_shows_its_log(
    data_dir: Path, tmp_path: Path, e2e_tools: Any
) -> None:
    example = tmp_path / "federated_learning"
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns("__pycache__", "mistnet"))
    train = example / "train.py"
    # The trainer exits before its imports (torch, Sedna): each start and restart of it takes
    # a moment instead of seconds, and the demo sees the crash (and the restart) sooner.
    train.write_text(
        train.read_text().replace(
            "from __future__ import annotations\n",
            "from __future__ import annotations\n\nraise SystemExit('trainer broken on purpose')\n",
            1,
        )
    )
    assert "broken on purpose" in train.read_text()
    # One round: the run stops at the first trainer's crash, so the baselines (rounds x epochs)
    # need not train for the three rounds of the run above.
    result = demo(e2e_tools, data_dir, "--example-dir", str(example), rounds=1)
    output = result.stdout + result.stderr
    print(output)
    assert result.returncode == 1, output
    assert re.search(r"error: .*worker digits-federated-learning-train-\w+ on node edge-\d", output)
    assert "trainer broken on purpose" in output  # the log tail
    assert "Stopped in" in output
    plan = json.loads((data_dir / "stack" / "stack.json").read_text())
    assert not any(listening(c["port"]) for c in plan["components"])


# ---------------------------------------------------------------- without a stack (fast)


def test_help_explains_every_option() -> None:

    result = CliRunner().invoke(
        app, ["demo", "federated-learning", "--help"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    for option in [
        "--data-dir",
        "--rounds",
        "--epochs",
        "--round-timeout",
        "--timeout",
        "--keep-running",
        "--seed",
        "--report",
        "--example-dir",
    ]:
        assert option in result.output
    listing = CliRunner().invoke(app, ["demo", "--help"], env={"COLUMNS": "200"})
    assert "federated-learning" in listing.output


def _summary(federated: float, alone: dict[str, float], final_round: int = 3) -> FederatedSummary:

    return FederatedSummary(
        job="j",
        rounds=3,
        epochs=1,
        test_samples=540,
        initial_accuracy=0.1,
        round_accuracy=dict.fromkeys(range(1, final_round + 1), federated),
        round_metrics={},
        alone_accuracy=alone,
        nodes={},
        consistent=True,
    )


def test_the_verdict_needs_the_federated_model_to_beat_every_node() -> None:

    assert check(_summary(0.8, {"edge-1": 0.5, "edge-2": 0.79})) == []
    problems = check(_summary(0.8, {"edge-1": 0.5, "edge-2": 0.8}))
    assert problems == [
        "the federated model (80.0%) does not beat edge-2's model trained alone (80.0%)"
    ]
    assert check(_summary(0.9, {"edge-1": 0.5}, final_round=2)) == [
        "the job ended after round 2, not 3"
    ]


def test_a_worker_that_crashed_once_is_a_problem_one_that_finished_is_not() -> None:

    def worker(phase: str, restarts: int = 0, last: int = 0) -> WorkerState:
        return WorkerState("edge-2", "a", "job-train-x", "default", phase, 0, restarts, last)

    assert worker_problem(worker("Running")) is None
    assert worker_problem(worker("Succeeded")) is None
    assert worker_problem(worker("Running", restarts=1, last=1)) == (
        "worker job-train-x on node edge-2 crashed (exit code 1; restarted once)"
    )
    assert "failed" in (worker_problem(worker("Failed")) or "")
