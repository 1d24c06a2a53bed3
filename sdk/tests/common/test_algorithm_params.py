"""<ALGORITHM>_NAME / <ALGORITHM>_PARAMETERS parsing (upstream Context.get_algorithm_from_api)."""

from __future__ import annotations

import json

import pytest

from sedna.common.algorithm_params import get_algorithm_from_env, parse_algorithm_parameters


def test_parses_key_value_list_keeping_strings() -> None:
    raw = json.dumps(
        [{"key": "threshold_img", "value": "0.9"}, {"key": "threshold_box", "value": "0.3"}]
    )
    assert parse_algorithm_parameters(raw, variable="HEM_PARAMETERS") == {
        "threshold_img": "0.9",
        "threshold_box": "0.3",
    }


def test_missing_value_is_empty_string_and_last_duplicate_wins() -> None:
    raw = '[{"key": "a"}, {"key": "b", "value": "1"}, {"key": "b", "value": "2"}]'
    assert parse_algorithm_parameters(raw, variable="V") == {"a": "", "b": "2"}


@pytest.mark.parametrize("raw", [None, "", "   ", "[]"])
def test_no_parameters(raw: str | None) -> None:
    assert parse_algorithm_parameters(raw, variable="V") == {}


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("not json", "HEM_PARAMETERS must be a JSON list.*'not json'"),
        ('{"key": "a", "value": "1"}', "HEM_PARAMETERS must be a JSON list"),
        ('["a"]', r"HEM_PARAMETERS\[0\] must be an object"),
        (
            '[{"value": "1"}]',
            r"HEM_PARAMETERS\[0\] must be an object with a non-empty string",
        ),
        ('[{"key": ""}]', r"HEM_PARAMETERS\[0\]"),
        ('[{"key": "a"}, {"key": 3}]', r"HEM_PARAMETERS\[1\]"),
    ],
)
def test_malformed_parameters_name_variable_and_value(raw: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_algorithm_parameters(raw, variable="HEM_PARAMETERS")


def test_get_algorithm_from_env() -> None:
    env = {"HEM_NAME": "IBT", "HEM_PARAMETERS": '[{"key": "threshold_img", "value": "0.9"}]'}
    assert get_algorithm_from_env("HEM", env) == {
        "method": "IBT",
        "param": {"threshold_img": "0.9"},
    }
    # overrides win over the variables, as upstream's **param
    assert get_algorithm_from_env("HEM", env, threshold_img=0.7, threshold_box=0.2) == {
        "method": "IBT",
        "param": {"threshold_img": 0.7, "threshold_box": 0.2},
    }


def test_unset_or_empty_name_means_no_algorithm() -> None:
    assert get_algorithm_from_env("HEM", {}) == {}
    assert get_algorithm_from_env("HEM", {"HEM_NAME": ""}, threshold=1) == {}


def test_name_without_parameters() -> None:
    assert get_algorithm_from_env("UTD", {"UTD_NAME": "TaskAttr"}) == {
        "method": "TaskAttr",
        "param": {},
    }


def test_lower_case_prefix_falls_back_to_upper_case_variable() -> None:
    assert get_algorithm_from_env("hem", {"HEM_NAME": "Random"}) == {
        "method": "Random",
        "param": {},
    }


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEM_NAME", "CrossEntropy")
    monkeypatch.setenv("HEM_PARAMETERS", '[{"key": "threshold_cross_entropy", "value": "0.6"}]')
    assert get_algorithm_from_env("HEM") == {
        "method": "CrossEntropy",
        "param": {"threshold_cross_entropy": "0.6"},
    }


def test_malformed_env_names_variable() -> None:
    with pytest.raises(ValueError, match=r"HEM_PARAMETERS.*'oops'"):
        get_algorithm_from_env("HEM", {"HEM_NAME": "IBT", "HEM_PARAMETERS": "oops"})
