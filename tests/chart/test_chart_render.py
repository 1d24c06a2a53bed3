"""The chart lints clean in strict mode, renders with the defaults and with every option, and
every rendered object validates against the Kubernetes 1.30 schemas (and the newest shipped).

Rendering and linting go through the real Helm library (helm-python-sdk); validation through
kubernetes-validate's strict schemas (unknown fields are errors).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from chart.helm_chart import (
    CHART,
    NAMESPACE,
    RELEASE,
    VALUES_FILES,
    load_values,
    load_yaml_all,
    manifests,
    pod_specs,
    render_chart,
    source,
    strip_source,
)
from pydantic import ValidationError

from sedna.runtime import load_settings
from sedna_gm.settings import GMSettings
from sedna_kb.settings import KBSettings
from sedna_lc.settings import LCSettings

KUBE_VERSIONS = sorted(
    {"1.30", kubernetes_validate.utils.major_minor(kubernetes_validate.utils.latest_version())},
    key=lambda v: tuple(int(p) for p in v.split(".")),
)
# Kinds whose schema kubernetes-validate does not ship (CRD-defined): checked by hand below.
NO_SCHEMA = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} rendered"
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env") or []}


# ----------------------------------------------------------------------------------- lint


@pytest.mark.parametrize("values_name", list(VALUES_FILES))
def test_strict_lint_is_clean(values_name: str) -> None:
    report = helm.lint(
        str(CHART),
        load_values(values_name),
        strict=True,
        namespace=NAMESPACE,
        kube_version="v1.30.0",
    )
    # Severity 1 is INFO ("icon is recommended"); strict mode fails on warnings (2) and up.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [], report["errors"]
    assert problems == [], problems
    assert report["total_charts_linted"] == 1


def test_strict_lint_reports_a_broken_value() -> None:
    """The lint really runs the schema: a wrong type is an error, not a pass."""
    report = helm.lint(str(CHART), {"gm": {"grpcPort": "nine thousand"}}, strict=True)
    assert report["errors"], report
    assert any("grpcPort" in e for e in report["errors"]), report["errors"]


# --------------------------------------------------------------------------- render + validate


@pytest.mark.parametrize("values_name", list(VALUES_FILES))
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_rendered_object_validates(
    rendered_sets: dict[str, list[dict[str, Any]]], values_name: str, kube_version: str
) -> None:
    objects = rendered_sets[values_name]
    assert objects, "nothing rendered"
    failures = []
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in NO_SCHEMA:
            continue
        try:
            kubernetes_validate.validate(strip_source(obj), kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            failures.append(f"{source(obj)}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            failures.append(f"{source(obj)}: no {kube_version} schema for {obj['apiVersion']}")
    assert failures == []


def test_defaults_render_the_components(rendered_sets: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered_sets["defaults"]
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for expected in [
        ("Deployment", "sedna-gm"),
        ("Service", "sedna-gm"),
        ("ConfigMap", "sedna-gm"),
        ("PersistentVolumeClaim", "sedna-gm"),
        ("DaemonSet", "sedna-lc"),
        ("Service", "sedna-lc"),
        ("Deployment", "sedna-kb"),
        ("Service", "sedna-kb"),
        ("PersistentVolumeClaim", "sedna-kb"),
        ("ServiceAccount", "sedna-gm"),
        ("ClusterRole", "sedna-gm"),
        ("ClusterRoleBinding", "sedna-gm"),
    ]:
        assert expected in kinds
    # Options that are off by default render nothing.
    for kind in ("ServiceMonitor", "NetworkPolicy", "CustomResourceDefinition", "Secret"):
        assert by_kind(objects, kind) == [], kind
    names = [o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"]
    assert not [n for n in names if "dashboard" in n]
    for obj in objects:
        if obj["metadata"].get("namespace") is not None:
            assert obj["metadata"]["namespace"] == NAMESPACE, source(obj)


def test_images_follow_the_registry_prefix_and_app_version(
    rendered_sets: dict[str, list[dict[str, Any]]],
) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    for _obj, spec in pod_specs(rendered_sets["defaults"]):
        for c in spec["containers"]:
            assert re.fullmatch(rf"ghcr\.io/sedna-ai/sedna-(gm|lc|kb):{app_version}", c["image"])
    for _obj, spec in pod_specs(rendered_sets["all-options"]):
        for c in spec["containers"]:
            assert c["image"].startswith("registry.example.com/sedna-ai/sedna-"), c["image"]
            assert c["image"].endswith(":0.1.0-test")
            assert c["imagePullPolicy"] == "Always"
        assert spec["imagePullSecrets"] == [{"name": "regcred"}]


def test_probes_use_grpc_health_and_tcp_under_tls(
    rendered_sets: dict[str, list[dict[str, Any]]],
) -> None:
    for values_name, kind in [("defaults", "grpc"), ("all-options", "tcpSocket")]:
        for obj, spec in pod_specs(rendered_sets[values_name]):
            container = spec["containers"][0]
            grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
            for probe in ("livenessProbe", "readinessProbe"):
                assert container[probe][kind]["port"] == grpc_port, source(obj)


# ---------------------------------------------------------------------- configuration files


SETTINGS = {"gm": GMSettings, "lc": LCSettings, "kb": KBSettings}


@pytest.mark.parametrize("values_name", list(VALUES_FILES))
def test_config_files_are_accepted_by_the_services(
    rendered_sets: dict[str, list[dict[str, Any]]],
    values_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each ConfigMap's config.yaml loads as the service loads it (``load_settings``, what
    ``--config FILE --check-config`` runs): every key is a real setting (unknown keys are
    refused) with a valid value."""
    for name in list(os.environ):
        if name.startswith("SEDNA_"):
            monkeypatch.delenv(name)
    # What the pod's environment adds: the node name (a fieldRef).
    monkeypatch.setenv("SEDNA_LC_NODE_NAME", "edge-1")
    checked = set()
    for cm in by_kind(rendered_sets[values_name], "ConfigMap"):
        if "config.yaml" not in cm["data"]:
            continue
        component = cm["metadata"]["labels"]["app.kubernetes.io/component"]
        settings = yaml.safe_load(cm["data"]["config.yaml"])
        # Mounted files (TLS, tokens) exist in the pod; stand-ins here.
        for name in ("tls_cert_file", "tls_key_file", "gm_tls_ca_file", "auth_token_file"):
            if name in settings:
                fake = tmp_path / f"{component}-{Path(settings[name]).name}"
                fake.write_text("token-1\n")
                settings[name] = str(fake)
        path = tmp_path / f"{component}.yaml"
        path.write_text(yaml.safe_dump(settings))
        try:
            effective = load_settings(SETTINGS[component], path)
        except ValidationError as exc:
            pytest.fail(f"{values_name}: {component} refuses its config file: {exc}")
        assert effective.host == "0.0.0.0"  # reachable by probes and Services
        assert effective.metrics_host == "0.0.0.0"
        checked.add(component)
    assert checked == {"gm", "lc", "kb"}


