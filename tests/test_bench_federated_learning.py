"""Keeps ``python -m bench.federated_learning`` from rotting: a tiny run, plus its arithmetic.

No timed assertions: the run only has to complete, check every aggregate and report the
targets.
"""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``bench.federated_learning.model`` (the repository root is not on the test path)."""
    monkeypatch.syspath_prepend(str(REPO))
    return importlib.import_module("bench.federated_learning.model")


@pytest.fixture
def results(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``bench.federated_learning.results``."""
    monkeypatch.syspath_prepend(str(REPO))
    return importlib.import_module("bench.federated_learning.results")


@pytest.mark.parametrize(("params", "layers"), [(25_000_000, 40), (10_000, 6), (7, 3), (5, 1)])
def test_layer_shapes_add_up_and_vary(model: ModuleType, params: int, layers: int) -> None:
    shapes = model.layer_shapes(params, layers)
    assert len(shapes) == layers
    assert sum(math.prod(s) for s in shapes) == params
    assert all(math.prod(s) > 0 for s in shapes)
    assert shapes == model.layer_shapes(params, layers)  # deterministic
    if layers >= 6:
        assert len({math.prod(s) for s in shapes}) > layers // 3  # varied sizes


def test_layer_shapes_reject_bad_sizes(model: ModuleType) -> None:
    with pytest.raises(ValueError, match="--layers"):
        model.layer_shapes(3, 4)
    with pytest.raises(ValueError, match="--params"):
        model.layer_shapes(0, 1)


def test_check_accepts_fedavg_and_catches_a_wrong_aggregate(model: ModuleType) -> None:
    shapes = model.layer_shapes(1000, 4)
    initial = model.initial_weights(shapes)
    clients, rounds = 3, 2
    weights = [layer.copy() for layer in initial]
    for _ in range(rounds):  # FedAvg by hand, in float32 like the servers
        updates = [[w + model.delta(k) for w in weights] for k in range(clients)]
        total = sum(model.sample_count(k) for k in range(clients))
        weights = [
            sum(updates[k][i] * (model.sample_count(k) / total) for k in range(clients)).astype(
                np.float32
            )
            for i in range(len(weights))
        ]
    assert model.max_abs_error(weights, initial, clients, rounds) <= model.TOLERANCE
    # An unweighted mean (sample counts ignored) is caught.
    unweighted = [w + rounds * np.mean([model.delta(k) for k in range(clients)]) for w in initial]
    assert model.max_abs_error(unweighted, initial, clients, rounds) > model.TOLERANCE
    # So is a round too few, a permuted layer and a missing layer.
    assert model.max_abs_error(weights, initial, clients, rounds + 1) > model.TOLERANCE
    swapped = [weights[0][::-1].copy(), *weights[1:]]
    assert model.max_abs_error(swapped, initial, clients, rounds) > model.TOLERANCE
    assert model.max_abs_error(weights[:-1], initial, clients, rounds) == math.inf


def _result(results: ModuleType, system: str, **kwargs: object) -> object:
    runner = importlib.import_module("bench.federated_learning.runner")
    base: dict[str, object] = {
        "params": 1_000_000,
        "clients": 8,
        "model_bytes": 4_000_000,
        "round_times": [1.0, 1.0, 1.0],
        "window_s": 3.0,
        "idle_rss_kb": 1000,
        "peak_rss_kb": 10_000,
        "max_abs_error": 0.0,
    }
    base.update(kwargs)
    return runner.SystemResult(system, **base)


def test_verdicts_follow_the_defined_ratios(results: ModuleType) -> None:
    ours = _result(results, "ours", round_times=[2.0] * 3, window_s=6.0, peak_rss_kb=11_718)
    flower = _result(results, "flower", round_times=[6.0] * 3, window_s=18.0)
    floor = _result(results, "floor", round_times=[0.5] * 3, window_s=1.5, max_abs_error=None)
    by_name = {v.name: v for v in results.verdicts([floor, ours, flower])}
    assert by_name["round rate vs Flower"].passed is True  # exactly 3x
    assert by_name["round rate vs Flower"].measured.startswith("3.00x")
    assert by_name["bandwidth vs raw socket"].passed is False  # 25%
    assert by_name["bandwidth vs raw socket"].measured.startswith("25%")
    assert by_name["aggregator peak RSS"].passed is True  # 11,718 KiB / 4 MB = 3.0x - a bit
    heavy = _result(results, "ours", peak_rss_kb=11_720)
    assert not {v.name: v for v in results.verdicts([heavy])}["aggregator peak RSS"].passed


def test_verdicts_are_na_without_the_other_system_or_on_a_wrong_aggregate(
    results: ModuleType,
) -> None:
    wrong = _result(results, "ours", max_abs_error=0.5)
    flower = _result(results, "flower")
    assert [v.passed for v in results.verdicts([wrong, flower])] == [None, None, None]
    alone = _result(results, "ours")
    by_name = {v.name: v for v in results.verdicts([alone])}
    assert by_name["round rate vs Flower"].verdict == "n/a"
    assert by_name["bandwidth vs raw socket"].verdict == "n/a"
    assert "WRONG" in results.rows([wrong])[0][-1]


def test_notes_show_other_load_and_hypervisor_steal(results: ModuleType) -> None:
    runner = importlib.import_module("bench.federated_learning.runner")
    quiet = _result(results, "ours", other_cores=0.05, wall_s=20.0, steal_share=0.004)
    noisy = _result(results, "ours", other_cores=0.4, wall_s=30.0, steal_share=0.146)
    lines = results.notes([quiet], 1_000_000)
    assert lines == [
        "ours: 20 s wall; CPU used by other processes meanwhile 0.05 cores "
        "(hypervisor steal: 0% of the CPU time)"
    ]
    merged = runner.merge([quiet, noisy])
    assert merged.steal_share == pytest.approx(0.146)  # the worst run's
    assert "(hypervisor steal: 15% of the CPU time)" in results.notes([merged], 1_000_000)[0]
    unknown = _result(results, "ours", other_cores=0.1, wall_s=5.0)
    assert "steal" not in results.notes([unknown], 1_000_000)[0]


@pytest.mark.slow
def test_tiny_run_checks_every_aggregate(tmp_path: Path) -> None:
    systems = ["floor", "ours", "ours-grpc", "websocket"]
    if (REPO / ".venv-flower" / "bin" / "python").exists():
        systems.append("flower")
    out = tmp_path / "result.json"
    command = [
        sys.executable,
        "-m",
        "bench.federated_learning",
        "--clients",
        "2",
        "--params",
        "10000",
        "--layers",
        "6",
        "--rounds",
        "1",
        "--only",
        ",".join(systems),
        "--no-build-flower",
        "--work-dir",
        str(tmp_path),
        "--json",
        str(out),
        "--markdown",
    ]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=115, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Targets" in done.stdout
    report = json.loads(out.read_text())
    rows = {row["system"]: row for row in report["systems"]}
    assert set(rows) == set(systems)
    for system, row in rows.items():
        assert row["error"] is None, (system, row["error"])
        assert len(row["round_times_s"]) == 1
        assert row["peak_rss_kb"] >= row["idle_rss_kb"] > 0
        assert row["payload_bytes_per_round"] == 2 * 2 * 10_000 * 4
        if system == "floor":
            assert row["correct"] is None
        else:
            assert row["correct"] is True, (system, row["max_abs_error"])
    assert rows["websocket"]["wire_bytes_per_round"] > rows["websocket"]["payload_bytes_per_round"]
    assert len(report["verdicts"]) == 3
    assert "| ours (sedna-aggregator" in done.stdout
