"""Settings sources, precedence and error messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from sedna.runtime import (
    ConfigError,
    ServiceSettings,
    format_validation_error,
    load_settings,
)


class GMSettings(ServiceSettings):
    """A service's own settings: its env prefix and an extra field."""

    model_config = SettingsConfigDict(env_prefix="SEDNA_GM_")

    store_url: str = "sqlite:///gm.db"


def _yaml(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _error_lines(exc: ValidationError) -> list[str]:
    return format_validation_error(exc).splitlines()


def test_defaults() -> None:
    settings = load_settings(ServiceSettings)
    assert settings.host == "127.0.0.1"
    assert settings.port == 0
    assert settings.metrics_port == 0
    assert settings.max_receive_message_bytes == 64 * 1024 * 1024
    assert settings.max_send_message_bytes == 64 * 1024 * 1024
    assert settings.drain_seconds == 25
    assert settings.log_level == "INFO"
    assert settings.log_format == "json"
    assert settings.auth_tokens == []
    assert not settings.tls_enabled


def test_precedence_defaults_yaml_env_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _yaml(
        tmp_path,
        "port: 1111\nhost: 10.0.0.1\ndrain_seconds: 7\nlog_level: debug\nmetrics_port: 9100\n",
    )
    # YAML beats defaults.
    settings = load_settings(ServiceSettings, config_file=config)
    assert (settings.port, settings.host, settings.drain_seconds) == (1111, "10.0.0.1", 7)
    assert settings.log_level == "DEBUG"
    assert settings.log_format == "json"  # default: not in any source

    # Environment beats YAML.
    monkeypatch.setenv("SEDNA_PORT", "2222")
    monkeypatch.setenv("SEDNA_LOG_LEVEL", "warning")
    settings = load_settings(ServiceSettings, config_file=config)
    assert settings.port == 2222
    assert settings.host == "10.0.0.1"
    assert settings.log_level == "WARNING"

    # Explicit overrides (CLI flags) beat the environment; None means "flag not given".
    settings = load_settings(
        ServiceSettings, config_file=config, overrides={"port": 3333, "host": None}
    )
    assert settings.port == 3333
    assert settings.host == "10.0.0.1"
    assert settings.drain_seconds == 7
    assert settings.metrics_port == 9100


def test_config_file_from_env_and_service_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _yaml(tmp_path, "port: 5000\nstore_url: postgresql://db/gm\n")
    monkeypatch.setenv("SEDNA_CONFIG_FILE", str(config))
    monkeypatch.setenv("SEDNA_GM_HOST", "0.0.0.0")
    monkeypatch.setenv("SEDNA_PORT", "9999")  # another prefix: ignored by GMSettings
    settings = load_settings(GMSettings)
    assert settings.port == 5000
    assert settings.host == "0.0.0.0"
    assert settings.store_url == "postgresql://db/gm"
    # Plain construction honours the same sources.
    assert GMSettings().port == 5000


def test_explicit_config_file_beats_env_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEDNA_CONFIG_FILE", str(_yaml(tmp_path, "port: 1\n", "env.yaml")))
    explicit = _yaml(tmp_path, "port: 2\n", "explicit.yaml")
    assert load_settings(ServiceSettings, config_file=explicit).port == 2


def test_env_tokens_json_or_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEDNA_AUTH_TOKENS", "tok-aaaaaaaa, tok-bbbbbbbb")
    settings = load_settings(ServiceSettings)
    assert [t.get_secret_value() for t in settings.auth_tokens] == ["tok-aaaaaaaa", "tok-bbbbbbbb"]
    monkeypatch.setenv("SEDNA_AUTH_TOKENS", '["tok-cccccccc"]')
    assert load_settings(ServiceSettings).auth_tokens[0].get_secret_value() == "tok-cccccccc"
    # Secrets stay masked in reprs.
    assert "tok-cccccccc" not in repr(load_settings(ServiceSettings))


def test_env_none_disables_optional_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEDNA_METRICS_PORT", "none")
    monkeypatch.setenv("SEDNA_TLS_CERT_FILE", "")
    settings = load_settings(ServiceSettings)
    assert settings.metrics_port is None
    assert settings.tls_cert_file is None


def test_token_file_tokens_are_resolved(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("# comment\nfile-token-1234\n\n")
    settings = load_settings(
        ServiceSettings,
        overrides={"auth_tokens": ["inline-token-99"], "auth_token_file": token_file},
    )
    assert [t.get_secret_value() for t in settings.resolved_auth_tokens()] == [
        "inline-token-99",
        "file-token-1234",
    ]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"port": "abc"}, "port: Input should be a valid integer"),
        ({"port": 70000}, "port: Input should be less than or equal to 65535"),
        ({"log_format": "xml"}, "log_format: Input should be 'json' or 'console'"),
        ({"log_level": "loud"}, "log_level: Input should be 'DEBUG'"),
        (
            {"max_receive_message_bytes": 0},
            "max_receive_message_bytes: Input should be greater than 0",
        ),
        ({"auth_tokens": ["has space"]}, "auth_tokens: tokens must be printable ASCII"),
        ({"prot": 1}, "prot: Extra inputs are not permitted"),
        ({"port": 5000, "metrics_port": 5000}, "metrics_port: must differ from port (5000)"),
    ],
)
def test_bad_values_name_the_field(source: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError) as caught:
        load_settings(ServiceSettings, overrides=source)
    assert any(line.startswith(expected) for line in _error_lines(caught.value)), (
        format_validation_error(caught.value)
    )


