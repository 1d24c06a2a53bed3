"""Aggregation algorithms against plain reference computations (loops, float64)."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sedna.algorithms.aggregation import (
    AggClient,
    AggregationError,
    BaseAggregation,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedAvgV2,
    FedMedian,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MistNet,
    RoundStateError,
)
from sedna.common.class_factory import ClassFactory, ClassType

SHAPES = [(3, 2), (4,), ()]

Weights = list[np.ndarray]


def make_weights(rng: np.random.Generator, dtype: Any = np.float32, scale: float = 1.0) -> Weights:
    return [(rng.standard_normal(shape) * scale).astype(dtype) for shape in SHAPES]


def make_round(seed: int, count: int = 4) -> list[tuple[str, Weights, int]]:
    rng = np.random.default_rng(seed)
    return [(f"node-{k}", make_weights(rng), int(rng.integers(1, 100))) for k in range(count)]


# --------------------------------------------------------------------------- references


def coords(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    return list(np.ndindex(*shape)) if shape else [()]


def ref_fedavg(updates: list[tuple[str, Weights, int]]) -> list[list[float]]:
    """sum_k n_k w_k / sum_k n_k, coordinate by coordinate; flat float lists per layer."""
    total = sum(n for _c, _w, n in updates)
    out = []
    for layer in range(len(updates[0][1])):
        shape = updates[0][1][layer].shape
        values = []
        for pos in coords(shape):
            acc = 0.0
            for _c, w, n in updates:
                acc += float(w[layer][pos]) * n
            values.append(acc / total)
        out.append(values)
    return out


def flat(weights: Weights) -> list[list[float]]:
    return [[float(x) for x in np.asarray(layer, dtype=np.float64).ravel()] for layer in weights]


def assert_close(actual: Weights, expected: list[list[float]], rtol: float = 1e-6) -> None:
    got = flat(actual)
    assert len(got) == len(expected)
    for layer_got, layer_exp in zip(got, expected, strict=True):
        assert len(layer_got) == len(layer_exp)
        for a, b in zip(layer_got, layer_exp, strict=True):
            assert math.isclose(a, b, rel_tol=rtol, abs_tol=1e-6), (a, b)


def run_round(
    agg: BaseAggregation, global_w: Weights | None, updates: list[tuple[str, Weights, int]]
) -> Weights:
    agg.begin_round(global_w)
    for cid, w, n in updates:
        agg.add(cid, w, n)
    return agg.finish()


def ref_fedopt_rounds(
    kind: str,
    x0: Weights,
    rounds: list[list[tuple[str, Weights, int]]],
    *,
    eta: float,
    beta_1: float,
    beta_2: float,
    tau: float,
) -> list[list[list[float]]]:
    """Reddi et al. Algorithm 2, scalar by scalar."""
    x = flat(x0)
    m = [[0.0] * len(layer) for layer in x]
    v = [[0.0] * len(layer) for layer in x]
    history = []
    for updates in rounds:
        avg = ref_fedavg(updates)
        for li in range(len(x)):
            for j in range(len(x[li])):
                d = avg[li][j] - x[li][j]
                m[li][j] = beta_1 * m[li][j] + (1 - beta_1) * d
                if kind == "adagrad":
                    v[li][j] = v[li][j] + d * d
                elif kind == "adam":
                    v[li][j] = beta_2 * v[li][j] + (1 - beta_2) * d * d
                else:
                    diff = v[li][j] - d * d
                    sign = (diff > 0) - (diff < 0)
                    v[li][j] = v[li][j] - (1 - beta_2) * d * d * sign
                x[li][j] = x[li][j] + eta * m[li][j] / (math.sqrt(v[li][j]) + tau)
        history.append([list(layer) for layer in x])
    return history


# --------------------------------------------------------------------------- registry


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("FedAvg", FedAvg),
        ("FedAvgM", FedAvgM),
        ("FedAdagrad", FedAdagrad),
        ("FedAdam", FedAdam),
        ("FedYogi", FedYogi),
        ("FedMedian", FedMedian),
        ("FedTrimmedAvg", FedTrimmedAvg),
        ("Krum", Krum),
        ("MistNet", MistNet),
        ("FedAvgV2", FedAvgV2),
    ],
)
def test_registry(name: str, cls: type) -> None:
    assert ClassFactory.get_cls(ClassType.FL_AGG, name) is cls


@pytest.mark.parametrize(
    ("cls", "streaming"),
    [
        (FedAvg, True),
        (FedAvgM, True),
        (FedAdagrad, True),
        (FedAdam, True),
        (FedYogi, True),
        (FedMedian, False),
        (FedTrimmedAvg, False),
        (Krum, False),
    ],
)
def test_streaming_flag(cls: type[BaseAggregation], streaming: bool) -> None:
    assert cls.streaming is streaming


# --------------------------------------------------------------------------- FedAvg


class TestFedAvg:
    def test_against_reference(self) -> None:
        updates = make_round(1, 5)
        result = run_round(FedAvg(), None, updates)
        assert_close(result, ref_fedavg(updates))
        assert [a.dtype for a in result] == [np.float32] * 3

    def test_aggregate_upstream_api(self) -> None:
        updates = make_round(2, 3)
        agg = FedAvg()
        clients = [AggClient(num_samples=n, weights=w) for _c, w, n in updates]
        result = agg.aggregate(clients)
        assert result is not None
        assert_close(result, ref_fedavg(updates))
        assert agg.total_size == sum(n for _c, _w, n in updates)
        assert agg.weights is result

    def test_aggregate_accepts_nested_lists(self) -> None:
        agg = FedAvg()
        result = agg.aggregate([AggClient(1, [[1.0, 2.0], [3]]), AggClient(3, [[3.0, 6.0], [7]])])
        assert result is not None
        assert_close(result, [[2.5, 5.0], [6.0]])
        assert result[0].dtype == np.float64

    def test_agg_client_upstream_style(self) -> None:
        client = AggClient()
        client.num_samples = 2
        client.weights = [np.ones(2)]
        assert FedAvg().aggregate([client]) is not None

    def test_empty_returns_previous_weights(self) -> None:
        agg = FedAvg()
        assert agg.aggregate([]) is None
        first = agg.aggregate([AggClient(1, [np.ones(2)])])
        assert agg.aggregate([]) is first
        assert agg.round_number == 1

    def test_single_client_is_identity(self) -> None:
        rng = np.random.default_rng(3)
        w = make_weights(rng, np.float32)  # float32 * 7 / 7 is exact in float64
        result = run_round(FedAvg(accumulate_dtype="float64"), None, [("a", w, 7)])
        for got, exp in zip(result, w, strict=True):
            np.testing.assert_array_equal(got, exp)
        # The default float32 sum rounds twice (x * 7, then / 7): within one float32 ulp.
        result = run_round(FedAvg(), None, [("a", w, 7)])
        for got, exp in zip(result, w, strict=True):
            assert got.dtype == np.float32
            np.testing.assert_allclose(got, exp, rtol=2.4e-7, atol=0)

    def test_output_dtype_follows_global(self) -> None:
        rng = np.random.default_rng(4)
        glob = make_weights(rng, np.float64)
        updates = make_round(4, 2)  # float32 updates
        result = run_round(FedAvg(), glob, updates)
        assert [a.dtype for a in result] == [np.float64] * 3
        assert_close(result, ref_fedavg(updates))

    def test_finish_without_updates_returns_global(self) -> None:
        glob = [np.ones(2, dtype=np.float32)]
        agg = FedAvg()
        agg.begin_round(glob)
        out = agg.finish()
        assert out[0] is glob[0]
        assert agg.round_number == 0
        agg.begin_round(None)
        with pytest.raises(RoundStateError, match="no update and no global"):
            agg.finish()

    def test_unknown_parameter_is_logged(self, caplog: pytest.LogCaptureFixture) -> None:
        FedAvg(foo=1)
        assert "ignores unknown parameter(s) foo" in caplog.text

    @settings(max_examples=50, deadline=None)
    @given(
        values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=6),
        samples=st.lists(st.integers(1, 10_000), min_size=1, max_size=8),
    )
    def test_identical_weights_identity(self, values: list[float], samples: list[int]) -> None:
        w = [np.array(values, dtype=np.float64)]
        agg = FedAvg()
        agg.begin_round(None)
        for k, n in enumerate(samples):
            agg.add(f"c{k}", w, n)
        np.testing.assert_allclose(agg.finish()[0], w[0], rtol=1e-12, atol=1e-9)


# --------------------------------------------------------------------------- FedAvgM


def test_fedavgm_momentum_against_reference() -> None:
    rng = np.random.default_rng(10)
    x0 = make_weights(rng, np.float64)
    rounds = [make_round(11 + r, 3) for r in range(3)]
    lr, mu = 0.7, 0.9
    agg = FedAvgM(server_learning_rate=lr, server_momentum=mu)
    x = x0
    ref_x = flat(x0)
    u = [[0.0] * len(layer) for layer in ref_x]
    for updates in rounds:
        x = run_round(agg, x, updates)
        avg = ref_fedavg(updates)
        for li in range(len(ref_x)):
            for j in range(len(ref_x[li])):
                d = ref_x[li][j] - avg[li][j]
                u[li][j] = mu * u[li][j] + d
                ref_x[li][j] = ref_x[li][j] - lr * u[li][j]
        assert_close(x, ref_x, rtol=1e-9)
    assert agg.round_number == 3


def test_fedavgm_defaults_equal_fedavg() -> None:
    rng = np.random.default_rng(12)
    x0 = make_weights(rng, np.float64)
    updates = make_round(13, 4)
    assert_close(run_round(FedAvgM(), x0, updates), ref_fedavg(updates), rtol=1e-9)


def test_fedavgm_string_parameters() -> None:
    agg = FedAvgM(server_learning_rate="0.5", server_momentum="0.9")
    assert (agg.server_learning_rate, agg.server_momentum) == (0.5, 0.9)


# --------------------------------------------------------------------------- FedOpt


FEDOPT_CASES = [
    ("adagrad", FedAdagrad, {"eta": 0.3, "tau": 1e-3, "beta_1": 0.5}, 0.0),
    ("adam", FedAdam, {"eta": 0.3, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}, 0.99),
    ("yogi", FedYogi, {"eta": 0.3, "beta_1": 0.9, "beta_2": 0.95, "tau": 1e-3}, 0.95),
]


@pytest.mark.parametrize(("kind", "cls", "params", "beta_2"), FEDOPT_CASES)
def test_fedopt_three_rounds(
    kind: str, cls: type[FedAdam], params: dict[str, Any], beta_2: float
) -> None:
    rng = np.random.default_rng(20)
    x0 = make_weights(rng, np.float64)
    rounds = [make_round(21 + r, 4) for r in range(3)]
    expected = ref_fedopt_rounds(
        kind,
        x0,
        rounds,
        eta=params["eta"],
        beta_1=params.get("beta_1", 0.0),
        beta_2=beta_2,
        tau=params["tau"],
    )
    agg = cls(**params)
    x = x0
    for r, updates in enumerate(rounds):
        x = run_round(agg, x, updates)
        assert_close(x, expected[r], rtol=1e-9)
    assert agg.round_number == 3


def test_fedopt_flower_defaults() -> None:
    adam, yogi, adagrad = FedAdam(), FedYogi(), FedAdagrad()
    assert (adam.eta, adam.eta_l, adam.beta_1, adam.beta_2, adam.tau) == (
        0.1,
        0.1,
        0.9,
        0.99,
        1e-9,
    )
    assert (yogi.eta, yogi.eta_l, yogi.beta_1, yogi.beta_2, yogi.tau) == (
        0.01,
        0.0316,
        0.9,
        0.99,
        1e-3,
    )
    assert (adagrad.eta, adagrad.eta_l, adagrad.beta_1, adagrad.tau) == (0.1, 0.1, 0.0, 1e-9)


def test_fedopt_first_round_without_global_is_average() -> None:
    updates = make_round(30, 3)
    agg = FedAdam()
    result = agg.aggregate([AggClient(n, w) for _c, w, n in updates])
    assert result is not None
    assert_close(result, ref_fedavg(updates))
    assert agg.m is None
    assert agg.v is None
    # the next aggregate steps from the stored weights
    nxt = agg.aggregate([AggClient(n, w) for _c, w, n in make_round(31, 3)])
    assert nxt is not None
    assert agg.m is not None


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (FedAdam, {"eta": 0}, "eta must be >"),
        (FedAdam, {"beta_1": 1.0}, "beta_1 must be <"),
        (FedYogi, {"beta_2": -0.1}, "beta_2 must be >="),
        (FedAdagrad, {"tau": "x"}, "tau must be a number"),
        (FedAvgM, {"server_momentum": 1}, "server_momentum must be <"),
        (FedAvgM, {"server_learning_rate": float("nan")}, "finite"),
        (FedTrimmedAvg, {"beta": 0.5}, "beta must be <"),
        (Krum, {"num_malicious_clients": -1}, "num_malicious_clients must be >= 0"),
        (Krum, {"num_clients_to_keep": "two"}, "must be an integer"),
        (MistNet, {"cut_layer": "x"}, "cut_layer must be an integer"),
        (MistNet, {"cut_layer": 2, "epsilon": 0}, "epsilon must be >"),
    ],
)
def test_invalid_parameters(cls: Any, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


# --------------------------------------------------------------------------- robust


class TestFedMedian:
    def test_against_reference(self) -> None:
        for count in (1, 4, 5):
            updates = make_round(40 + count, count)
            expected = []
            for layer in range(len(SHAPES)):
                values = []
                for pos in coords(SHAPES[layer]):
                    column = sorted(float(w[layer][pos]) for _c, w, _n in updates)
                    mid = len(column) // 2
                    values.append(
                        column[mid] if len(column) % 2 else (column[mid - 1] + column[mid]) / 2
                    )
                expected.append(values)
            assert_close(run_round(FedMedian(), None, updates), expected)

    @settings(max_examples=50, deadline=None)
    @given(
        st.lists(
            st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=3, max_size=3),
            min_size=1,
            max_size=7,
        )
    )
    def test_within_min_max(self, rows: list[list[float]]) -> None:
        agg = FedMedian()
        agg.begin_round(None)
        for k, row in enumerate(rows):
            agg.add(f"c{k}", [np.array(row)], 1)
        result = agg.finish()[0]
        stacked = np.array(rows)
        assert (result >= stacked.min(axis=0)).all()
        assert (result <= stacked.max(axis=0)).all()


class TestFedTrimmedAvg:
    @pytest.mark.parametrize(("count", "beta"), [(5, 0.2), (10, 0.25), (3, 0.4), (1, 0.3)])
    def test_against_reference(self, count: int, beta: float) -> None:
        updates = make_round(50 + count, count)
        cut = int(beta * count)
        expected = []
        for layer in range(len(SHAPES)):
            values = []
            for pos in coords(SHAPES[layer]):
                column = sorted(float(w[layer][pos]) for _c, w, _n in updates)
                kept = column[cut : count - cut]
                values.append(sum(kept) / len(kept))
            expected.append(values)
        assert_close(run_round(FedTrimmedAvg(beta=beta), None, updates), expected)

    def test_drops_outlier(self) -> None:
        agg = FedTrimmedAvg(beta=0.2)
        agg.begin_round(None)
        for k, value in enumerate([1.0, 2.0, 3.0, 4.0, 1e9]):
            agg.add(f"c{k}", [np.array([value])], 1)
        np.testing.assert_allclose(agg.finish()[0], [3.0])

    @settings(max_examples=50, deadline=None)
    @given(
        st.lists(
            st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=2),
            min_size=1,
            max_size=6,
        )
    )
    def test_beta_zero_is_mean(self, rows: list[list[float]]) -> None:
        agg = FedTrimmedAvg(beta=0)
        agg.begin_round(None)
        for k, row in enumerate(rows):
            agg.add(f"c{k}", [np.array(row)], k + 1)
        expected = [sum(r[j] for r in rows) / len(rows) for j in range(2)]
        np.testing.assert_allclose(agg.finish()[0], expected, rtol=1e-9, atol=1e-6)


def ref_krum_scores(updates: list[tuple[str, Weights, int]], f: int) -> list[float]:
    n = len(updates)
    flats = [[x for layer in flat(w) for x in layer] for _c, w, _n in updates]
    closest = min(max(1, n - f - 2), n - 1)
    scores = []
    for i in range(n):
        dists = []
        for j in range(n):
            if j != i:
                dists.append(sum((a - b) ** 2 for a, b in zip(flats[i], flats[j], strict=True)))
        scores.append(sum(sorted(dists)[:closest]))
    return scores


class TestKrum:
    def test_krum_against_reference(self) -> None:
        updates = make_round(60, 7)
        scores = ref_krum_scores(updates, f=2)
        best = min(range(7), key=lambda i: scores[i])
        agg = Krum(num_malicious_clients=2)
        result = run_round(agg, None, updates)
        assert agg.selected == [updates[best][0]]
        for k, (cid, _w, _n) in enumerate(updates):
            assert math.isclose(agg.scores[cid], scores[k], rel_tol=1e-9)
        assert_close(result, flat(updates[best][1]))

    def test_multi_krum_against_reference(self) -> None:
        updates = make_round(61, 8)
        scores = ref_krum_scores(updates, f=1)
        keep = sorted(range(8), key=lambda i: scores[i])[:3]
        agg = Krum(num_malicious_clients="1", num_clients_to_keep="3")
        result = run_round(agg, None, updates)
        assert agg.selected == [updates[i][0] for i in keep]
        assert_close(result, ref_fedavg([updates[i] for i in keep]))

    def test_rejects_outliers(self) -> None:
        rng = np.random.default_rng(62)
        agg = Krum(num_malicious_clients=2)
        agg.begin_round(None)
        for k in range(6):
            agg.add(f"good{k}", [rng.normal(0, 0.01, 10)], 10)
        agg.add("evil0", [np.full(10, 100.0)], 1000)
        agg.add("evil1", [np.full(10, -100.0)], 1000)
        result = agg.finish()
        assert agg.selected[0].startswith("good")
        assert np.abs(result[0]).max() < 1

    def test_single_and_two_clients(self) -> None:
        w = [np.arange(3.0)]
        agg = Krum()
        np.testing.assert_array_equal(run_round(agg, None, [("a", w, 1)])[0], w[0])
        run_round(agg, None, [("a", w, 1), ("b", [w[0] + 1], 1)])
        assert agg.selected == ["a"]  # tie goes to the earlier update


# --------------------------------------------------------------------------- streaming/batch


ALL = [
    FedAvg,
    lambda: FedAvgM(server_momentum=0.5),
    FedAdagrad,
    FedAdam,
    FedYogi,
    FedMedian,
    FedTrimmedAvg,
    lambda: Krum(num_malicious_clients=1),
    lambda: MistNet(cut_layer=4),
    FedAvgV2,
]


@pytest.mark.parametrize("factory", ALL)
def test_streaming_equals_batch(factory: Any) -> None:
    rounds = [make_round(70 + r, 5) for r in range(3)]
    batch, streamed = factory(), factory()
    for updates in rounds:
        clients = [AggClient(n, w) for _c, w, n in updates]
        from_batch = batch.aggregate(clients)
        from_stream = run_round(streamed, streamed.weights, updates)
        assert from_batch is not None
        for a, b in zip(from_batch, from_stream, strict=True):
            np.testing.assert_array_equal(a, b)


def save_and_load(state: dict[str, Any]) -> dict[str, Any]:
    """Through JSON (scalars) and npz (arrays), as a checkpoint would."""
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    scalars = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    buffer.seek(0)
    with np.load(buffer) as loaded:
        restored: dict[str, Any] = {k: loaded[k] for k in loaded.files}
    restored.update(json.loads(json.dumps(scalars)))
    return restored


@pytest.mark.parametrize("factory", ALL)
def test_state_dict_round_trip(factory: Any) -> None:
    rng = np.random.default_rng(80)
    x0 = make_weights(rng, np.float64)
    rounds = [make_round(81 + r, 4) for r in range(4)]
    original = factory()
    x = x0
    for updates in rounds[:2]:
        x = run_round(original, x, updates)
    restored = factory()
    restored.load_state_dict(save_and_load(original.state_dict()))
    assert restored.round_number == 2
    assert restored.total_size == original.total_size
    x_orig = x_rest = x
    for updates in rounds[2:]:
        x_orig = run_round(original, x_orig, updates)
        x_rest = run_round(restored, x_rest, updates)
        for a, b in zip(x_orig, x_rest, strict=True):
            np.testing.assert_array_equal(a, b)
    assert restored.state_dict().keys() == original.state_dict().keys()


def test_state_dict_contents() -> None:
    agg = FedAdam()
    run_round(agg, [np.zeros(2)], [("a", [np.ones(2)], 1)])
    state = agg.state_dict()
    assert state["algorithm"] == "FedAdam"
    assert state["round"] == 1
    assert state["m.count"] == 1
    assert state["v.count"] == 1
    assert state["weights.count"] == 1
    assert all(isinstance(v, (int, float, str, np.ndarray)) for v in state.values())


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"algorithm": "FedYogi"}, "for algorithm 'FedYogi'"),
        ({"round": -1}, "round"),
        ({"m.count": 1, "m.0": np.zeros(2)}, "both m and v"),
        ({"m.count": 2, "m.0": np.zeros(2), "v.count": 0}, "missing 'm.1'"),
        (
            {"m.count": 1, "m.0": np.zeros(2), "v.count": 1, "v.0": np.zeros(3)},
            "same layer shapes",
        ),
        (
            {"m.count": 1, "m.0": np.zeros(2), "v.count": 1, "v.0": -np.ones(2)},
            "negative",
        ),
        ({"weights.count": 1, "weights.0": np.array([np.nan])}, "NaN"),
    ],
)
def test_load_state_dict_errors(state: dict[str, Any], match: str) -> None:
    agg = FedAdam()
    run_round(agg, [np.zeros(2)], [("a", [np.ones(2)], 1)])
    before = agg.state_dict()
    with pytest.raises(AggregationError, match=match):
        agg.load_state_dict(state)
    after = agg.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert (
            np.array_equal(value, after[key])
            if isinstance(value, np.ndarray)
            else (value == after[key])
        )


def test_load_state_dict_discards_open_round() -> None:
    agg = FedAvg()
    agg.begin_round(None)
    agg.add("a", [np.ones(2)], 1)
    agg.load_state_dict({"algorithm": "FedAvg", "round": 5, "total_size": 3})
    assert not agg.round_open
    assert agg.round_number == 5
    assert agg.weights is None


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("factory", ALL)
@pytest.mark.parametrize(
    ("weights", "num_samples", "match"),
    [
        ([np.ones((3, 2)), np.ones(4)], 1, r"has 2 layers, expected 3"),
        ([np.ones((2, 3)), np.ones(4), np.ones(())], 1, r"layer 0 has shape \(2, 3\)"),
        ([np.ones((3, 2)), np.ones(4, dtype=np.int64), np.ones(())], 1, "layer 1 has dtype int64"),
        (
            [np.ones((3, 2)), np.array([1, np.nan, 1, 1]), np.ones(())],
            1,
            "layer 1 holds 1 NaN or infinite",
        ),
        ([np.ones((3, 2)), np.ones(4), np.array(np.inf)], 1, "layer 2 holds 1 NaN"),
        ([np.ones((3, 2)), np.ones(4), np.ones(())], 0, "num_samples must be > 0"),
        ([np.ones((3, 2)), np.ones(4), np.ones(())], -3, "num_samples must be > 0"),
        ([np.ones((3, 2)), np.ones(4), np.ones(())], 2.0, "num_samples must be an integer"),
        ([np.ones((3, 2)), np.ones(4), np.ones(())], True, "num_samples must be an integer"),
        (np.ones(3), 1, "must be a list of arrays"),
        ([np.ones((3, 2)), ["a", "b", "c", "d"], np.ones(())], 1, "not an array of numbers"),
        ([np.ones((3, 2)), [[1.0], [1.0, 2.0]], np.ones(())], 1, "not a numeric array"),
        (
            [np.ones((3, 2)), np.ones(4, dtype=np.complex128), np.ones(())],
            1,
            "dtype complex128",
        ),
    ],
)
def test_rejected_update_leaves_round_untouched(
    factory: Any, weights: Any, num_samples: Any, match: str
) -> None:
    rng = np.random.default_rng(90)
    x0 = make_weights(rng, np.float64)
    updates = make_round(91, 3)
    reference = factory()
    expected = run_round(reference, x0, updates)

    agg = factory()
    agg.begin_round(x0)
    agg.add(*updates[0])
    with pytest.raises(AggregationError, match=match) as info:
        agg.add("intruder", weights, num_samples)
    assert "'intruder'" in str(info.value)
    for update in updates[1:]:
        agg.add(*update)
    assert agg.round_clients == [u[0] for u in updates]
    for a, b in zip(agg.finish(), expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_shape_checked_against_first_update_without_global() -> None:
    agg = FedMedian()
    agg.begin_round(None)
    agg.add("a", [np.ones(2)], 1)
    with pytest.raises(AggregationError, match=r"client 'b': weights layer 0 has shape \(3,\)"):
        agg.add("b", [np.ones(3)], 1)


def test_duplicate_client() -> None:
    agg = FedAvg()
    agg.begin_round(None)
    agg.add("a", [np.ones(2)], 1)
    with pytest.raises(AggregationError, match="client 'a' already sent an update this round"):
        agg.add("a", [np.zeros(2)], 5)
    np.testing.assert_array_equal(agg.finish()[0], np.ones(2))
    agg.begin_round(None)
    agg.add("a", [np.zeros(2)], 1)  # a new round accepts it again


@pytest.mark.parametrize("client_id", ["", None, 3])
def test_bad_client_id(client_id: Any) -> None:
    agg = FedAvg()
    agg.begin_round(None)
    with pytest.raises(AggregationError, match="client_id must be a non-empty string"):
        agg.add(client_id, [np.ones(2)], 1)


def test_round_state_errors() -> None:
    agg = FedAvg()
    with pytest.raises(RoundStateError, match="client 'a': no round is open"):
        agg.add("a", [np.ones(2)], 1)
    with pytest.raises(RoundStateError, match="no round is open"):
        agg.finish()
    agg.begin_round(None)
    agg.add("a", [np.ones(2)], 1)
    agg.finish()
    with pytest.raises(RoundStateError):
        agg.finish()
    assert issubclass(RoundStateError, AggregationError)
    assert issubclass(AggregationError, ValueError)


def test_begin_round_discards_open_round() -> None:
    agg = FedAvg()
    agg.begin_round(None)
    agg.add("a", [np.full(2, 100.0)], 1)
    agg.begin_round(None)
    agg.add("a", [np.ones(2)], 1)
    np.testing.assert_array_equal(agg.finish()[0], np.ones(2))


@pytest.mark.parametrize(
    ("global_weights", "match"),
    [
        ([np.array([1, 2])], "global_weights layer 0 has dtype int64"),
        ([np.array([np.nan])], "global_weights layer 0 holds 1 NaN"),
        (np.zeros(2), "global_weights must be a list of arrays"),
    ],
)
def test_bad_global_weights(global_weights: Any, match: str) -> None:
    with pytest.raises(AggregationError, match=match):
        FedAdam().begin_round(global_weights)


def test_aggregate_names_the_client_index() -> None:
    with pytest.raises(AggregationError, match=r"client 'clients\[1\]'"):
        FedAvg().aggregate([AggClient(1, [np.ones(2)]), AggClient(1, [np.ones(3)])])


def test_streaming_memory_does_not_keep_updates() -> None:
    agg = FedAvg()
    agg.begin_round(None)
    for k in range(10):
        agg.add(f"c{k}", [np.ones(4)], 1)
    assert agg._buffer == []
    assert agg._sums is not None
    assert len(agg._sums) == 1


# --------------------------------------------------------------------------- upstream


def test_mistnet_parameters() -> None:
    agg = MistNet(cut_layer="4", epsilon="100")
    assert agg.parameters == {"type": "mistnet", "cut_layer": 4, "epsilon": 100}
    assert MistNet(3).parameters["epsilon"] == 100
    assert MistNet(3, epsilon="0.5").epsilon == 0.5
    assert FedAvgV2().parameters == {"type": "fedavg"}


class UpstreamStylePlugin(BaseAggregation):
    """A plug-in written for upstream: only aggregate() is overridden."""

    def aggregate(self, clients: Any) -> Any:
        if not clients:
            return self.weights
        self.total_size = sum(c.num_samples for c in clients)
        width = len(clients[0].weights[0])
        return [[max(float(c.weights[0][j]) for c in clients) for j in range(width)]]


def test_upstream_plugin_works_with_rounds() -> None:
    agg = UpstreamStylePlugin()
    agg.begin_round([np.zeros(2)])
    agg.add("a", [np.array([1.0, 5.0])], 1)
    agg.add("b", [np.array([3.0, 2.0])], 1)
    result = agg.finish()
    np.testing.assert_array_equal(result[0], [3.0, 5.0])
    assert agg.total_size == 2


def test_base_without_aggregate_is_not_implemented() -> None:
    agg = BaseAggregation()
    agg.begin_round(None)
    agg.add("a", [np.ones(1)], 1)
    with pytest.raises(NotImplementedError):
        agg.finish()


# --------------------------------------------------------------------------- layer by layer


def stream_update(agg: BaseAggregation, cid: str, weights: Weights, n: int, layout: bool) -> None:
    agg.begin_update(cid, n, [(w.shape, w.dtype) for w in weights] if layout else None)
    for index in reversed(range(len(weights))):  # any order
        agg.add_layer(cid, index, weights[index])
    agg.commit_update(cid)


@pytest.mark.parametrize("factory", ALL)
def test_layer_by_layer_equals_whole_updates(factory: Any) -> None:
    rng = np.random.default_rng(90)
    x0 = make_weights(rng, np.float64)
    whole, layered = factory(), factory()
    for r in range(3):
        updates = make_round(91 + r, 5)
        from_whole = run_round(whole, x0 if r == 0 else whole.weights, updates)
        layered.begin_round(x0 if r == 0 else layered.weights)
        for k, (cid, weights, n) in enumerate(updates):
            stream_update(layered, cid, weights, n, layout=k % 2 == 0)
        from_layers = layered.finish()
        for a, b in zip(from_whole, from_layers, strict=True):
            np.testing.assert_array_equal(a, b)


def test_float32_sums_match_the_float64_reference() -> None:
    updates = make_round(95, 8)  # float32 updates
    ref = ref_fedavg(updates)
    default = run_round(FedAvg(), None, updates)
    assert [a.dtype for a in default] == [np.float32] * len(SHAPES)
    assert_close(default, ref, rtol=1e-5)
    exact = run_round(FedAvg(accumulate_dtype="float64"), None, updates)
    assert_close(exact, ref, rtol=1e-6)


def test_accumulate_dtype() -> None:
    agg = FedAvg()
    agg.begin_round([np.zeros(3, np.float16)])
    agg.add("a", [np.ones(3, np.float16)], 2)
    assert agg._sums is not None
    assert agg._sums[0] is not None
    assert agg._sums[0].dtype == np.float32  # float16 models sum in float32
    assert agg.finish()[0].dtype == np.float16
    for value, want in (("float64", np.float64), ("auto", None), (None, None)):
        assert FedAdam(accumulate_dtype=value).accumulate_dtype == want
    assert FedAvgM(accumulate_dtype="float32").accumulate_dtype == np.float32
    with pytest.raises(ValueError, match="accumulate_dtype must be one of auto"):
        FedAvg(accumulate_dtype="int8")


def test_fedavg_result_is_the_sum_buffer() -> None:
    agg = FedAvg()
    glob = [np.zeros(4, np.float32)]
    agg.begin_round(glob)
    agg.add("a", [np.full(4, 2.0, np.float32)], 1)
    agg.add("b", [np.full(4, 4.0, np.float32)], 3)
    assert agg._sums is not None
    buffer = agg._sums[0]
    result = agg.finish()
    assert result[0] is buffer  # averaged in place: no second copy of the model
    np.testing.assert_array_equal(result[0], np.full(4, 3.5, np.float32))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_aborted_update_is_backed_out(dtype: str) -> None:
    rng = np.random.default_rng(96)
    updates = make_round(97, 3)
    agg = FedAvg(accumulate_dtype=dtype)
    agg.begin_round(None)
    for cid, weights, n in updates[:2]:
        agg.add(cid, weights, n)
    bad = make_weights(rng, scale=1000.0)
    agg.begin_update("evil", 50)
    agg.add_layer("evil", 0, bad[0])
    agg.add_layer("evil", 2, bad[2])
    assert agg.abort_update("evil")
    assert not agg.abort_update("evil")  # idempotent
    assert agg.updates_in_progress == ()
    cid, weights, n = updates[2]
    agg.add(cid, weights, n)
    # Subtraction rounds: within a few ulps of the sums (float32: scaled by the bad update).
    assert_close(agg.finish(), ref_fedavg(updates), rtol=1e-3 if dtype == "float32" else 1e-9)
    assert agg.round_clients == [u[0] for u in updates]


def test_aborting_the_only_update_resets_the_round_exactly() -> None:
    agg = FedAvg()
    agg.begin_round(None)
    agg.begin_update("a", 3, [((2,), np.float32), ((3,), np.float32)])
    agg.add_layer("a", 0, np.array([1.0, 2.0], np.float32))
    assert agg.template == [((2,), np.dtype(np.float32)), ((3,), np.dtype(np.float32))]
    agg.abort_update("a")
    assert agg.template is None  # announced by an aborted update only
    assert agg._sums is None
    agg.add("b", [np.ones(4)], 1)  # another layout is fine now
    np.testing.assert_array_equal(agg.finish()[0], np.ones(4))


def test_add_layer_errors_abort_the_update() -> None:
    glob = [np.zeros((2, 2)), np.zeros(3)]
    agg = FedAvg()
    agg.begin_round(glob)
    cases: list[tuple[Any, Any, str]] = [
        (0, np.array([[1.0, np.nan], [0.0, 0.0]]), r"layer 0 \('w0'\) holds 1 NaN"),
        (1, np.ones(4), r"layer 1 \('w1'\) has shape \(4,\), expected \(3,\)"),
        (2, np.ones(3), "no such layer"),
        (0, np.ones((2, 2), np.int32), "dtype int32"),
    ]
    for index, layer, match in cases:
        agg.begin_update("a", 1)
        agg.add_layer("a", 1 - min(index, 1), np.ones(glob[1 - min(index, 1)].shape))
        with pytest.raises(AggregationError, match=match):
            agg.add_layer("a", index, layer, name=f"w{index}")
        assert agg.updates_in_progress == ()
    agg.begin_update("a", 1)
    agg.add_layer("a", 0, np.ones((2, 2)))
    with pytest.raises(AggregationError, match="sent twice"):
        agg.add_layer("a", 0, np.ones((2, 2)))
    agg.begin_update("a", 1)
    agg.add_layer("a", 1, np.ones(3))
    with pytest.raises(AggregationError, match=r"incomplete: layer\(s\) 0"):
        agg.commit_update("a")
    with pytest.raises(AggregationError, match="no update in progress"):
        agg.add_layer("a", 0, np.ones((2, 2)))
    fresh = FedAvg()
    fresh.begin_round(None)
    with pytest.raises(AggregationError, match="layout"):
        fresh.begin_update("a", 1)
    # The round is untouched by all of that.
    agg.add("b", [np.ones((2, 2)), np.ones(3)], 2)
    result = agg.finish()
    np.testing.assert_array_equal(result[0], np.ones((2, 2)))


def test_begin_update_checks() -> None:
    agg = FedMedian()
    with pytest.raises(RoundStateError):
        agg.begin_update("a", 1)
    agg.begin_round([np.zeros(2)])
    with pytest.raises(AggregationError, match="num_samples"):
        agg.begin_update("a", 0)
    with pytest.raises(AggregationError, match=r"layer 0 has shape \(3,\)"):
        agg.begin_update("a", 1, [((3,), np.float32)])
    with pytest.raises(AggregationError, match="floating point"):
        agg.begin_update("a", 1, [((2,), np.int64)])
    agg.begin_update("a", 1)
    with pytest.raises(AggregationError, match="already sending"):
        agg.begin_update("a", 1)
    with pytest.raises(AggregationError, match="already sending"):
        agg.add("a", [np.ones(2)], 1)
    agg.add_layer("a", 0, np.ones(2))
    agg.commit_update("a")
    with pytest.raises(AggregationError, match="already sent"):
        agg.begin_update("a", 1)


def test_finish_aborts_updates_in_progress() -> None:
    for factory in (FedAvg, FedMedian):
        agg = factory()
        agg.begin_round([np.zeros(2)])
        agg.add("a", [np.full(2, 3.0)], 1)
        agg.begin_update("b", 5)
        agg.add_layer("b", 0, np.full(2, 100.0))
        result = agg.finish()
        np.testing.assert_allclose(result[0], [3.0, 3.0])
        assert agg.round_clients == ["a"]
        assert agg.updates_in_progress == ()


def test_buffered_layer_updates_keep_references() -> None:
    agg = Krum()
    agg.begin_round(None)
    layer = np.ones(3)
    agg.begin_update("a", 1, [((3,), np.float64)])
    agg.add_layer("a", 0, layer)
    agg.commit_update("a")
    assert agg._buffer[0][1][0] is layer  # K copies: documented for the robust algorithms


def test_float32_overflow_is_an_error() -> None:
    agg = FedAvg()
    agg.begin_round(None)
    agg.add("a", [np.full(2, 3e38, np.float32)], 10)
    with pytest.raises(AggregationError, match="accumulate_dtype"):
        agg.finish()
    agg = FedAvg(accumulate_dtype="float64")
    agg.begin_round(None)
    agg.add("a", [np.full(2, 3e38, np.float32)], 10)
    np.testing.assert_allclose(agg.finish()[0], [3e38, 3e38], rtol=1e-6)


def test_undo_files_are_reused_and_an_abort_reads_back_its_own_layers() -> None:
    from sedna.algorithms.aggregation import aggregation as module

    agg = FedAvg(accumulate_dtype="float64")
    agg.begin_round([np.zeros(6, np.float32), np.zeros(2, np.float32)])
    # A long update fills an undo file, commits, and leaves the file to the pool...
    agg.begin_update("a", 1)
    agg.add_layer("a", 0, np.full(6, 100.0, np.float32))
    agg.add_layer("a", 1, np.full(2, 200.0, np.float32))
    log = agg._updates["a"].undo
    assert log is not None
    file = log._file
    agg.commit_update("a")
    log.close()  # closing twice must not put the file in the pool twice
    # ...the next update writes over its first bytes, and an abort subtracts only those.
    agg.begin_update("b", 1)
    agg.add_layer("b", 1, np.full(2, 7.0, np.float32))
    reused = agg._updates["b"].undo
    assert reused is not None
    assert reused._file is file
    assert agg.abort_update("b")
    agg.begin_update("c", 1)
    agg.add_layer("c", 0, np.ones(6, np.float32))
    other = agg._updates["c"].undo
    assert other is not None
    assert other._file is file  # back in the pool once, not twice
    agg.begin_update("d", 1)
    agg.add_layer("d", 0, np.ones(6, np.float32))
    fresh = agg._updates["d"].undo
    assert fresh is not None
    assert fresh._file is not file
    agg.abort_update("c")
    agg.abort_update("d")
    np.testing.assert_array_equal(agg.finish()[1], np.full(2, 200.0, np.float32))
    with pytest.raises(module.AggregationError, match="after it was closed"):
        log.write(0, np.ones(1, np.float32))


def test_committed_updates_hand_their_undo_file_to_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sedna.algorithms.aggregation import aggregation as module

    created: list[object] = []
    make = module.tempfile.TemporaryFile

    def counted(*args: Any, **kwargs: Any) -> Any:
        created.append(make(*args, **kwargs))
        return created[-1]

    monkeypatch.setattr(module.tempfile, "TemporaryFile", counted)
    monkeypatch.setattr(module, "_UNDO_FILES", module._UndoFilePool(4))  # none pooled yet
    agg = FedAvg()
    agg.begin_round([np.zeros(8, np.float32)])
    for client in "abcdef":
        agg.begin_update(client, 1)
        agg.add_layer_part(client, 0, 0, np.ones(8, np.float32))
        agg.commit_update(client)
    # One update at a time: each commit gives its file back and the next one reuses it.
    assert len(created) == 1


# --------------------------------------------------------------------------- in parts


def parts_update(agg: BaseAggregation, cid: str, weights: Weights, n: int, size: int) -> None:
    """Send each layer in flat parts of ``size`` elements, as a receiver of chunks does."""
    agg.begin_update(cid, n, [(w.shape, w.dtype) for w in weights])
    for index, layer in enumerate(weights):
        flat = layer.reshape(-1)
        if flat.size == 0:
            assert agg.add_layer_part(cid, index, 0, flat)
            continue
        for start in range(0, flat.size, size):
            done = agg.add_layer_part(cid, index, start, flat[start : start + size])
            assert done == (start + size >= flat.size)
    agg.commit_update(cid)


@pytest.mark.parametrize("factory", ALL)
@pytest.mark.parametrize("size", [1, 2, 5])
def test_parts_equal_whole_updates(factory: Any, size: int) -> None:
    rng = np.random.default_rng(190)
    x0 = make_weights(rng, np.float64)
    whole, parted = factory(), factory()
    for r in range(2):
        updates = make_round(191 + r, 4)
        from_whole = run_round(whole, x0 if r == 0 else whole.weights, updates)
        parted.begin_round(x0 if r == 0 else parted.weights)
        for cid, weights, n in updates:
            parts_update(parted, cid, weights, n, size)
        for a, b in zip(from_whole, parted.finish(), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("factory", [FedAvg, FedMedian])
def test_an_update_aborted_in_the_middle_of_a_layer_is_backed_out(factory: Any) -> None:
    updates = make_round(197, 3)
    agg = factory()
    agg.begin_round(None)
    for cid, weights, n in updates[:2]:
        agg.add(cid, weights, n)
    bad = make_weights(np.random.default_rng(198), scale=1000.0)
    agg.begin_update("evil", 50, [(w.shape, w.dtype) for w in bad])
    assert agg.add_layer_part("evil", 0, 0, bad[0].reshape(-1)[:4]) is False  # 4 of 6
    assert agg.abort_update("evil")
    cid, weights, n = updates[2]
    agg.add(cid, weights, n)
    reference = run_round(factory(), None, updates)
    assert_close(agg.finish(), flat(reference), rtol=1e-3)


def test_add_layer_part_errors_name_the_problem_and_abort_the_update() -> None:
    glob = [np.zeros((2, 3), np.float32), np.zeros(3, np.float32)]
    cases: list[tuple[int, int, Any, str]] = [
        (0, 2, np.ones(2, np.float32), "next one expected is 0"),  # a gap
        (0, 0, np.ones(7, np.float32), "runs past the layer's 6 elements"),
        (0, 0, np.array([1.0, np.nan], np.float32), "NaN or infinite"),
        (0, 0, np.ones(2, np.int32), "floating point"),
        (5, 0, np.ones(2, np.float32), "no such layer"),
    ]
    for index, start, part, message in cases:
        agg = FedAvg()
        agg.begin_round(glob)
        agg.begin_update("a", 1)
        agg.add_layer("a", 1, np.ones(3, np.float32))
        with pytest.raises(AggregationError, match=message):
            agg.add_layer_part("a", index, start, part)
        assert agg.updates_in_progress == ()  # aborted
        assert agg._sums is None  # and backed out exactly (it was the only update)


def test_back_out_false_leaves_a_refused_update_for_the_caller_to_abort() -> None:
    agg = FedAvg()
    agg.begin_round([np.zeros(4, np.float32), np.zeros(2, np.float32)])
    agg.begin_update("keep", 3)
    agg.add_layer("keep", 0, np.full(4, 2.0, np.float32))
    agg.add_layer("keep", 1, np.full(2, 2.0, np.float32))
    agg.commit_update("keep")
    agg.begin_update("a", 1)
    agg.add_layer_part("a", 0, 0, np.ones(4, np.float32))
    with pytest.raises(AggregationError, match="NaN or infinite"):
        agg.add_layer_part("a", 1, 0, np.array([1.0, np.nan], np.float32), back_out=False)
    assert agg.updates_in_progress == ("a",)  # not aborted: the caller's job
    with pytest.raises(AggregationError, match="NaN or infinite"):
        agg.add_layer("a", 1, np.array([np.inf, 1.0], np.float32), back_out=False)
    assert agg.updates_in_progress == ("a",)
    assert agg.abort_update("a")  # the caller backs it out
    assert_close(agg.finish(), [[2.0] * 4, [2.0] * 2])


def test_a_layer_cannot_be_sent_again_in_parts() -> None:
    agg = FedAvg()
    agg.begin_round([np.zeros(2, np.float32)])
    agg.begin_update("a", 1)
    agg.add_layer_part("a", 0, 0, np.ones(2, np.float32))
    with pytest.raises(AggregationError, match="sent twice"):
        agg.add_layer_part("a", 0, 0, np.ones(2, np.float32))


def test_an_incomplete_layer_makes_the_commit_fail() -> None:
    agg = FedAvg()
    agg.begin_round([np.zeros(4, np.float32)])
    agg.begin_update("a", 1)
    agg.add_layer_part("a", 0, 0, np.ones(3, np.float32))
    with pytest.raises(AggregationError, match="incomplete"):
        agg.commit_update("a")
    assert agg._sums is None


def test_begin_round_can_skip_the_finite_scan_of_trusted_weights() -> None:
    glob = [np.array([1.0, np.nan], np.float32)]
    with pytest.raises(AggregationError, match="NaN or infinite"):
        FedAvg().begin_round(glob)
    agg = FedAvg()
    agg.begin_round(glob, check_finite=False)  # the caller vouches for them
    assert agg.template == [((2,), np.dtype(np.float32))]
    with pytest.raises(AggregationError, match="floating point"):
        FedAvg().begin_round([np.zeros(2, np.int32)], check_finite=False)  # dtypes still checked


# --------------------------------------------------------------------------- finiteness check


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, 4_999, 123_456, 199_999])
def test_every_nan_or_inf_is_found_wherever_it_is(dtype: Any, bad: float, where: int) -> None:
    # The float32/float64 fast path (a sum of squares) must miss none, at any position.
    from sedna.algorithms.aggregation.aggregation import _count_nonfinite

    layer = np.full(200_000, 0.5, dtype=dtype)
    assert _count_nonfinite(layer) == 0
    layer[where] = bad
    assert _count_nonfinite(layer) == 1
    layer[where // 2] = np.nan
    assert _count_nonfinite(layer) == (1 if where // 2 == where else 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_finite_weights_are_not_taken_for_infinities(dtype: Any) -> None:
    # Their squares overflow: the exact count decides, and finds none.
    from sedna.algorithms.aggregation.aggregation import _count_nonfinite

    huge = np.finfo(dtype).max / 2
    layer = np.array([huge, -huge, 1.0] * 1000, dtype=dtype)
    assert _count_nonfinite(layer) == 0
    layer[1500] = np.inf
    assert _count_nonfinite(layer) == 1


def test_axpy_by_blas_updates_a_slice_in_place_like_numpy() -> None:
    from sedna.algorithms.aggregation.aggregation import _axpy

    rng = np.random.default_rng(7)
    for dtype in (np.float32, np.float64):
        total = rng.standard_normal(1000).astype(dtype)
        part = rng.standard_normal(300).astype(dtype)
        expected = total.copy()
        expected[100:400] += dtype(2.5) * part
        before = total.copy()
        _axpy(total[100:400], part, 2.5)
        # FMA rounds once where NumPy rounds twice: equal to a few ulps of the operands.
        np.testing.assert_allclose(total, expected, rtol=0, atol=np.finfo(dtype).eps * 16)
        np.testing.assert_array_equal(total[:100], before[:100])  # untouched around it
        np.testing.assert_array_equal(total[400:], before[400:])
    # Mixed dtypes (float16 parts into float32 sums) take NumPy's block path.
    sums = np.zeros(5, np.float32)
    _axpy(sums, np.ones(5, np.float16), 3.0)
    np.testing.assert_array_equal(sums, np.full(5, 3.0, np.float32))
