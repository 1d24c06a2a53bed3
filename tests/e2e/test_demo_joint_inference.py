"""The issue's "done when": ``sedna demo joint-inference`` as a new user runs it.

The command runs as a child process, exactly as typed: it trains the models, starts the
embedded stack (GlobalManager + LocalControllers ``cloud`` and ``edge-1``), applies the example
so the JointInferenceService controller starts the workers, and prints the table. A second
run, with an edge worker that crashes, must fail naming the worker and showing its log.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "joint_inference"
DEADLINE = 240  # seconds the command may take; it stops itself at --timeout (180)


def demo(tools: Any, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            tools.script("sedna"),
            "demo",
            "joint-inference",
            "--data-dir",
            str(data_dir),
            "--timeout",
            "180",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env={**tools.clean_env(), "COLUMNS": "200"},
        check=False,
    )


def table_rows(output: str) -> dict[str, str]:
    """``metric -> value`` of the printed table."""
    rows: dict[str, str] = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) >= 4 and cells[1] and cells[2]:
            rows[cells[1]] = cells[2]
    return rows


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory for the module: the second run reuses the trained models."""
    return tmp_path_factory.mktemp("demo") / "joint-inference"


def test_demo_prints_a_table_where_joint_beats_edge(data_dir: Path, e2e_tools: Any) -> None:
    report_path = data_dir.parent / "report.json"
    result = demo(e2e_tools, data_dir, "--report", str(report_path))
    output = result.stdout + result.stderr
    print(output)
    assert result.returncode == 0, output

    report = json.loads(report_path.read_text())
    summary = report["summary"]
    assert report["problems"] == []
    assert summary["samples"] == 450
    assert summary["joint_accuracy"] > summary["edge_accuracy"]
    assert summary["offload_ratio"] < 0.5
    assert summary["cloud_accuracy"] > summary["edge_accuracy"]
    assert summary["hard"] == round(summary["offload_ratio"] * summary["samples"])
    assert summary["cloud_fallbacks"] == 0
    assert summary["edge_latency"]["count"] + summary["offloaded_latency"]["count"] == 450
    # Every sample went through JointInference; the offline run of the same models agrees.
    offline = report["offline"]
    assert summary["edge_accuracy"] == pytest.approx(offline["little_accuracy"])
    assert summary["joint_accuracy"] == pytest.approx(offline["joint_accuracy"])
    assert summary["cloud_accuracy"] == pytest.approx(offline["big_accuracy"])
    # The edge worker's counters went LC -> GM into the service's status.
    metrics = report["reported_metrics"]
    assert metrics["inferenceNumber"] == "450"
    assert metrics["hardExampleNumber"] == str(summary["hard"])

    # The table shows the same numbers.
    rows = table_rows(result.stdout)
    assert rows["edge-only accuracy"] == f"{summary['edge_accuracy']:.1%}"
    assert rows["joint accuracy"] == f"{summary['joint_accuracy']:.1%}"
    assert rows["cloud-only accuracy"] == f"{summary['cloud_accuracy']:.1%}"
    assert rows["offload ratio"] == f"{summary['offload_ratio']:.1%}"
    for key, group in [("edge-only", "edge_latency"), ("offloaded", "offloaded_latency")]:
        for q in ("p50", "p99"):
            assert rows[f"{key} latency {q}"] == f"{summary[group][q]:.2f} ms"
    assert "Joint inference beats the edge alone" in result.stdout

    # The workers ran through GM + LC, and everything stopped with the command.
    results = data_dir / "example" / "output" / "results.jsonl"
    assert len(results.read_text().splitlines()) == 450
    edge_logs = list((data_dir / "stack" / "nodes" / "edge-1").rglob("*deployment-edge*.log"))
    assert edge_logs, "the edge worker was not run by the edge-1 LocalController"
    plan = json.loads((data_dir / "stack" / "stack.json").read_text())
    assert not any(listening(c["port"]) for c in plan["components"])


def test_demo_names_a_crashing_worker_and_shows_its_log(
    data_dir: Path, tmp_path: Path, e2e_tools: Any
) -> None:
    example = tmp_path / "joint_inference"
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns("__pycache__"))
    edge = example / "edge_worker.py"
    # The worker exits before its imports (numpy, Sedna): each of its restarts takes a moment
    # instead of seconds, and the demo sees it crash-looping sooner.
    edge.write_text(
        edge.read_text().replace(
            "from __future__ import annotations\n",
            "from __future__ import annotations\n\n"
            "raise SystemExit('edge worker broken on purpose')\n",
            1,
        )
    )
    assert "broken on purpose" in edge.read_text()
    result = demo(e2e_tools, data_dir, "--example-dir", str(example))
    output = result.stdout + result.stderr
    print(output)
    assert result.returncode == 1, output
    assert "error: worker digits-inference-example-deployment-edge on node edge-1" in output
    assert "edge worker broken on purpose" in output  # the log tail
    assert "Stopped in" in output
    plan = json.loads((data_dir / "stack" / "stack.json").read_text())
    assert not any(listening(c["port"]) for c in plan["components"])
