"""Service entry points: flags generated from the settings, precedence, clear config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from sedna import __version__
from sedna.runtime import ServiceServer, ServiceSettings
from sedna.runtime.entrypoint import EXIT_BAD_CONFIG, build_parser, parse_settings, service_main


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SEDNA_DEMO_")
    verbose_errors: bool = False


def _never_setup(server: ServiceServer) -> None:  # pragma: no cover - must not run
    raise AssertionError("the server must not start")


def test_help_lists_every_non_secret_setting_with_its_env_var(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser(DemoSettings, "sedna-demo", "A demo service.").parse_args(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in DemoSettings.model_fields:
        flag = "--" + name.replace("_", "-")
        if name == "auth_tokens":
            # Tokens never come from flags: command lines are visible to every local user.
            assert f"{flag} " not in text
        else:
            assert flag in text, name
            assert f"SEDNA_DEMO_{name.upper()}" in text, name
    assert "Precedence: flags > environment variables" in text


class PercentSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SEDNA_PCT_")
    share: float = Field(0.5, description="Share of clients (50% by default, 'x%s' is literal).")
    pattern: str = Field("%d-%s", description="A default that contains percent signs.")


def test_help_shows_percent_signs_in_descriptions_and_defaults_literally(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser(PercentSettings, "sedna-pct", "A 100% demo.").parse_args(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(50% by default, 'x%s' is literal)" in text
    assert "default: %d-%s" in text


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        service_main(DemoSettings, _never_setup, prog="d", description="x", argv=["--version"]) == 0
    )
    assert __version__ in capsys.readouterr().out


def test_flag_beats_environment_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "demo.yaml"
    config.write_text("port: 7001\nmetrics_port: 7002\ndrain_seconds: 3\n")
    monkeypatch.setenv("SEDNA_DEMO_PORT", "7101")
    monkeypatch.setenv("SEDNA_DEMO_METRICS_PORT", "7102")
    settings, check_only = parse_settings(
        DemoSettings, ["--config", str(config), "--port", "7201"], "d", "x"
    )
    assert (settings.port, settings.metrics_port, settings.drain_seconds) == (7201, 7102, 3.0)
    assert check_only is False


def test_bool_settings_get_on_and_off_flags() -> None:
    on, _ = parse_settings(DemoSettings, ["--verbose-errors"], "d", "x")
    off, _ = parse_settings(DemoSettings, ["--no-verbose-errors"], "d", "x")
    assert (on.verbose_errors, off.verbose_errors) == (True, False)


def test_bad_value_names_field_and_flag_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = service_main(
        DemoSettings, _never_setup, prog="sedna-demo", description="x", argv=["--port", "70000"]
    )
    assert code == EXIT_BAD_CONFIG
    err = capsys.readouterr().err
    assert "sedna-demo: invalid configuration" in err
    assert "port (--port): Input should be less than or equal to 65535" in err
    assert "Traceback" not in err


def test_missing_config_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.yaml"
    code = service_main(
        DemoSettings, _never_setup, prog="d", description="x", argv=["--config", str(missing)]
    )
    assert code == EXIT_BAD_CONFIG
    assert str(missing) in capsys.readouterr().err


def test_unknown_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = service_main(DemoSettings, _never_setup, prog="d", description="x", argv=["--prot", "1"])
    assert code == EXIT_BAD_CONFIG
    assert "unrecognized arguments: --prot" in capsys.readouterr().err


def test_check_config_prints_settings_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SEDNA_DEMO_AUTH_TOKENS", "s3cret-token-value-0123456789")
    code = service_main(
        DemoSettings, _never_setup, prog="d", description="x", argv=["--check-config"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "s3cret-token-value" not in out
    values = json.loads(out)
    assert values["auth_tokens"] == ["**********"]
    assert values["port"] == 0
