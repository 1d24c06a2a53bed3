"""Hard example mining rules: upstream decision rules, written out as reference computations."""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import numpy as np
import pytest

from sedna.algorithms.hard_example_mining import (
    BaseFilter,
    CloudOnlyFilter,
    CrossEntropyFilter,
    EdgeOnlyFilter,
    IBTFilter,
    RandomFilter,
    ThresholdFilter,
)
from sedna.common.class_factory import ClassFactory, ClassType


def box(score: Any, label: int = 0) -> list[Any]:
    return [10.0, 20.0, 110.0, 220.0, score, label]


# --------------------------------------------------------------------------- reference rules


def ref_threshold(boxes: list[list[float]], threshold: float) -> bool:
    """Upstream: hard iff mean(bbox[4]) < threshold."""
    return sum(b[4] for b in boxes) / len(boxes) < threshold


def ref_cross_entropy(probs: list[float], threshold: float) -> bool:
    """Upstream: conf = 1 + sum(p ln p) / ln N, hard iff conf < threshold (0 ln 0 = 0)."""
    log_sum = sum(p * math.log(p) for p in probs if p > 0)
    return 1 + log_sum / math.log(len(probs)) < threshold


def ref_ibt(boxes: list[list[float]], threshold_img: float, threshold_box: float) -> bool:
    """Upstream: coef = #(score <= threshold_box) / #boxes, hard iff coef >= 1 - threshold_img."""
    low = sum(1 for b in boxes if b[4] <= threshold_box)
    return low / len(boxes) >= 1 - threshold_img


# --------------------------------------------------------------------------- Threshold


