"""A real Prometheus scrapes every service, and what it sees matches ``docs/metrics.md``.

The embedded stack (``sedna up``: a GM and two LCs), a knowledge-base server, an aggregator
and an inference server run as their console scripts on loopback. The test exercises what
creates labelled series (a Dataset counted on a node, one federated-learning round, one
ModelInfer), then starts Debian's ``prometheus`` with a 1 s scrape interval and checks,
through its HTTP API, that:

- every target is up;
- every documented metric has the documented type on every documented service (metadata),
  and, when the event that creates its series was exercised here (``Appears`` is ``start``
  or one of :data:`EXERCISED`), series with exactly the documented labels;
- every ``sedna_*`` metric a service exports is documented (docs cannot fall behind code);
- every query of the Grafana dashboards (``charts/sedna/dashboards``) is valid PromQL here,
  and the panels charting what the test did have data.

Metrics that appear only after an event this test does not cause (a reconcile error, a model
reload, a failed checkpoint, a joint-inference report) are checked through metadata only,
which Prometheus keeps for families without series. The worker SDK metrics live in worker
processes, not services: ``tests/observability/test_metrics_doc.py`` checks their table.

Without the ``prometheus`` binary the scrape test skips, unless ``SEDNA_REQUIRE_PROMETHEUS=1``
(CI), where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from observability.metrics_doc import EXERCISED_BY_SCRAPE_TEST, load
from observability.promql import expand

from sedna.cli.stack import wait_healthy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

SCRAPED = ("gm", "lc", "kb", "aggregator", "inference")
EXERCISED = EXERCISED_BY_SCRAPE_TEST
"""The ``Appears`` events this test causes before Prometheus scrapes."""
DOCUMENTED = load()
DASHBOARDS = Path(__file__).resolve().parents[2] / "charts" / "sedna" / "dashboards"
_LOOPBACK = "127.0.0.1"


# ---------------------------------------------------------------------------------- the stack


def _prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found:
        return found
    reason = "the prometheus binary is not installed (apt-get install prometheus)"
    if os.environ.get("SEDNA_REQUIRE_PROMETHEUS") == "1":
        pytest.fail(f"SEDNA_REQUIRE_PROMETHEUS=1 but {reason}")
    pytest.skip(reason)


class Processes:
    """Child processes of the test, each logging to a file; stopped in reverse order."""

    def __init__(self, tools: Any, log_dir: Path) -> None:
        self.tools = tools
        self.log_dir = log_dir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=self.tools.clean_env()
            )
        self.children.append((name, process))
        return process

    def service(self, name: str, script: str, *args: str) -> tuple[int, int]:
        """Start a service's console script on free ports; wait until it is healthy."""
        port, metrics_port = self.tools.free_port(), self.tools.free_port()
        process = self.start(
            name,
            [
                self.tools.script(script),
                "--host",
                _LOOPBACK,
                "--port",
                str(port),
                "--metrics-port",
                str(metrics_port),
                *args,
            ],
        )
        wait_healthy(f"{_LOOPBACK}:{port}", _deadline(60), lambda: process.poll() is None)
        return port, metrics_port

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop_all(self) -> None:
        for name, process in reversed(self.children):
            if process.poll() is None:
                # sedna up stops its GM and LCs on Ctrl-C, as a user would stop it.
                process.send_signal(signal.SIGINT if name == "up" else signal.SIGTERM)
        for _name, process in reversed(self.children):
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def _deadline(seconds: float) -> float:
    return time.monotonic() + seconds


