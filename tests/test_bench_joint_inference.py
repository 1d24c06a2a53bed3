"""Keeps ``python -m bench.joint_inference`` from rotting: a tiny run, plus its arithmetic.

No timed assertions: the run only has to complete and report every path and target.
"""

from __future__ import annotations

import importlib
import itertools
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def results(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``bench.joint_inference.results`` (the repository root is not on the test path)."""
    monkeypatch.syspath_prepend(str(REPO))
    return importlib.import_module("bench.joint_inference.results")


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``bench.joint_inference.load``."""
    monkeypatch.syspath_prepend(str(REPO))
    return importlib.import_module("bench.joint_inference.load")


def test_percentile_is_nearest_rank(results: ModuleType) -> None:
    values = [float(v) for v in range(1, 101)]
    assert results.percentile(values, 50) == 50.0
    assert results.percentile(values, 99) == 99.0
    assert results.percentile([3.0], 90) == 3.0
    assert np.isnan(results.percentile([], 50))


def test_verdicts_follow_the_defined_ratios(results: ModuleType, load: ModuleType) -> None:
    ms = 1e-3
    r = results
    result = r.BenchResult(machine="test", settings={"clients": 32}, labels={})
    result.latencies_s = {
        r.OURS: [2.5 * ms] * 3,  # overhead 2.5 - 1.0 = 1.5 ms
        r.FLOOR: [1.0 * ms] * 3,  # the floor: 1.0 ms, so 1.5x, the bound itself
        r.HTTP: [16.0 * ms] * 3,  # overhead 15 ms: 10x ours
        r.COMPUTE: [1.0 * ms] * 3,
    }
    result.throughput = [
        r.ThroughputRow(r.OURS, load.ClosedLoopResult(32, 1.0, [0.1] * 290)),
        r.ThroughputRow(r.OURS_B1, load.ClosedLoopResult(32, 1.0, [0.1] * 100)),
    ]
    by_kind = {v.name.split()[0]: v for v in r.verdicts(result)}
    assert set(by_kind) == {"p50", "HTTP+JSON", "throughput"}
    assert by_kind["p50"].passed
    assert by_kind["p50"].value == pytest.approx(1.5)
    assert by_kind["HTTP+JSON"].passed
    assert by_kind["HTTP+JSON"].value == pytest.approx(10.0)
    assert not by_kind["throughput"].passed
    assert by_kind["throughput"].value == pytest.approx(2.9)
    assert "FAIL" in r.markdown(result)


class _Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        return x

    def close(self) -> None:
        pass


def test_overhead_verdicts_are_na_when_compute_swamps_the_overhead(results: ModuleType) -> None:
    ms = 1e-3
    r = results
    result = r.BenchResult(machine="test", settings={"clients": 32}, labels={})
    compute = [float(v) * ms for v in range(10, 90)]  # p50 49 ms, interquartile range 40 ms
    result.latencies_s = {
        r.OURS: [45.0 * ms] * 3,  # "overhead" -4 ms: noise
        r.FLOOR: [3.0 * ms] * 3,
        r.HTTP: [300.0 * ms] * 3,
        r.COMPUTE: compute,
    }
    by_kind = {v.name.split()[0]: v for v in r.verdicts(result)}
    assert set(by_kind) == {"p50", "HTTP+JSON"}
    for verdict in by_kind.values():
        assert not verdict.applicable
        assert verdict.measured == "n/a"
        assert verdict.verdict == "n/a"
    assert "interquartile range" in by_kind["p50"].detail
    assert "| n/a |" in r.markdown(result)
    assert all(v["value"] is None for v in result.to_json()["verdicts"])


def test_round_robin_runs_paths_in_blocks(load: ModuleType) -> None:
    order: list[str] = []

    class Recording:
        def __init__(self, name: str) -> None:
            self.name = name

        def __call__(self, x: object) -> object:
            order.append(self.name)
            return x

        def close(self) -> None:
            pass

    latencies = load.round_robin(
        {"a": Recording("a"), "b": Recording("b")},
        {"a": 12, "b": 3},
        np.zeros(1),
        warmup=0,
        block=4,
    )
    assert (len(latencies["a"]), len(latencies["b"])) == (12, 3)
    runs = [(name, len(list(group))) for name, group in itertools.groupby(order)]
    assert len(runs) >= 4  # interleaved
    # at most a block per turn (two turns may meet across a round boundary)
    assert all(size <= 2 * 4 for _, size in runs)


def test_round_robin_gives_each_path_its_count(load: ModuleType) -> None:
    fast, slow = _Counter(), _Counter()
    latencies = load.round_robin(
        {"fast": fast, "slow": slow}, {"fast": 40, "slow": 4}, np.zeros(1), warmup=2
    )
    assert len(latencies["fast"]) == 40
    assert len(latencies["slow"]) == 4
    assert (fast.calls, slow.calls) == (42, 6)


@pytest.mark.slow
def test_tiny_run_reports_every_path_and_target(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    command = [
        sys.executable,
        "-m",
        "bench.joint_inference",
        "--quick",
        "--requests",
        "5",
        "--clients",
        "2",
        "--seconds",
        "0.5",
        "--warmup",
        "0",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--work-dir",
        str(tmp_path),
        "--json",
        str(out),
    ]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=110, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Targets" in done.stdout
    report = json.loads(out.read_text())
    assert set(report["latency"]) >= {"ours", "ours-b1", "floor", "http", "compute"}
    assert all(entry["n"] == 5 for entry in report["latency"].values())
    assert [row["errors"] for row in report["throughput"]] == [0] * 5
    assert len(report["verdicts"]) == 3
    assert report["max_abs_diff"] < 1e-4