class TestThreshold:
    def test_defaults(self) -> None:
        assert ThresholdFilter().threshold == 0.5

    @pytest.mark.parametrize(
        ("scores", "threshold", "hard"),
        [
            ([0.9, 0.8], 0.5, False),  # mean 0.85
            ([0.2, 0.4], 0.5, True),  # mean 0.3
            ([0.5], 0.5, False),  # mean == threshold is not hard (strict <)
            ([0.6, 0.2], 0.5, True),  # mean 0.4
            ([0.75, 0.25], 0.5, False),  # mean exactly 0.5 is not below 0.5
            ([0.95, 0.8], 0.9, True),  # mean 0.875
        ],
    )
    def test_rule(self, scores: list[float], threshold: float, hard: bool) -> None:
        boxes = [box(s) for s in scores]
        assert ref_threshold(boxes, threshold) is hard
        assert ThresholdFilter(threshold=threshold)(boxes) is hard
        assert ThresholdFilter(str(threshold))(np.array(boxes)) is hard

    def test_string_parameter_from_controller(self) -> None:
        rule = ThresholdFilter(threshold="0.9")
        assert rule.threshold == 0.9
        assert rule([box(0.85)]) is True

    def test_numpy_boxes(self) -> None:
        boxes = np.array([box(0.2), box(0.3)], dtype=np.float32)
        assert ThresholdFilter()(boxes) is True
        assert ThresholdFilter()(np.zeros((0, 6))) is False

    @pytest.mark.parametrize("empty", [None, [], (), np.zeros((0, 6))])
    def test_empty_is_not_hard(self, empty: Any) -> None:
        assert ThresholdFilter()(empty) is False
        assert ThresholdFilter(strict=True)(empty) is False

    def test_short_box_is_not_hard_or_strict_error(self) -> None:
        boxes = [box(0.1), [1, 2, 3, 0.1]]
        assert ThresholdFilter()(boxes) is False  # upstream: invalid input -> False
        with pytest.raises(ValueError, match=r"infer_result\[1\] has 4 values"):
            ThresholdFilter(strict=True)(boxes)

    def test_scores_are_not_range_checked(self) -> None:
        # upstream Threshold does not check [0, 1]; a mean of 0.45 is still below 0.5
        assert ThresholdFilter()([box(-0.1), box(1.0)]) is True

    @pytest.mark.parametrize(
        ("bad", "match"),
        [
            ([0.1, 0.2, 0.3], r"infer_result must be a list of boxes.*infer_result\[0\]"),
            ("boxes", "infer_result must be a list of boxes"),
            ({"score": 1}, "infer_result must be a list of boxes"),
            (3.5, "infer_result must be a list of boxes"),
            ([box("high")], r"infer_result\[0\]\[4\] \(the box score\) must be a number"),
        ],
    )
    def test_wrong_shape_raises(self, bad: Any, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            ThresholdFilter()(bad)

    @pytest.mark.parametrize("bad", [-0.1, 1.5, "abc", "", float("nan"), True, None])
    def test_bad_threshold(self, bad: Any) -> None:
        with pytest.raises(ValueError, match="threshold"):
            ThresholdFilter(threshold=bad)


# --------------------------------------------------------------------------- CrossEntropy


class TestCrossEntropy:
    def test_defaults(self) -> None:
        assert CrossEntropyFilter().threshold_cross_entropy == 0.5

    @pytest.mark.parametrize(
        ("probs", "threshold"),
        [
            ([0.5, 0.5], 0.5),  # maximal entropy: conf 0 -> hard
            ([0.9, 0.1], 0.5),  # conf = 1 + (0.9 ln .9 + .1 ln .1)/ln 2 = 0.531 -> not hard
            ([0.9, 0.1], 0.6),  # same conf, higher threshold -> hard
            ([0.7, 0.2, 0.1], 0.5),
            ([0.98, 0.01, 0.01], 0.5),
            ([0.25, 0.25, 0.25, 0.25], 0.01),
        ],
    )
    def test_rule_matches_reference(self, probs: list[float], threshold: float) -> None:
        expected = ref_cross_entropy(probs, threshold)
        assert CrossEntropyFilter(threshold_cross_entropy=threshold)(probs) is expected
        assert CrossEntropyFilter(str(threshold))(np.array(probs)) is expected

    def test_worked_example(self) -> None:
        probs = [0.9, 0.1]
        conf = 1 + (0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2)
        assert conf == pytest.approx(0.531004, abs=1e-6)
        assert CrossEntropyFilter(threshold_cross_entropy=0.53)(probs) is False
        assert CrossEntropyFilter(threshold_cross_entropy=0.54)(probs) is True

    def test_uniform_is_hard_and_one_hot_is_not(self) -> None:
        assert CrossEntropyFilter()([1 / 3, 1 / 3, 1 / 3]) is True
        # a zero probability contributes 0 ln 0 = 0 (upstream crashes on log(0)); conf = 1
        assert CrossEntropyFilter(threshold_cross_entropy=1.0)([1.0, 0.0, 0.0]) is False

    @pytest.mark.parametrize("empty", [None, [], (), np.array([])])
    def test_empty_is_not_hard(self, empty: Any) -> None:
        assert CrossEntropyFilter()(empty) is False

    @pytest.mark.parametrize("probs", [[1.2, -0.2], [0.5, float("nan")], [-0.0001, 1.0]])
    def test_out_of_range_probability(self, probs: list[float]) -> None:
        # upstream: values outside [0, 1] are "ignored" -> the sample is not hard
        assert CrossEntropyFilter()(probs) is False
        with pytest.raises(ValueError, match=r"infer_result\[\d\] \(a class probability\)"):
            CrossEntropyFilter(strict=True)(probs)

    @pytest.mark.parametrize(
        ("bad", "match"),
        [
            ([[0.5, 0.5]], r"1-D list of class probabilities.*shape \(1, 2\)"),
            (np.ones((2, 2)) / 2, r"shape \(2, 2\)"),
            ([0.5, "x"], "1-D list of class probabilities"),
            ([[0.5], [0.2, 0.3]], "1-D list of class probabilities"),
            ("0.5,0.5", "1-D list of class probabilities"),
            (0.5, r"shape \(\)"),
            ([1.0], "at least 2 class probabilities"),
        ],
    )
    def test_wrong_shape_raises(self, bad: Any, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            CrossEntropyFilter()(bad)

    @pytest.mark.parametrize("bad", [-0.5, 2, "high", float("inf")])
    def test_bad_threshold(self, bad: Any) -> None:
        with pytest.raises(ValueError, match="threshold_cross_entropy"):
            CrossEntropyFilter(threshold_cross_entropy=bad)


# --------------------------------------------------------------------------- IBT


class TestIBT:
    def test_defaults(self) -> None:
        rule = IBTFilter()
        assert (rule.threshold_img, rule.threshold_box) == (0.5, 0.5)

    @pytest.mark.parametrize(
        ("scores", "threshold_img", "threshold_box", "hard"),
        [
            ([0.9, 0.8, 0.7], 0.5, 0.5, False),  # coef 0/3
            ([0.2, 0.3, 0.9], 0.5, 0.5, True),  # coef 2/3 >= 0.5
            ([0.2, 0.9], 0.5, 0.5, True),  # coef 1/2 >= 0.5 (>=, inclusive)
            ([0.5, 0.9], 0.5, 0.5, True),  # score == threshold_box counts as low (<=)
            ([0.2, 0.9, 0.9, 0.9], 0.9, 0.5, True),  # coef 0.25 >= 1 - 0.9
            ([0.2, 0.9, 0.9, 0.9], 0.7, 0.5, False),  # coef 0.25 < 0.3
            ([0.6, 0.6], 0.5, 0.7, True),
            ([0.6, 0.6], 0.0, 0.5, False),  # threshold_img 0: needs every box low
            ([0.4, 0.4], 0.0, 0.5, True),
        ],
    )
    def test_rule(
        self, scores: list[float], threshold_img: float, threshold_box: float, hard: bool
    ) -> None:
        boxes = [box(s) for s in scores]
        assert ref_ibt(boxes, threshold_img, threshold_box) is hard
        assert IBTFilter(threshold_img=threshold_img, threshold_box=threshold_box)(boxes) is hard
        rule = IBTFilter(threshold_img=str(threshold_img), threshold_box=str(threshold_box))
        assert rule(np.array(boxes)) is hard

    def test_random_boxes_match_reference(self) -> None:
        rng = np.random.default_rng(7)
        for _ in range(200):
            n = int(rng.integers(1, 8))
            boxes = [box(float(s)) for s in rng.random(n)]
            ti, tb = float(rng.random()), float(rng.random())
            assert IBTFilter(ti, tb)(boxes) is ref_ibt(boxes, ti, tb)

    @pytest.mark.parametrize("empty", [None, [], np.zeros((0, 6))])
    def test_empty_is_not_hard(self, empty: Any) -> None:
        assert IBTFilter()(empty) is False

    @pytest.mark.parametrize("score", [1.5, -0.1, float("nan")])
    def test_out_of_range_score(self, score: float) -> None:
        boxes = [box(0.1), box(score)]
        assert IBTFilter()(boxes) is False
        with pytest.raises(ValueError, match=r"infer_result\[1\]\[4\] \(the box score\)"):
            IBTFilter(strict="true")(boxes)

    def test_short_box(self) -> None:
        assert IBTFilter()([[0, 0, 1, 1]]) is False
        with pytest.raises(ValueError, match=r"infer_result\[0\] has 4 values"):
            IBTFilter(strict=True)([[0, 0, 1, 1]])

    def test_wrong_shape_raises(self) -> None:
        with pytest.raises(ValueError, match="infer_result must be a list of boxes"):
            IBTFilter()([0.1, 0.9])

    @pytest.mark.parametrize(
        ("kwargs", "name"),
        [
            ({"threshold_img": -0.5}, "threshold_img"),
            ({"threshold_img": "1.01"}, "threshold_img"),
            ({"threshold_box": -1}, "threshold_box"),
            ({"threshold_box": "x"}, "threshold_box"),
        ],
    )
    def test_bad_thresholds(self, kwargs: dict[str, Any], name: str) -> None:
        with pytest.raises(ValueError, match=name):
            IBTFilter(**kwargs)


# --------------------------------------------------------------------------- Random / fixed


class TestRandom:
    def test_defaults(self) -> None:
        assert RandomFilter().random_ratio == 0.3

    def test_extremes(self) -> None:
        assert not any(RandomFilter(random_ratio=0)(box(0.1)) for _ in range(100))
        assert all(RandomFilter(random_ratio="1")() for _ in range(100))

    def test_uses_module_random_like_upstream(self) -> None:
        rule = RandomFilter(random_ratio=0.5)
        random.seed(1234)
        got = [rule() for _ in range(50)]
        random.seed(1234)
        expected = [random.uniform(0, 1) < 0.5 for _ in range(50)]
        assert got == expected

    def test_seeded_rate(self) -> None:
        rule = RandomFilter(random_ratio="0.3", seed="42")
        rate = sum(rule(None) for _ in range(10_000)) / 10_000
        assert rate == pytest.approx(0.3, abs=0.02)
        again = RandomFilter(random_ratio=0.3, seed=42)
        first = RandomFilter(random_ratio=0.3, seed=42)
        assert [again() for _ in range(20)] == [first() for _ in range(20)]

    @pytest.mark.parametrize(
        ("kwargs", "name"),
        [
            ({"random_ratio": -0.1}, "random_ratio"),
            ({"seed": "x"}, "seed"),
            ({"seed": 1.5}, "seed"),
        ],
    )
    def test_bad_parameters(self, kwargs: dict[str, Any], name: str) -> None:
        with pytest.raises(ValueError, match=name):
            RandomFilter(**kwargs)


def test_cloud_only_and_edge_only() -> None:
    assert CloudOnlyFilter()() is True
    assert CloudOnlyFilter()([box(0.99)], extra=1) is True
    assert EdgeOnlyFilter()() is False
    assert EdgeOnlyFilter()(np.zeros(3)) is False


# --------------------------------------------------------------------------- shared behaviour


def test_unknown_parameters_are_ignored_but_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        rule = IBTFilter(threshold_img="0.9", threshhold_box="0.1")
    assert rule.threshold_box == 0.5
    assert "threshhold_box" in caplog.text


def test_lenient_rejection_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    rule = CrossEntropyFilter()
    with caplog.at_level(logging.WARNING):
        assert rule([2.0, -1.0]) is False
        assert rule([2.0, -1.0]) is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "strict=True" in warnings[0].getMessage()


@pytest.mark.parametrize("bad", ["maybe", 2, None])
def test_bad_strict(bad: Any) -> None:
    with pytest.raises(ValueError, match="strict"):
        ThresholdFilter(strict=bad)


def test_base_filter_contract() -> None:
    assert BaseFilter.data_check("0.5") is True
    assert BaseFilter.data_check(1.5) is False
    with pytest.raises(NotImplementedError):
        BaseFilter()()


@pytest.mark.parametrize(
    ("alias", "params", "infer_result", "hard"),
    [
        ("Threshold", {"threshold": "0.9"}, [box(0.8)], True),
        ("CrossEntropy", {"threshold_cross_entropy": "0.5"}, [0.5, 0.5], True),
        ("IBT", {"threshold_img": "0.9", "threshold_box": "0.5"}, [box(0.9)], False),
        ("Random", {"random_ratio": "0"}, [box(0.1)], False),
        ("CloudOnly", {}, None, True),
        ("EdgeOnly", {}, None, False),
    ],
)
def test_upstream_style_lookup(
    alias: str, params: dict[str, str], infer_result: Any, hard: bool
) -> None:
    """What JointInference does: get_cls(HEM, method)(**param)(result)."""
    rule = ClassFactory.get_cls(ClassType.HEM, alias)(**params)
    assert rule(infer_result) is hard