def _sedna(tools: Any, port: int, *args: str) -> str:
    result = subprocess.run(
        [tools.script("sedna"), *args, "--server", f"{_LOOPBACK}:{port}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**tools.clean_env(), "COLUMNS": "200"},
        check=False,
    )
    assert result.returncode == 0, f"sedna {args}: {result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def _start_embedded_stack(procs: Processes, tmp_path: Path) -> dict[str, list[str]]:
    """``sedna up`` with two nodes and a counted Dataset; returns job -> metrics targets."""
    tools = procs.tools
    data_dir = tmp_path / ".sedna"
    port = tools.free_port()
    up = procs.start(
        "up",
        [
            tools.script("sedna"),
            "up",
            "--nodes",
            "cloud,edge-1",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
        ],
    )

    def nodes_connected() -> bool:
        assert up.poll() is None, f"sedna up exited early:\n{procs.log('up')}"
        try:
            table = _sedna(tools, port, "nodes")
        except AssertionError:
            return False
        rows = [line.split() for line in table.splitlines()[1:]]
        return sorted(row[0] for row in rows if row[1:2] == ["yes"]) == ["cloud", "edge-1"]

    tools.eventually(nodes_connected, 90, "both nodes connected")
    train = tmp_path / "train.txt"
    train.write_text("a.jpg 0\nb.jpg 1\nc.jpg 0\n")
    manifest = tmp_path / "dataset.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "sedna.io/v1alpha1",
                "kind": "Dataset",
                "metadata": {"name": "scraped"},
                "spec": {"url": str(train), "format": "txt", "nodeName": "edge-1"},
            }
        )
    )
    _sedna(tools, port, "apply", "-f", str(manifest))

    def counted() -> bool:
        data = json.loads(_sedna(tools, port, "get", "datasets", "scraped", "-o", "json"))
        return data.get("status", {}).get("numberOfSamples") == 3

    tools.eventually(counted, 60, "the dataset counted on edge-1")
    plan = json.loads((data_dir / "stack.json").read_text())["components"]
    targets: dict[str, list[str]] = {"gm": [], "lc": []}
    for component in plan:
        targets[component["role"]].append(f"{_LOOPBACK}:{component['metrics_port']}")
    return targets


def _one_fl_round(port: int) -> None:
    from sedna.service.aggregation_client import AggregationClient

    client = AggregationClient(_LOOPBACK, port, timeout=30)
    try:
        joined = client.join(
            "default/scraped", "trainer-1", 8, {"min_participants": 1, "exit_round": 1}
        )
        round_number = max(1, joined.current_round)
        weights = [np.ones((4, 2), np.float32), np.zeros(2, np.float32)]
        client.push(round_number, weights, 8, {"loss": 0.5})
        client.pull(round_number, timeout=60)
    finally:
        client.close()


def _one_model_infer(tmp_path: Path, procs: Processes) -> str:
    """Serve an ONNX model with ``sedna-inference``, infer once; returns the metrics target."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from support.model_reloads import scale_model

    from sedna.service.oip_client import InferenceClient

    model = tmp_path / "scale.onnx"
    model.write_bytes(scale_model(2.0))
    port, metrics_port = procs.service(
        "inference", "sedna-inference", "--model-name", "scale", "--model-path", str(model)
    )
    client = InferenceClient(_LOOPBACK, port, "scale", timeout=30)
    try:
        result = np.asarray(client.infer(np.ones((1, 4), np.float32)))
    finally:
        client.close()
    assert np.allclose(result, 2.0)
    return f"{_LOOPBACK}:{metrics_port}"


class PrometheusAPI:
    """The HTTP API of the Prometheus server the test started."""

    def __init__(self, address: str) -> None:
        self.base = f"http://{address}"

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        url = f"{self.base}{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 400: a bad query; the body says why
            body = json.loads(exc.read() or b"{}")
            raise AssertionError(f"{path} {params}: {exc.code} {body.get('error')}") from None
        assert body["status"] == "success", body
        return body["data"]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False


@pytest.fixture
def scraped_stack(tmp_path: Path, e2e_tools: Any) -> Iterator[tuple[PrometheusAPI, Processes]]:
    """Every service running and exercised, and a Prometheus that scraped each of them."""
    binary = _prometheus_binary()
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(e2e_tools, logs)
    try:
        targets = _start_embedded_stack(procs, tmp_path)
        _, kb_metrics = procs.service("kb", "sedna-kb")
        agg_port, agg_metrics = procs.service("aggregator", "sedna-aggregator")
        _one_fl_round(agg_port)
        targets["kb"] = [f"{_LOOPBACK}:{kb_metrics}"]
        targets["aggregator"] = [f"{_LOOPBACK}:{agg_metrics}"]
        targets["inference"] = [_one_model_infer(tmp_path, procs)]

        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": addresses}]}
                for job, addresses in sorted(targets.items())
            ],
        }
        config_path = tmp_path / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        address = f"{_LOOPBACK}:{e2e_tools.free_port()}"
        prometheus = procs.start(
            "prometheus",
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={address}",
            ],
        )
        api = PrometheusAPI(address)

        def ready() -> bool:
            assert prometheus.poll() is None, f"prometheus exited:\n{procs.log('prometheus')}"
            return api.ready()

        e2e_tools.eventually(ready, 60, "prometheus ready")
        expected = sum(len(addresses) for addresses in targets.values())

        def all_scraped() -> bool:
            active = api.get("/api/v1/targets", state="active")["activeTargets"]
            return len(active) == expected and all(t["health"] == "up" for t in active)

        e2e_tools.eventually(all_scraped, 60, f"all {expected} targets up")

        def scraped_thrice() -> bool:
            # rate() and increase() need two samples in their window; three leave a margin.
            counts = api.get("/api/v1/query", query="count_over_time(up[10m])")["result"]
            return len(counts) == expected and all(float(c["value"][1]) >= 3 for c in counts)

        e2e_tools.eventually(scraped_thrice, 60, "three scrapes of every target")
        yield api, procs
    finally:
        procs.stop_all()


def _metadata(api: PrometheusAPI, job: str) -> dict[str, set[str]]:
    """Family name -> types, as scraped from the job's targets."""
    families: dict[str, set[str]] = {}
    for entry in api.get("/api/v1/targets/metadata", match_target=f'{{job="{job}"}}'):
        families.setdefault(entry["metric"], set()).add(entry["type"])
    return families


