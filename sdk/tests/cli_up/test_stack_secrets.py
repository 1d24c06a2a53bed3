"""``sedna up --secrets-dir DIR``: the GlobalManager gets ``--secrets-dir DIR``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sedna.cli import up as up_module
from sedna.cli.main import app
from sedna.cli.stack import StackError, StackPlan, component_command, plan_stack


def test_only_the_gm_gets_the_secrets_dir(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    plan = plan_stack(tmp_path / "state", ["edge-1"], 0, secrets_dir=secrets)
    gm_cmd = component_command(plan, plan.gm)
    assert gm_cmd[gm_cmd.index("--secrets-dir") + 1] == str(secrets)
    assert "--secrets-dir" not in component_command(plan, plan.components[1])
    plain = plan_stack(tmp_path / "state", ["edge-1"], 0)
    assert "--secrets-dir" not in component_command(plain, plain.gm)


def test_up_passes_the_resolved_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[StackPlan] = []

    class FailingStack:
        running: dict[str, Any] = {}

        def __init__(self, plan: StackPlan, **_: Any) -> None:
            seen.append(plan)

        def start(self, **_: Any) -> None:
            raise StackError("not starting in a unit test")

    monkeypatch.setattr(up_module, "Stack", FailingStack)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app, ["up", "--data-dir", str(tmp_path / "state"), "--secrets-dir", "secrets"]
    )
    assert result.exit_code == 1, result.output
    assert seen[0].secrets_dir == secrets.resolve()


def test_up_rejects_a_missing_secrets_dir(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["up", "--data-dir", str(tmp_path), "--secrets-dir", str(tmp_path / "nope")],
        env={"COLUMNS": "300"},
    )
    assert result.exit_code == 2
    assert "--secrets-dir" in result.output
    assert "does not exist" in result.output