def test_gm_config_runs_kubernetes_mode(rendered_sets: dict[str, list[dict[str, Any]]]) -> None:
    cm = named(rendered_sets["defaults"], "ConfigMap", "sedna-gm")
    config = yaml.safe_load(cm["data"]["config.yaml"])
    assert config["store_url"] == "kubernetes"
    assert config["runtime"] == "kubernetes"
    assert config["in_cluster"] is True
    # The hub state lives on the mounted volume: the root filesystem is read-only.
    assert config["hub_state_url"] == "sqlite:////var/lib/sedna-gm/hub.db"
    assert config["kb_server"] == f"http://sedna-kb.{NAMESPACE}.svc:9020"
    deployment = named(rendered_sets["defaults"], "Deployment", "sedna-gm")
    mounts = {
        m["mountPath"]
        for m in deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert "/var/lib/sedna-gm" in mounts
    lc = yaml.safe_load(
        named(rendered_sets["defaults"], "ConfigMap", "sedna-lc")["data"]["config.yaml"]
    )
    assert lc["gm_address"] == f"sedna-gm.{NAMESPACE}.svc:9000"
    assert lc["http_port"] == 9100
    assert config["lc_server"] == "http://localhost:9100"


def test_user_config_overrides_the_charts(rendered_sets: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered_sets["all-options"]
    gm = yaml.safe_load(named(objects, "ConfigMap", "sedna-gm")["data"]["config.yaml"])
    assert gm["drain_seconds"] == 10
    assert gm["max_concurrent_rpcs"] == 1000
    assert gm["namespace"] == "sedna-jobs"
    assert gm["log_level"] == "DEBUG"
    assert gm["log_format"] == "console"
    assert "hub_state_url" not in gm  # PostgreSQL: from the environment (it holds a password)
    lc = yaml.safe_load(named(objects, "ConfigMap", "sedna-lc")["data"]["config.yaml"])
    assert lc["dataset_poll_seconds"] == 3  # lc.config wins over lc.datasetPollSeconds
    assert lc["gm_address"] == "sedna.example.com:30900"
    assert lc["http_host"] == "0.0.0.0"
    assert lc["gm_tls_ca_file"] == "/etc/sedna/tls/ca.crt"


# ------------------------------------------------------------------------- connections


def test_external_connections_come_from_secrets(
    rendered_sets: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered_sets["all-options"]
    gm = named(objects, "Deployment", "sedna-gm")["spec"]["template"]["spec"]["containers"][0]
    env = env_of(gm)
    assert env["SEDNA_PG_PASSWORD"] == {
        "secretKeyRef": {"name": "sedna-postgresql", "key": "password"}
    }
    assert env["SEDNA_GM_HUB_STATE_URL"] == (
        "postgresql://sedna:$(SEDNA_PG_PASSWORD)@postgres.example.com:5433/sedna?sslmode=require"
    )
    assert env["REDIS_URL"] == "rediss://redis.example.com:6380/2"
    assert env["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "sedna-redis", "key": "password"}}
    assert env["S3_ENDPOINT_URL"] == "http://minio.example.com:9000"
    assert env["ACCESS_KEY_ID"] == {
        "secretKeyRef": {"name": "sedna-s3-keys", "key": "ACCESS_KEY_ID"}
    }
    # $(VAR) references resolve only to variables defined earlier in the list.
    names = [e["name"] for e in gm["env"]]
    assert names.index("SEDNA_PG_PASSWORD") < names.index("SEDNA_GM_HUB_STATE_URL")
    kb = named(objects, "Deployment", "sedna-kb")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(kb)["SEDNA_KB_DATABASE_URL"] == env["SEDNA_GM_HUB_STATE_URL"]
    # No secret value in any ConfigMap or in plain env values.
    for obj in objects:
        text = yaml.safe_dump(obj) if obj["kind"] != "Secret" else ""
        for secret in ("pg-secret", "redis-secret", "minio-secret", "token-of-edge-1"):
            assert secret not in text, f"{secret} in {source(obj)}"
    credential = named(objects, "Secret", "sedna-s3-credentials")
    assert credential["metadata"]["annotations"]["s3-endpoint"] == "minio.example.com:9000"
    assert credential["metadata"]["annotations"]["s3-usehttps"] == "0"
    assert set(credential["data"]) == {"ACCESS_KEY_ID", "SECRET_ACCESS_KEY"}


def test_existing_secrets_are_referenced_not_created(
    rendered_sets: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered_sets["existing-secrets"]
    assert by_kind(objects, "Secret") == []
    gm = named(objects, "Deployment", "sedna-gm")["spec"]["template"]["spec"]
    env = env_of(gm["containers"][0])
    assert env["SEDNA_GM_HUB_STATE_URL"] == {
        "secretKeyRef": {"name": "sedna-postgresql", "key": "url"}
    }
    assert env["REDIS_PASSWORD"] == {
        "secretKeyRef": {"name": "sedna-redis", "key": "redis-password"}
    }
    assert env["S3_ENDPOINT_URL"] == "https://s3.example.com"
    volumes = {v["name"]: v for v in gm["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "sedna-gm-tls"
    assert volumes["api-tokens"]["secret"]["secretName"] == "sedna-api-tokens"
    assert volumes["node-tokens"]["secret"]["secretName"] == "sedna-node-tokens"
    assert volumes["state"] == {"name": "state", "emptyDir": {}}
    lcs = by_kind(objects, "DaemonSet")
    refs = sorted(
        env_of(d["spec"]["template"]["spec"]["containers"][0])["SEDNA_LC_GM_TOKEN"]["secretKeyRef"][
            "name"
        ]
        for d in lcs
    )
    assert refs == ["sedna-node-token-edge-1", "sedna-node-token-edge-2"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"gm": {"hubState": {"type": "postgresql"}}}, "needs externalPostgresql.host"),
        ({"externalS3": {"enabled": True, "endpoint": "s3:9000"}}, "accessKeyId"),
        ({"externalS3": {"enabled": True}}, "needs externalS3.endpoint"),
        ({"tls": {"enabled": True}}, "tls.existingSecret or all of"),
        ({"nodeTokens": {"enabled": True}}, "nodeTokens.tokens"),
        ({"gm": {"apiTokens": {"enabled": True}}}, "gm.apiTokens.tokens"),
        ({"externalRedis": {"enabled": True}}, "needs externalRedis.host"),
    ],
)
def test_incomplete_options_fail_with_the_value_to_set(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmError) as err:
        render_chart(CHART, values)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"logLevel": "LOUD"}, "/logLevel"),
        ({"gm": {"grpcPort": 70000}}, "/gm/grpcPort"),
        ({"gm": {"replica": 2}}, "/gm"),
        ({"lc": {"gmAddress": "no-port"}}, "/lc/gmAddress"),
        ({"kb": {"database": {"type": "mysql"}}}, "/kb/database/type"),
        ({"nodeTokens": {"tokens": {"edge-1": 5}}}, "/nodeTokens/tokens/edge-1"),
    ],
)
def test_schema_names_the_bad_value(values: dict[str, Any], where: str) -> None:
    chart = helm.Chart.load(str(CHART))
    try:
        with pytest.raises(helm.HelmValuesError) as err:
            chart.validate_schema(values)
    finally:
        chart.close()
    assert where in str(err.value)


