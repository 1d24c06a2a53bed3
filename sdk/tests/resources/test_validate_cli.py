"""The `validate` command, driven through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from sedna.cli.validate import validate_command

ROOT = Path(__file__).resolve().parents[3]
UPSTREAM = ROOT / "tests" / "fixtures" / "upstream_examples"
GOOD = UPSTREAM / "helmet-detection-joint-inference.yaml"
BROKEN = """\
apiVersion: sedna.io/v1alpha1
kind: JointInferenceService
metadata:
  name: broken
spec:
  edgeWorker:
    model: {name: little}
    hardExampleMining: {name: ""}
    template: {spec: {containers: [{name: edge}]}}
  cloudWorker:
    model: {name: big}
    template: {spec: {containers: [{name: cloud}]}}
    hpa: {minReplicas: 3, maxReplicas: 1}
"""


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    app.command("validate")(validate_command)

    @app.callback()
    def root() -> None:
        """Keep `validate` a subcommand, as on the real `sedna` app."""

    return app


@pytest.fixture
def runner() -> CliRunner:
    # A wide terminal, so that table cells do not wrap inside a field path.
    return CliRunner(env={"COLUMNS": "250", "NO_COLOR": "1"})


def test_valid_file_exits_0(app: typer.Typer, runner: CliRunner) -> None:
    result = runner.invoke(app, ["validate", "-f", str(GOOD)])
    assert result.exit_code == 0, result.output
    assert "JointInferenceService/helmet-detection-inference-example" in result.output
    assert "OK" in result.output
    assert "3 valid, 0 invalid, 0 skipped" in result.output


def test_broken_stdin_exits_1_and_names_the_fields(app: typer.Typer, runner: CliRunner) -> None:
    result = runner.invoke(app, ["validate", "-f", "-"], input=BROKEN)
    assert result.exit_code == 1, result.output
    assert "spec.edgeWorker.hardExampleMining.name: Required value" in result.output
    assert "spec.cloudWorker.hpa.minReplicas: minReplicas must be less than or equal" in (
        result.output
    )
    assert "(line 8)" in result.output
    assert "0 valid, 1 invalid, 0 skipped" in result.output


def test_several_filenames_and_a_directory(app: typer.Typer, runner: CliRunner) -> None:
    result = runner.invoke(app, ["validate", "-f", str(GOOD), "--filename", str(UPSTREAM)])
    # The upstream folder holds the three documents the docs get wrong.
    assert result.exit_code == 1
    assert "metadata.name" in result.output
    assert "skipped: v1 Secret is not a Sedna object" in result.output
    assert "warning: spec.transmitter: both s3 and ws are set" in result.output


def test_json_output(app: typer.Typer, runner: CliRunner) -> None:
    result = runner.invoke(app, ["validate", "-f", "-", "-o", "json"], input=BROKEN)
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False
    (document,) = report["documents"]
    assert document["kind"] == "JointInferenceService"
    assert {error["path"] for error in document["errors"]} == {
        "spec.edgeWorker.hardExampleMining.name",
        "spec.cloudWorker.hpa.minReplicas",
    }
    ok = runner.invoke(app, ["validate", "-f", str(GOOD), "--output", "JSON"])
    assert ok.exit_code == 0
    assert json.loads(ok.output)["valid"] == 3


def test_missing_file_and_bad_yaml(app: typer.Typer, runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", "-f", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "no such file or directory" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [unclosed\n", encoding="utf-8")
    result = runner.invoke(app, ["validate", "-f", str(bad)])
    assert result.exit_code == 1
    assert "invalid YAML" in result.output
    assert "Traceback" not in result.output


def test_usage_errors(app: typer.Typer, runner: CliRunner) -> None:
    assert runner.invoke(app, ["validate"]).exit_code == 2
    assert runner.invoke(app, ["validate", "-f", str(GOOD), "-o", "xml"]).exit_code == 2
