"""BaseConfig / Context: upstream names and defaults, read from the environment at call time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sedna.common.config import BaseConfig, Context, load_parameters

ENV_DEFAULTS = {
    "DEVICE_CATEGORY": ("device_category", "CPU"),
    "BACKEND_TYPE": ("backend_type", "TENSORFLOW"),
    "LC_SERVER": ("lc_server", "http://127.0.0.1:9100"),
    "ORIGINAL_DATASET_URL": ("original_dataset_url", None),
    "TRAIN_DATASET_URL": ("train_dataset_url", None),
    "TEST_DATASET_URL": ("test_dataset_url", None),
    "DATA_PATH_PREFIX": ("data_path_prefix", "/home/data"),
    "NAMESPACE": ("namespace", ""),
    "WORKER_NAME": ("worker_name", ""),
    "SERVICE_NAME": ("service_name", ""),
    "JOB_NAME": ("job_name", "sedna"),
    "PRETRAINED_MODEL_URL": ("pretrained_model_url", "./"),
    "MODEL_URL": ("model_url", None),
    "MODEL_NAME": ("model_name", None),
    "LOG_LEVEL": ("log_level", "INFO"),
    "TRANSMITTER": ("transmitter", "ws"),
    "AGG_DATA_PATH": ("agg_data_path", "./"),
    "S3_ENDPOINT_URL": ("s3_endpoint_url", ""),
    "ACCESS_KEY_ID": ("access_key_id", ""),
    "SECRET_ACCESS_KEY": ("secret_access_key", ""),
    "PARAMETERS": ("parameters", None),
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for env in ENV_DEFAULTS:
        monkeypatch.delenv(env, raising=False)
    BaseConfig.reset()
    yield
    BaseConfig.reset()


def test_defaults_match_upstream() -> None:
    config = BaseConfig()
    for attr, default in ENV_DEFAULTS.values():
        assert getattr(BaseConfig, attr) == default, attr
        assert getattr(config, attr) == default, attr
    assert set(config.dict()) >= {attr for attr, _ in ENV_DEFAULTS.values()}


def test_values_are_read_at_access_time(monkeypatch: pytest.MonkeyPatch) -> None:
    config = BaseConfig()
    for env, (attr, _) in ENV_DEFAULTS.items():
        if env == "PARAMETERS":
            continue
        monkeypatch.setenv(env, f"value-of-{env}")
        assert getattr(BaseConfig, attr) == f"value-of-{env}"
        assert getattr(config, attr) == f"value-of-{env}"
    monkeypatch.setenv("NAMESPACE", "")
    assert BaseConfig.namespace == ""  # an empty variable stays empty, as upstream


def test_singleton() -> None:
    assert BaseConfig() is BaseConfig()


def test_overrides_win_until_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LC_SERVER", "http://lc:9100")
    BaseConfig.lc_server = "http://override:1"
    assert BaseConfig().lc_server == "http://override:1"
    BaseConfig().update(job_name="j", not_a_field="ignored")
    assert BaseConfig.job_name == "j"
    assert not hasattr(BaseConfig, "not_a_field")
    BaseConfig.from_json({"worker_name": "w", "custom": {"a": 1}})
    assert BaseConfig.worker_name == "w"
    assert BaseConfig.custom == {"a": 1}
    assert BaseConfig()["custom"] == {"a": 1}
    assert BaseConfig().to_json()["custom"] == {"a": 1}
    BaseConfig.reset()
    assert BaseConfig.lc_server == "http://lc:9100"
    assert BaseConfig.job_name == "sedna"
    assert not hasattr(BaseConfig, "custom")


def test_get_treats_empty_as_default(monkeypatch: pytest.MonkeyPatch) -> None:
    config = BaseConfig()
    assert config.get("model_url", "fallback") == "fallback"
    assert config.get("missing") == ""
    monkeypatch.setenv("MODEL_URL", "/models/m.pb")
    assert config.get("model_url") == "/models/m.pb"


def test_parameters_json_string_and_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PARAMETERS", json.dumps({"epochs": 3}))
    assert BaseConfig().parameter == {"epochs": 3}
    yml = tmp_path / "p.yaml"
    yml.write_text("lr: 0.1\nlayers: [1, 2]\n")
    monkeypatch.setenv("PARAMETERS", str(yml))
    assert BaseConfig().parameter == {"lr": 0.1, "layers": [1, 2]}
    js = tmp_path / "p.json"
    js.write_text('{"a": "b"}')
    assert load_parameters(str(js)) == {"a": "b"}
    py = tmp_path / "p.py"
    py.write_text("batch_size = 8\n_private = 1\n")
    assert load_parameters(str(py))["batch_size"] == 8


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", "/no/such/file.yaml"])
def test_bad_parameters_raise_naming_the_variable(raw: str) -> None:
    with pytest.raises(ValueError, match="PARAMETERS"):
        load_parameters(raw)


def test_context_get_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTICIPANTS_COUNT", "3")
    monkeypatch.setenv("model_threshold", "0.2")
    monkeypatch.setenv("EMPTY_ONE", "")
    assert Context.get_parameters("participants_count") == "3"  # upper-case fallback
    assert Context.get_parameters("model_threshold", 0.1) == "0.2"
    assert Context.get_parameters("EMPTY_ONE", "d") == "d"
    assert Context.get_parameters("NOT_SET_AT_ALL") is None
    monkeypatch.setenv("LC_PERIOD", "5")
    assert int(Context.get_parameters("LC_PERIOD", 30)) == 5  # set after import: seen


def test_context_get_algorithm_from_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEM_NAME", raising=False)
    assert Context.get_algorithm_from_api("HEM", threshold_img=0.9) == {}
    monkeypatch.setenv("HEM_NAME", "IBT")
    monkeypatch.setenv("HEM_PARAMETERS", '[{"key": "threshold_img", "value": "0.9"}]')
    assert Context.get_algorithm_from_api("HEM") == {
        "method": "IBT",
        "param": {"threshold_img": "0.9"},
    }
    assert Context.get_algorithm_from_api("HEM", threshold_box=0.3)["param"] == {
        "threshold_img": "0.9",
        "threshold_box": 0.3,
    }
    monkeypatch.setenv("HEM_PARAMETERS", "{bad")
    with pytest.raises(ValueError, match="HEM_PARAMETERS"):
        Context.get_algorithm_from_api("HEM")


def test_context_parameters_can_be_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Context, "parameters", {"UTD_NAME": "TaskAttrFilter"})
    assert Context.get_algorithm_from_api("UTD") == {"method": "TaskAttrFilter", "param": {}}