def test_bad_env_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEDNA_DRAIN_SECONDS", "soon")
    with pytest.raises(ValidationError) as caught:
        load_settings(ServiceSettings)
    assert _error_lines(caught.value) == [
        "drain_seconds: Input should be a valid number, unable to parse string as a number"
    ]


def test_errors_never_echo_secrets() -> None:
    with pytest.raises(ValidationError) as caught:
        load_settings(ServiceSettings, overrides={"auth_tokens": ["super secret value"]})
    assert "super secret" not in format_validation_error(caught.value)
    assert "super secret" not in str(caught.value)


def test_cross_field_rules(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    cases = [
        ({"tls_cert_file": cert}, "tls_key_file: required when tls_cert_file is set"),
        ({"tls_key_file": key}, "tls_key_file: tls_cert_file must be set too"),
        ({"tls_client_ca_file": cert}, "tls_client_ca_file: mutual TLS needs a server certificate"),
        (
            {"tls_cert_file": tmp_path / "missing.pem", "tls_key_file": key},
            "tls_cert_file: file not found",
        ),
        ({"tls_cert_file": tmp_path, "tls_key_file": key}, "tls_cert_file: not a regular file"),
        ({"auth_token_file": tmp_path / "nope"}, "auth_token_file: file not found"),
    ]
    for overrides, expected in cases:
        with pytest.raises(ValidationError) as caught:
            load_settings(ServiceSettings, overrides=overrides)
        lines = _error_lines(caught.value)
        assert any(line.startswith(expected) for line in lines), (overrides, lines)
    settings = load_settings(
        ServiceSettings,
        overrides={"tls_cert_file": cert, "tls_key_file": key, "tls_client_ca_file": cert},
    )
    assert settings.tls_enabled
    assert settings.mtls_enabled


def test_bad_token_file_line_is_reported_without_the_token(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("good-token-1234\nbad token with spaces\n")
    with pytest.raises(ValidationError) as caught:
        load_settings(ServiceSettings, overrides={"auth_token_file": token_file})
    text = format_validation_error(caught.value)
    assert text.startswith("auth_token_file: ")
    assert "line 2" in text
    assert "bad token" not in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("port: [1, 2", "not valid YAML"),
        ("- 1\n- 2\n", "must hold a mapping"),
    ],
)
def test_bad_yaml_file_is_a_config_error(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(ServiceSettings, config_file=_yaml(tmp_path, content))


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match=r"config file not found: .*absent\.yaml"):
        load_settings(ServiceSettings, config_file=missing)


def test_empty_yaml_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(ServiceSettings, config_file=_yaml(tmp_path, "")).port == 0
