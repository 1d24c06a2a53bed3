"""MistNet's local-differential-privacy perturbation and settings (edge side, no network)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sedna.algorithms.aggregation import MistNet
from sedna.core.federated_learning.mistnet import (
    FederatedLearningV2,
    MistNetSettings,
    clip_l1,
    laplace_scale,
    perturb_features,
    unary_keep_probability,
)


def test_clip_l1_leaves_small_vectors_and_scales_large_ones_to_the_bound() -> None:
    features = np.array([[0.1, -0.2, 0.3], [3.0, -4.0, 1.0], [0.0, 0.0, 0.0]])
    clipped = clip_l1(features, 1.0)
    np.testing.assert_allclose(clipped[0], features[0])  # L1 0.6 <= 1: untouched
    np.testing.assert_allclose(np.abs(clipped[1]).sum(), 1.0)
    np.testing.assert_allclose(clipped[1] / np.abs(clipped[1]).sum(), features[1] / 8.0)
    np.testing.assert_array_equal(clipped[2], 0.0)


def test_clip_l1_works_per_sample_on_any_feature_shape() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(50, 4, 3, 3)) * 10
    clipped = clip_l1(features, 2.5)
    assert clipped.shape == features.shape
    norms = np.abs(clipped.reshape(50, -1)).sum(axis=1)
    assert norms.max() <= 2.5 + 1e-9


@pytest.mark.parametrize("bound", [0.0, -1.0, math.inf, math.nan])
def test_clip_l1_refuses_a_bad_bound(bound: float) -> None:
    with pytest.raises(ValueError, match="clip_bound"):
        clip_l1(np.ones((2, 2)), bound)


@pytest.mark.parametrize("epsilon", [1.0, 10.0, 100.0])
def test_laplace_noise_scale_is_sensitivity_over_epsilon(epsilon: float) -> None:
    # Zero features are not clipped, so the output is the noise alone; a Laplace(0, b)
    # variable has E|X| = b and Var = 2 b^2.
    clip = 3.0
    noise = perturb_features(
        np.zeros((2000, 100)), epsilon, clip_bound=clip, rng=np.random.default_rng(1)
    )
    b = laplace_scale(epsilon, clip)
    assert b == pytest.approx(2 * clip / epsilon)
    assert noise.dtype == np.float32
    assert np.abs(noise).mean() == pytest.approx(b, rel=0.02)
    assert noise.var() == pytest.approx(2 * b * b, rel=0.05)
    assert abs(float(noise.mean())) < 0.02 * b


def test_smaller_epsilon_means_more_noise() -> None:
    x = np.random.default_rng(2).normal(size=(500, 32))
    errors = []
    for epsilon in (1.0, 10.0, 100.0):
        noisy = perturb_features(x, epsilon, clip_bound=1.0, rng=np.random.default_rng(3))
        errors.append(float(np.abs(noisy - clip_l1(x, 1.0)).mean()))
    assert errors[0] > 5 * errors[1] > 25 * errors[2]


def test_perturbation_clips_before_adding_noise() -> None:
    x = np.full((4000, 10), 100.0)  # L1 norm 1000, clipped to 1: each coordinate to 0.1
    noisy = perturb_features(x, 1000.0, clip_bound=1.0, rng=np.random.default_rng(4))
    assert noisy.mean() == pytest.approx(0.1, abs=0.001)


def test_fresh_noise_by_default() -> None:
    x = np.zeros((3, 5))
    assert not np.array_equal(perturb_features(x, 1.0), perturb_features(x, 1.0))


def test_unary_encoding_keeps_bits_with_the_symmetric_probability() -> None:
    epsilon = 2.0
    p = unary_keep_probability(epsilon)
    assert p == pytest.approx(math.e / (math.e + 1))
    x = np.where(np.random.default_rng(5).random((400, 50)) > 0.5, 1.0, -1.0)
    out = perturb_features(x, epsilon, mechanism="unary", rng=np.random.default_rng(6))
    assert set(np.unique(out)) <= {0.0, 1.0}
    kept = (out == (x > 0)).mean()
    assert kept == pytest.approx(p, abs=0.01)
    assert unary_keep_probability(1e6) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon": -1.0}, "epsilon"),
        ({"epsilon": math.inf}, "epsilon"),
        ({"epsilon": 1.0, "mechanism": "gaussian"}, "mechanism"),
        ({"epsilon": 1.0, "clip_bound": 0.0}, "clip_bound"),
    ],
)
def test_bad_perturbation_arguments_are_named(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        perturb_features(np.ones((2, 2)), **kwargs)  # type: ignore[arg-type]


def test_nan_features_are_refused_before_perturbation() -> None:
    with pytest.raises(ValueError, match="NaN"):
        perturb_features(np.array([[1.0, math.nan]]), 1.0)


def test_settings_come_from_the_mistnet_aggregation() -> None:
    settings = MistNetSettings.resolve(MistNet(cut_layer="4", epsilon="50"), clip_bound=2.0)
    assert settings == MistNetSettings(cut_layer=4, epsilon=50.0, clip_bound=2.0)


def test_settings_fall_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("cut_layer", "2")
    monkeypatch.setenv("epsilon", "7.5")
    monkeypatch.setenv("mechanism", "unary")
    assert MistNetSettings.resolve(None) == MistNetSettings(2, 7.5, "unary", 1.0)


def test_settings_without_cut_layer_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("cut_layer", raising=False)
    monkeypatch.delenv("CUT_LAYER", raising=False)
    with pytest.raises(ValueError, match="cut_layer"):
        MistNetSettings.resolve({"epsilon": 1})
    with pytest.raises(ValueError, match="mechanism"):
        MistNetSettings.resolve({"cut_layer": 1, "mechanism": "rappor"})


def test_transmitter_defaults_to_ws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRANSMITTER", raising=False)
    transmitter = FederatedLearningV2.get_transmitter_from_config()
    assert not getattr(transmitter, "by_reference", False)
    assert type(transmitter).__name__ in {"WSTransmitter", "_Transmitter"}
