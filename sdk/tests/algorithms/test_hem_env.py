"""Building the HEM rule from a job's config or from HEM_NAME / HEM_PARAMETERS."""

from __future__ import annotations

import json

import pytest

from sedna.algorithms.hard_example_mining import (
    CrossEntropyFilter,
    IBTFilter,
    ThresholdFilter,
    build_hem_filter,
    get_hem_algorithm_from_config,
)


def params(**values: str) -> str:
    return json.dumps([{"key": key, "value": value} for key, value in values.items()])


def test_from_env_parses_string_values_to_numbers() -> None:
    env = {"HEM_NAME": "IBT", "HEM_PARAMETERS": params(threshold_img="0.9", threshold_box="0.3")}
    rule = build_hem_filter(environ=env)
    assert isinstance(rule, IBTFilter)
    assert (rule.threshold_img, rule.threshold_box) == (0.9, 0.3)


def test_from_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEM_NAME", "Threshold")
    monkeypatch.setenv("HEM_PARAMETERS", params(threshold="0.9"))
    rule = build_hem_filter()
    assert isinstance(rule, ThresholdFilter)
    assert rule.threshold == 0.9
    assert get_hem_algorithm_from_config(threshold=0.7) == {
        "method": "Threshold",
        "param": {"threshold": 0.7},
    }


def test_no_hem_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEM_NAME", raising=False)
    assert build_hem_filter() is None
    assert build_hem_filter(environ={}) is None
    assert build_hem_filter({}) is None
    assert get_hem_algorithm_from_config() == {}


def test_from_job_config_like_joint_inference() -> None:
    rule = build_hem_filter({"method": "CrossEntropy", "param": {"threshold_cross_entropy": 0.4}})
    assert isinstance(rule, CrossEntropyFilter)
    assert rule.threshold_cross_entropy == 0.4
    # upstream defaults: method "IBT", param {}
    default = build_hem_filter({"param": {"threshold_img": "0.8"}})
    assert isinstance(default, IBTFilter)
    assert default.threshold_img == 0.8


def test_unknown_rule_names_variable_value_and_known_names() -> None:
    with pytest.raises(ValueError, match="HEM_NAME='Treshold'") as info:
        build_hem_filter(environ={"HEM_NAME": "Treshold"})
    assert "'Threshold'" in str(info.value)
    assert "'IBT'" in str(info.value)
    with pytest.raises(ValueError, match=r"hard_example_mining\['method'\]='nope'"):
        build_hem_filter({"method": "nope"})


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (params(threshold_img="high"), r"HEM_PARAMETERS.*threshold_img must be a number.*'high'"),
        (params(threshold_box="-0.2"), r"HEM_PARAMETERS.*threshold_box must be in \[0, 1\]"),
        ("threshold_img=0.9", "HEM_PARAMETERS must be a JSON list.*'threshold_img=0.9'"),
        ('[{"value": "0.9"}]', r"HEM_PARAMETERS\[0\]"),
    ],
)
def test_bad_parameters_name_variable_and_value(raw: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_hem_filter(environ={"HEM_NAME": "IBT", "HEM_PARAMETERS": raw})


def test_bad_job_config() -> None:
    with pytest.raises(ValueError, match=r"hard_example_mining\['param'\] must be a mapping"):
        build_hem_filter({"method": "IBT", "param": [("threshold_img", 0.9)]})
    with pytest.raises(ValueError, match=r"hard_example_mining\['param'\].*threshold"):
        build_hem_filter({"method": "Threshold", "param": {"threshold": 7}})