def _series_labels(api: PrometheusAPI, job: str, name: str) -> list[frozenset[str]]:
    selector = f'{{__name__="{name}",job="{job}"}}'
    series = api.get("/api/v1/series", **{"match[]": selector})
    return [frozenset(s) - {"__name__", "job", "instance"} for s in series]


def test_prometheus_sees_every_documented_metric(
    scraped_stack: tuple[PrometheusAPI, Processes],
) -> None:
    api, _procs = scraped_stack
    problems: list[str] = []
    for job in SCRAPED:
        metadata = _metadata(api, job)
        assert metadata, f"no metadata scraped from {job}"
        documented = [row for row in DOCUMENTED if job in row.services]
        for row in documented:
            where = f"docs/metrics.md:{row.line} {row.name} on {job}"
            types = metadata.get(row.family)
            if types is None:
                problems.append(f"{where}: not exported")
                continue
            if types != {row.type}:
                problems.append(f"{where}: type {sorted(types)}, documented {row.type}")
            labels = _series_labels(api, job, row.series_name)
            if not labels and (row.appears == "start" or row.appears in EXERCISED):
                problems.append(f"{where}: no series although '{row.appears}' happened")
            for found in set(labels):
                if found != row.labels:
                    problems.append(
                        f"{where}: labels {sorted(found)}, documented {sorted(row.labels)}"
                    )
        known = {row.family for row in documented}
        undocumented = sorted(
            family for family in metadata if family.startswith("sedna_") and family not in known
        )
        if undocumented:
            problems.append(f"{job} exports undocumented metrics: {undocumented}")
    assert not problems, "\n".join(problems)

    # The feature metrics carry what the test did.
    def value(query: str) -> float:
        result = api.get("/api/v1/query", query=query)["result"]
        assert len(result) == 1, f"{query}: {result}"
        return float(result[0]["value"][1])

    assert value('sedna_lc_dataset_samples{namespace="default",dataset="scraped"}') == 3
    assert value("sum(sedna_lc_gm_connected)") == 2
    assert value("sedna_hub_connected_nodes") == 2
    assert value('sedna_aggregator_rounds_total{session="default/scraped"}') == 1
    assert value('sedna_aggregator_round_participants{session="default/scraped"}') == 1
    assert value('sedna_aggregator_bytes_received_total{session="default/scraped"}') == 40
    assert value('sedna_inference_requests_total{model="scale",status="ok"}') == 1
    assert value('sum(sedna_controller_reconcile_total{controller="dataset"})') >= 1
    assert value("sum(sedna_lc_report_delivery_lag_seconds_count)") >= 1

    # Every dashboard query is valid PromQL for this Prometheus, and the feature panels that
    # chart what the test did have data.
    empty = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = expand(target["expr"])
                result = api.get("/api/v1/query", query=expr)["result"]
                if not result:
                    empty.append(f"{path.stem}: {panel['title']}")
    for charted in (
        "control-plane: Dataset samples",
        "control-plane: Work queue depth",
        "federated-learning: Rounds aggregated",
        "joint-inference: Requests",
    ):
        assert charted not in empty, f"{charted} shows no data"