# ------------------------------------------------------------------------- node tokens, LC


def test_node_tokens_give_each_node_its_own_daemonset_and_secret(
    rendered_sets: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered_sets["all-options"]
    sets = by_kind(objects, "DaemonSet")
    assert len(sets) == 2
    pinned = {}
    for ds in sets:
        spec = ds["spec"]["template"]["spec"]
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ]
        # The user's two terms (ORed) each get the node pin ANDed in.
        assert len(terms) == 2
        nodes = {f["values"][0] for t in terms for f in t["matchFields"]}
        assert len(nodes) == 1
        node = nodes.pop()
        secret = env_of(spec["containers"][0])["SEDNA_LC_GM_TOKEN"]["secretKeyRef"]["name"]
        pinned[node] = secret
        # Selectors of the sets must not overlap (each DaemonSet owns only its pods).
        assert ds["spec"]["selector"]["matchLabels"]["sedna.io/node-set"]
    assert set(pinned) == {"edge-1", "edge-2.example.com"}
    secrets = {s["metadata"]["name"]: s for s in by_kind(objects, "Secret")}
    for node, name in pinned.items():
        assert secrets[name]["metadata"]["annotations"]["sedna.io/node"] == node
        assert set(secrets[name]["data"]) == {"token"}
    gm_tokens = secrets["sedna-node-tokens"]["data"]["node-tokens.yaml"]
    import base64

    mapping = yaml.safe_load(base64.b64decode(gm_tokens))
    assert mapping == {"edge-1": "token-of-edge-1", "edge-2.example.com": "token-of-edge-2"}
    selectors = [tuple(sorted(d["spec"]["selector"]["matchLabels"].items())) for d in sets]
    assert len(set(selectors)) == 2


