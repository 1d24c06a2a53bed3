"""sedna apply/get/describe/delete/nodes/logs against real loopback servers."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from sedna.cli.printing import human_duration, json_path_value
from sedna.resources.objects import ObjectKey, ResourceObject

REPO = Path(__file__).resolve().parents[3]
UPSTREAM = REPO / "examples" / "upstream"

DATASET = """\
apiVersion: sedna.io/v1alpha1
kind: Dataset
metadata:
  name: {name}
  namespace: {namespace}
spec:
  url: /data/train.txt
  format: txt
  nodeName: edge0
"""


def invoke(app: Any, cluster: Any, *args: str, input: str | None = None) -> Any:
    result = CliRunner().invoke(app, [*args, "--server", cluster.address], input=input)
    assert "Traceback" not in result.output
    return result


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_apply_upstream_examples_then_unchanged(app: Any, cluster: Any) -> None:
    result = invoke(app, cluster, "apply", "-f", str(UPSTREAM))
    assert result.exit_code == 0, result.output
    assert "dataset.sedna.io/dataset-examp created" in result.output
    assert "jointinferenceservice.sedna.io/helmet-detection-inference-example created" in (
        result.output
    )
    assert "skipped:" in result.output  # the Secret
    again = invoke(app, cluster, "apply", "-f", str(UPSTREAM / "crd-samples-dataset-model.yaml"))
    assert again.exit_code == 0, again.output
    assert "dataset.sedna.io/dataset-examp unchanged" in again.output
    assert "model.sedna.io/model-examp unchanged" in again.output


def test_apply_configured_dry_run_and_stdin(app: Any, cluster: Any, tmp_path: Path) -> None:
    text = DATASET.format(name="ds1", namespace="default")
    assert "created" in invoke(app, cluster, "apply", "-f", "-", input=text).output
    changed = text.replace("/data/train.txt", "/data/other.txt")
    result = invoke(app, cluster, "apply", "--dry-run", "-f", str(write(tmp_path, changed)))
    assert "dataset.sedna.io/ds1 configured (dry run)" in result.output
    got = invoke(app, cluster, "get", "dataset", "ds1", "-o", "json")
    assert json.loads(got.output)["spec"]["url"] == "/data/train.txt"
    result = invoke(app, cluster, "apply", "-f", str(write(tmp_path, changed)))
    assert "dataset.sedna.io/ds1 configured" in result.output


def test_apply_invalid_prints_field_paths(app: Any, cluster: Any, tmp_path: Path) -> None:
    bad = DATASET.format(name="ds1", namespace="default").replace("  url: /data/train.txt\n", "")
    bad += "  nodename: x\n"
    good = DATASET.format(name="ok", namespace="default")
    path = write(tmp_path, bad + "---\n" + good)
    result = invoke(app, cluster, "apply", "-f", str(path))
    assert result.exit_code == 1
    assert "spec.url: Required value" in result.output
    assert 'unknown field "nodename"' in result.output
    assert "(line " in result.output
    assert "dataset.sedna.io/ok created" in result.output  # valid documents still go


def test_get_table_printer_columns_and_formats(app: Any, cluster: Any) -> None:
    invoke(app, cluster, "apply", "-f", str(UPSTREAM / "crd-samples-dataset-model.yaml"))
    obj = cluster.run(cluster.store.get("Dataset", "default", "dataset-examp"))
    obj.status = {"phase": "Ready", "numberOfSamples": 120}
    cluster.run(cluster.store.update_status(obj))

    table = invoke(app, cluster, "get", "datasets")
    assert table.exit_code == 0, table.output
    header, row = table.output.splitlines()[:2]
    assert header.split() == ["NAME", "NODE", "FORMAT", "SAMPLES", "PHASE", "AGE"]
    cells = row.split()
    assert cells[:5] == ["dataset-examp", "edge0", "txt", "120", "Ready"]
    assert cells[5].endswith("s")
    wide = invoke(app, cluster, "get", "dataset", "-o", "wide")
    assert "URL" in wide.output
    assert "/code/data" in wide.output

    as_yaml = yaml.safe_load(
        invoke(app, cluster, "get", "dataset", "dataset-examp", "-o", "yaml").output
    )
    assert as_yaml["kind"] == "Dataset"
    assert as_yaml["status"]["phase"] == "Ready"
    listed = json.loads(invoke(app, cluster, "get", "models", "-o", "json").output)
    assert [item["metadata"]["name"] for item in listed["items"]] == ["model-examp"]
    names = invoke(app, cluster, "get", "model", "-o", "name").output.split()
    assert names == ["model.sedna.io/model-examp"]


def test_get_all_namespaces_and_selector(app: Any, cluster: Any, tmp_path: Path) -> None:
    text = DATASET.format(name="a", namespace="team-a") + "---\n"
    text += DATASET.format(name="b", namespace="team-b").replace(
        "  namespace: team-b\n", "  namespace: team-b\n  labels: {tier: gold}\n"
    )
    assert invoke(app, cluster, "apply", "-f", str(write(tmp_path, text))).exit_code == 0
    result = invoke(app, cluster, "get", "dataset", "-A")
    assert result.output.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert "team-a" in result.output
    assert "team-b" in result.output
    result = invoke(app, cluster, "get", "dataset", "-A", "-l", "tier=gold", "-o", "name")
    assert result.output.split() == ["dataset.sedna.io/b"]
    result = invoke(app, cluster, "get", "dataset", "-n", "team-a", "-o", "name")
    assert result.output.split() == ["dataset.sedna.io/a"]


def test_get_watch_prints_changes(app: Any, cluster: Any, tmp_path: Path) -> None:
    invoke(app, cluster, "apply", "-f", "-", input=DATASET.format(name="a", namespace="default"))

    def later() -> None:
        cluster.run(cluster.store.create(ResourceObject(kind="Dataset", name="b", spec={})))

    timer = threading.Timer(0.5, later)
    timer.start()
    result = invoke(app, cluster, "get", "dataset", "-w", "--watch-timeout", "2")
    timer.join()
    assert result.exit_code == 0, result.output
    assert "ADDED" in result.output
    assert any(line.split()[:2] == ["ADDED", "b"] for line in result.output.splitlines())


def test_describe(app: Any, cluster: Any) -> None:
    invoke(app, cluster, "apply", "-f", str(UPSTREAM / "crd-samples-dataset-model.yaml"))
    obj = cluster.run(cluster.store.get("Model", "default", "model-examp"))
    obj.status = {
        "phase": "Ready",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Loaded", "message": "ok"}],
    }
    cluster.run(cluster.store.update_status(obj))
    result = invoke(app, cluster, "describe", "model", "model-examp")
    assert result.exit_code == 0, result.output
    for text in ("Name:", "model-examp", "Kind:", "Model", "Spec:", "url: /model/frozen.pb"):
        assert text in result.output
    assert "Conditions:" in result.output
    assert "Loaded" in result.output
    assert "Events:" in result.output
    assert result.output.rstrip().endswith("<none>")


def test_describe_events(app: Any, cluster: Any) -> None:
    invoke(app, cluster, "apply", "-f", str(UPSTREAM / "crd-samples-dataset-model.yaml"))
    key = ObjectKey("Dataset", "default", "dataset-examp")
    for _ in range(3):
        cluster.recorder.record(
            key, "Warning", "NodeNotFound", "node edge0 not found", source="dataset"
        )
    cluster.recorder.record(key, "Normal", "Sent", "sent to edge0", source="dataset")
    result = invoke(app, cluster, "describe", "dataset", "dataset-examp")
    assert result.exit_code == 0, result.output
    events = result.output.split("Events:", 1)[1].splitlines()
    header = next(line for line in events if line.strip())
    assert header.split() == ["TYPE", "REASON", "AGE", "FROM", "MESSAGE"]
    rows = [line.split() for line in events if "dataset" in line.split()]
    assert rows[0][:2] == ["Warning", "NodeNotFound"]
    assert "(x3" in " ".join(rows[0])
    assert " ".join(rows[0]).endswith("dataset node edge0 not found")
    assert rows[1][:2] == ["Normal", "Sent"]
    assert "sent to edge0" in result.output


def test_delete_by_name_and_file(app: Any, cluster: Any) -> None:
    path = UPSTREAM / "crd-samples-dataset-model.yaml"
    invoke(app, cluster, "apply", "-f", str(path))
    result = invoke(app, cluster, "delete", "dataset", "dataset-examp")
    assert result.exit_code == 0, result.output
    assert 'dataset.sedna.io "dataset-examp" deleted' in result.output
    result = invoke(app, cluster, "get", "dataset", "dataset-examp")
    assert result.exit_code == 1
    assert "NOT_FOUND" in result.output
    result = invoke(app, cluster, "delete", "-f", str(path))
    assert result.exit_code == 1  # the dataset was gone already
    assert 'model.sedna.io "model-examp" deleted' in result.output
    assert "NOT_FOUND" in result.output


def test_errors(app: Any, cluster: Any) -> None:
    result = invoke(app, cluster, "get", "pods")
    assert result.exit_code == 1
    assert 'unknown Sedna kind "pods"' in result.output
    assert "JointInferenceService (ji)" in result.output
    result = invoke(app, cluster, "describe", "ji", "missing")
    assert result.exit_code == 1
    assert "NOT_FOUND" in result.output
    result = invoke(app, cluster, "delete", "dataset")
    assert result.exit_code == 2


def test_server_down(app: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = CliRunner().invoke(
        app, ["get", "dataset", "--server", f"127.0.0.1:{port}", "--timeout", "3"]
    )
    assert result.exit_code == 1
    assert f"cannot reach the GlobalManager at 127.0.0.1:{port}" in result.output
    assert "is `sedna up` running?" in result.output
    assert "Traceback" not in result.output


def test_nodes(app: Any, cluster: Any) -> None:
    result = invoke(app, cluster, "nodes")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "NAME",
        "CONNECTED",
        "LAST",
        "SEEN",
        "PENDING",
        "RESOURCES",
        "LABELS",
    ]
    assert lines[1].split()[:2] == ["edge0", "yes"]
    assert "zone=a" in lines[1]
    assert lines[2].split()[:3] == ["edge1", "no", "never"]
    data = json.loads(invoke(app, cluster, "nodes", "-o", "json").output)
    assert data[0]["pendingMessages"] == 2


def test_logs(app: Any, cluster: Any) -> None:
    result = invoke(app, cluster, "logs", "w1", "--node", "edge0")
    assert result.exit_code == 0, result.output
    assert result.output == "".join(f"line {i}\n" for i in range(1, 6))
    result = invoke(app, cluster, "logs", "w1", "--lc", cluster.lc.address, "--tail", "2")
    assert result.output == "line 4\nline 5\n"
    result = invoke(app, cluster, "logs", "nope", "--node", "edge0")
    assert result.exit_code == 1
    assert "NOT_FOUND: worker nope not found" in result.output
    result = invoke(app, cluster, "logs", "w1", "--node", "edge1")
    assert result.exit_code == 1
    assert "--lc HOST:PORT" in result.output


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5, "5s"),
        (119, "119s"),
        (200, "3m20s"),
        (180, "3m"),
        (3 * 3600, "3h"),
        (4 * 86400, "4d"),
        (30 * 86400, "30d"),
        (-5, "<invalid>"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_json_path_value() -> None:
    data = {"status": {"metrics": [{"key": "inferenceNumber", "value": "7"}], "phase": "Running"}}
    assert json_path_value(data, ".status.phase") == "Running"
    assert json_path_value(data, '.status.metrics[?(@.key=="inferenceNumber")].value') == "7"
    assert json_path_value(data, ".status.metrics[3].value") is None
    assert json_path_value(data, ".spec.none") is None