def test_lc_runs_on_edge_nodes_with_host_network_and_state_on_the_host(
    rendered_sets: dict[str, list[dict[str, Any]]],
) -> None:
    ds = named(rendered_sets["defaults"], "DaemonSet", "sedna-lc")
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert {
        "key": "node-role.kubernetes.io/edge",
        "operator": "Exists",
        "effect": "NoSchedule",
    } in (spec["tolerations"])
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["state"]["hostPath"] == {
        "path": "/var/lib/sedna/lc",
        "type": "DirectoryOrCreate",
    }
    assert spec["automountServiceAccountToken"] is False
    env = env_of(spec["containers"][0])
    assert env["SEDNA_LC_NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    off = by_kind(rendered_sets["all-options"], "DaemonSet")[0]["spec"]["template"]["spec"]
    assert "hostNetwork" not in off


# ---------------------------------------------------------------------- monitoring, policies


def test_service_monitors_scrape_a_metrics_port_of_each_service(
    rendered_sets: dict[str, list[dict[str, Any]]],
) -> None:
    """kubernetes-validate ships no ServiceMonitor schema: check its shape and that it selects
    a Service with the port it names."""
    objects = rendered_sets["all-options"]
    monitors = by_kind(objects, "ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {"sedna-gm", "sedna-lc", "sedna-kb"}
    services = by_kind(objects, "Service")
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["namespace"] == "monitoring"
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        spec = monitor["spec"]
        assert set(spec) == {"namespaceSelector", "selector", "endpoints"}
        assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        match = spec["selector"]["matchLabels"]
        selected = [
            s for s in services if match.items() <= (s["metadata"].get("labels") or {}).items()
        ]
        assert len(selected) == 1, source(monitor)
        ports = {p["name"] for p in selected[0]["spec"]["ports"]}
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
            assert endpoint["port"] in ports
            assert re.fullmatch(r"[0-9]+(ms|s|m|h)", endpoint["interval"])


def test_network_policies_admit_the_service_ports(
    rendered_sets: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered_sets["all-options"]
    policies = {p["metadata"]["name"]: p for p in by_kind(objects, "NetworkPolicy")}
    assert set(policies) == {"sedna-gm", "sedna-kb"}
    gm = policies["sedna-gm"]["spec"]
    assert gm["policyTypes"] == ["Ingress"]
    assert gm["ingress"][0]["from"] == [{"ipBlock": {"cidr": "10.0.0.0/8"}}]
    for name, policy in policies.items():
        pod_ports = {
            p["name"]
            for p in named(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][
                0
            ]["ports"]
        }
        for rule in policy["spec"]["ingress"]:
            assert {p["port"] for p in rule["ports"]} <= pod_ports


def test_dashboards_ship_as_sidecar_configmaps(tmp_path: Path) -> None:
    """Every dashboards/*.json becomes one labelled ConfigMap (on a copy of the chart with a
    dashboard of its own, so the test does not depend on which dashboards exist)."""
    chart = tmp_path / "sedna"
    shutil.copytree(CHART, chart)
    (chart / "dashboards").mkdir(exist_ok=True)
    (chart / "dashboards" / "test_board.json").write_text('{"title": "Test", "panels": []}\n')
    values = {"dashboards": {"enabled": True, "annotations": {"grafana_folder": "Sedna"}}}
    objects = manifests(render_chart(chart, values))
    boards = {
        o["metadata"]["name"]: o
        for o in by_kind(objects, "ConfigMap")
        if "dashboard" in o["metadata"]["name"]
    }
    expected = sorted(p.name for p in (chart / "dashboards").glob("*.json"))
    assert sorted(k for b in boards.values() for k in b["data"]) == expected
    board = boards["sedna-dashboard-test-board"]
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board["metadata"]["annotations"]["grafana_folder"] == "Sedna"
    assert yaml.safe_load(board["data"]["test_board.json"]) == {"title": "Test", "panels": []}
    for obj in boards.values():
        kubernetes_validate.validate(strip_source(obj), "1.30", strict=True)
    off = manifests(render_chart(chart, {}))
    assert not [o for o in off if "dashboard" in o["metadata"]["name"]]


# ------------------------------------------------------------------------------ NOTES, README


def test_notes_tell_how_to_check_the_install() -> None:
    notes = render_chart(CHART, {})[f"{RELEASE}/templates/NOTES.txt"]
    for command in (
        "kubectl get crd -l app.kubernetes.io/part-of=sedna",
        f"kubectl -n {NAMESPACE} rollout status deployment/sedna-gm",
        "app.kubernetes.io/component=lc",
        "sedna nodes --server",
        f"kubectl -n {NAMESPACE} rollout status deployment/sedna-kb",
        "docs/kubernetes.md",
    ):
        assert command in notes
    elected = render_chart(CHART, {"gm": {"replicas": 2}})[f"{RELEASE}/templates/NOTES.txt"]
    assert "Leader election is on" in elected
    assert "no leader election" not in elected
    warned = render_chart(CHART, {"gm": {"replicas": 2, "leaderElection": {"enabled": False}}})[
        f"{RELEASE}/templates/NOTES.txt"
    ]
    assert "no leader election" in warned


def _leaves(values: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the documented values: leaves, and maps/lists given as a whole."""
    if isinstance(values, dict) and values and prefix not in _WHOLE:
        return [p for k, v in values.items() for p in _leaves(v, f"{prefix}.{k}".lstrip("."))]
    return [prefix]


# Values documented as one entry (their content is Kubernetes' own or free-form).
_WHOLE = {
    "podSecurityContext",
    "containerSecurityContext",
    *(
        f"{c}.{k}"
        for c in ("gm", "lc", "kb")
        for k in ("resources", "affinity", "livenessProbe", "readinessProbe", "strategy")
    ),
    "lc.updateStrategy",
}


def test_readme_documents_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    assert "\n## Values\n" in readme
    section = readme.split("\n## Values\n", 1)[1]
    table = set(re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE))
    missing = [p for p in _leaves(values) if p not in table]
    assert missing == []
    unknown = sorted(table - set(_leaves(values)))
    assert unknown == [], "README documents values the chart does not have"


def test_values_yaml_round_trips_through_the_schema() -> None:
    chart = helm.Chart.load(str(CHART))
    try:
        for name in VALUES_FILES:
            chart.validate_schema(load_values(name))
        assert chart.schema is not None
    finally:
        chart.close()
    docs = load_yaml_all((CHART / "values.yaml").read_text())
    assert len(docs) == 1
