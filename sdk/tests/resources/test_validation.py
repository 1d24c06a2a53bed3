"""`sedna.resources.validation`: broken manifests are rejected at the exact field at fault."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from sedna.resources import (
    IncrementalLearningJob,
    validate_object,
    validate_paths,
    validate_text,
)
from sedna.resources._yaml import load_documents

Doc = dict[str, Any]


def _segments(path: str) -> list[str | int]:
    return [
        int(index) if index else name for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path)
    ]


def put(path: str, value: Any) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        *parents, last = _segments(path)
        node: Any = doc
        for segment in parents:
            if isinstance(segment, str) and segment not in node:
                node[segment] = {}
            node = node[segment]
        node[last] = value

    return mutate


def drop(path: str) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        *parents, last = _segments(path)
        node: Any = doc
        for segment in parents:
            node = node[segment]
        del node[last]

    return mutate


def rename(path: str, new_name: str) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        *parents, last = _segments(path)
        node: Any = doc
        for segment in parents:
            node = node[segment]
        node[new_name] = node.pop(last)

    return mutate


CONTAINER = {"name": "c", "image": "example/worker:v1"}
TEMPLATE = {"spec": {"containers": [CONTAINER]}}

# (kind, mutation, the exact error paths, whether the CRD schema alone also rejects it).
# The last flag is False where the API server enforces the rule by other means: object names
# (built-in checks), CEL rules (tested with cel-python in test_cel_rules.py), list-map keys, and
# unknown fields (pruned, or rejected by kubectl's strict field validation).
VARIANTS: dict[str, tuple[str, Callable[[Doc], None], set[str], bool]] = {
    "il-missing-trainProb": (
        "IncrementalLearningJob",
        drop("spec.dataset.trainProb"),
        {"spec.dataset.trainProb"},
        True,
    ),
    "il-trainProb-1.5": (
        "IncrementalLearningJob",
        put("spec.dataset.trainProb", 1.5),
        {"spec.dataset.trainProb"},
        True,
    ),
    "il-trainProb-string": (
        "IncrementalLearningJob",
        put("spec.dataset.trainProb", "0.8"),
        {"spec.dataset.trainProb"},
        True,
    ),
    "il-timer-25:00": (
        "IncrementalLearningJob",
        put("spec.trainSpec.trigger.timer.end", "25:00"),
        {"spec.trainSpec.trigger.timer.end"},
        True,
    ),
    "il-timer-2:00": (
        "IncrementalLearningJob",
        put("spec.trainSpec.trigger.timer.start", "2:00"),
        {"spec.trainSpec.trigger.timer.start"},
        True,
    ),
    "il-bad-operator": (
        "IncrementalLearningJob",
        put("spec.trainSpec.trigger.condition.operator", "=>"),
        {"spec.trainSpec.trigger.condition.operator"},
        True,
    ),
    "il-checkPeriodSeconds-0": (
        "IncrementalLearningJob",
        put("spec.trainSpec.trigger.checkPeriodSeconds", 0),
        {"spec.trainSpec.trigger.checkPeriodSeconds"},
        True,
    ),
    "il-pollPeriodSeconds-0": (
        "IncrementalLearningJob",
        put("spec.deploySpec.model.pollPeriodSeconds", 0),
        {"spec.deploySpec.model.pollPeriodSeconds"},
        True,
    ),
    "il-hotUpdate-string": (
        "IncrementalLearningJob",
        put("spec.deploySpec.model.hotUpdateEnabled", "true"),
        {"spec.deploySpec.model.hotUpdateEnabled"},
        True,
    ),
    "il-missing-deploy-trigger": (
        "IncrementalLearningJob",
        drop("spec.deploySpec.trigger"),
        {"spec.deploySpec.trigger"},
        True,
    ),
    "ji-empty-hem-name": (
        "JointInferenceService",
        put("spec.edgeWorker.hardExampleMining.name", ""),
        {"spec.edgeWorker.hardExampleMining.name"},
        True,
    ),
    "ji-missing-hem-name": (
        "JointInferenceService",
        drop("spec.edgeWorker.hardExampleMining.name"),
        {"spec.edgeWorker.hardExampleMining.name"},
        True,
    ),
    "ji-hem-number-value": (
        "JointInferenceService",
        put("spec.edgeWorker.hardExampleMining.parameters[0].value", 0.9),
        {"spec.edgeWorker.hardExampleMining.parameters[0].value"},
        True,
    ),
    "ji-hem-duplicate-key": (
        "JointInferenceService",
        put("spec.edgeWorker.hardExampleMining.parameters[1].key", "threshold_img"),
        {"spec.edgeWorker.hardExampleMining.parameters[1].key"},
        False,
    ),
    "ji-minReplicas-above-max": (
        "JointInferenceService",
        put("spec.edgeWorker.hpa", {"minReplicas": 5, "maxReplicas": 2}),
        {"spec.edgeWorker.hpa.minReplicas"},
        False,
    ),
    "ji-maxReplicas-0": (
        "JointInferenceService",
        put("spec.cloudWorker.hpa", {"maxReplicas": 0}),
        {"spec.cloudWorker.hpa.maxReplicas"},
        True,
    ),
    "ji-hpa-without-max": (
        "JointInferenceService",
        put("spec.cloudWorker.hpa", {"minReplicas": 1}),
        {"spec.cloudWorker.hpa.maxReplicas"},
        True,
    ),
    "ji-empty-containers": (
        "JointInferenceService",
        put("spec.cloudWorker.template.spec.containers", []),
        {"spec.cloudWorker.template.spec.containers"},
        True,
    ),
    "ji-container-without-name": (
        "JointInferenceService",
        drop("spec.edgeWorker.template.spec.containers[0].name"),
        {"spec.edgeWorker.template.spec.containers[0].name"},
        True,
    ),
    "ji-template-without-spec": (
        "JointInferenceService",
        put("spec.cloudWorker.template", {"metadata": {"labels": {"a": "b"}}}),
        {"spec.cloudWorker.template.spec"},
        True,
    ),
    "ji-typo-edgeWorkers": (
        "JointInferenceService",
        rename("spec.edgeWorker", "edgeWorkers"),
        {"spec.edgeWorker", "spec.edgeWorkers"},
        True,  # the CRD misses the required edgeWorker; it would prune edgeWorkers
    ),
    "fl-training-worker-without-dataset": (
        "FederatedLearningJob",
        drop("spec.trainingWorkers[1].dataset"),
        {"spec.trainingWorkers[1].dataset"},
        True,
    ),
    "fl-no-training-workers": (
        "FederatedLearningJob",
        put("spec.trainingWorkers", []),
        {"spec.trainingWorkers"},
        True,
    ),
    "fl-empty-transmitter": (
        "FederatedLearningJob",
        put("spec.transmitter", {}),
        {"spec.transmitter"},
        False,
    ),
    "fl-s3-without-aggDataPath": (
        "FederatedLearningJob",
        put("spec.transmitter", {"s3": {"credentialName": "x"}}),
        {"spec.transmitter.s3.aggDataPath"},
        True,
    ),
    "dataset-format-json": ("Dataset", put("spec.format", "json"), {"spec.format"}, True),
    "dataset-null-nodeName": ("Dataset", put("spec.nodeName", None), {"spec.nodeName"}, True),
    "dataset-empty-url": ("Dataset", put("spec.url", ""), {"spec.url"}, True),
    "model-typo-deviceSocVersions": (
        "Model",
        put("spec.deviceSocVersions", ["Ascend310"]),
        {"spec.deviceSocVersions"},
        False,
    ),
    "model-soc-versions-string": (
        "Model",
        put("spec.device_soc_versions", "Ascend310"),
        {"spec.device_soc_versions"},
        True,
    ),
    "ll-missing-outputDir": (
        "LifelongLearningJob",
        drop("spec.outputDir"),
        {"spec.outputDir"},
        True,
    ),
    "va-missing-model": ("VideoAnalyticsJob", drop("spec.model"), {"spec.model"}, True),
    "fe-missing-selector": (
        "FeatureExtractionService",
        drop("spec.selector"),
        {"spec.selector"},
        True,
    ),
    "reid-negative-backoffLimit": (
        "ReidJob",
        put("spec.backoffLimit", -1),
        {"spec.backoffLimit"},
        True,
    ),
    "objs-no-tracking-workers": (
        "ObjectSearchService",
        put("spec.trackingWorkers", []),
        {"spec.trackingWorkers"},
        True,
    ),
    "objt-reid-without-template": (
        "ObjectTrackingService",
        drop("spec.reidWorkers.template"),
        {"spec.reidWorkers.template"},
        True,
    ),
    "bad-metadata-name": ("Dataset", put("metadata.name", "Bad_Name"), {"metadata.name"}, False),
    "bad-namespace": ("Model", put("metadata.namespace", "Team A"), {"metadata.namespace"}, False),
    "label-not-a-string": (
        "Model",
        put("metadata.labels", {"version": 2}),
        {"metadata.labels.version"},
        False,
    ),
    "missing-metadata": ("Model", drop("metadata"), {"metadata"}, False),
    "missing-spec": ("Dataset", drop("spec"), {"spec"}, True),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_broken_variant_is_rejected_at_the_field(
    variant: str, good: Callable[[str], Doc], schemas: dict[str, Any]
) -> None:
    kind, mutate, paths, crd_rejects = VARIANTS[variant]
    doc = good(kind)
    assert validate_object(doc).status == "valid"
    mutate(doc)
    result = validate_object(doc)
    assert result.status == "invalid"
    assert {error.path for error in result.errors} == paths, [str(e) for e in result.errors]
    assert all(error.message for error in result.errors)
    crd_errors = list(jsonschema.Draft7Validator(schemas[kind]).iter_errors(doc))
    assert bool(crd_errors) == crd_rejects, [e.message for e in crd_errors]


def test_messages_read_like_the_api_servers(good: Callable[[str], Doc]) -> None:
    doc = good("IncrementalLearningJob")
    put("spec.dataset.trainProb", 1.5)(doc)
    put("spec.trainSpec.trigger.condition.operator", "=>")(doc)
    put("spec.deploySpec.templat", {})(doc)
    messages = {error.path: error.message for error in validate_object(doc).errors}
    assert messages["spec.dataset.trainProb"] == (
        "Invalid value: 1.5: must be less than or equal to 1"
    )
    assert messages["spec.trainSpec.trigger.condition.operator"].startswith(
        'Unsupported value: "=>": supported values: "gt", ">"'
    )
    assert messages["spec.deploySpec.templat"] == (
        'unknown field "templat" (did you mean "template"?)'
    )
    model = good("Model")
    model["spec"]["deviceSocVersions"] = ["Ascend310"]
    (error,) = validate_object(model).errors
    assert (
        error.message == 'unknown field "deviceSocVersions" (did you mean "device_soc_versions"?)'
    )


def test_both_transmitters_are_accepted_with_a_warning(good: Callable[[str], Doc]) -> None:
    doc = good("FederatedLearningJob")
    assert set(doc["spec"]["transmitter"]) == {"ws", "s3"}  # upstream's MistNet example
    result = validate_object(doc)
    assert result.status == "valid"
    assert [w.path for w in result.warnings] == ["spec.transmitter"]
    assert "s3 is used" in result.warnings[0].message


def test_errors_carry_file_document_and_line(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n"
        "---\n"
        "apiVersion: sedna.io/v1alpha1\n"
        "kind: Dataset\n"
        "metadata:\n  name: d\n"
        "spec:\n  url: /data\n  format: json\n",
        encoding="utf-8",
    )
    report = validate_paths([path])
    assert [r.status for r in report.results] == ["skipped", "invalid"]
    assert not report.ok
    errors = {(e.source, e.document, e.path, e.line) for e in report.errors}
    assert errors == {
        (str(path), 2, "spec.format", 11),
        (str(path), 2, "spec.nodeName", 9),  # missing: the line of its parent
    }
    assert str(report.errors[0]).startswith(f"{path} #2 (line ")


def test_invalid_yaml_reports_the_line_and_keeps_earlier_documents() -> None:
    text = (
        "apiVersion: sedna.io/v1alpha1\nkind: Model\nmetadata: {name: m}\n"
        "spec: {url: /m, format: pb}\n---\nspec: [1, 2\n"
    )
    first, second = validate_text(text, source="x.yaml")
    assert first.status == "valid"
    assert second.status == "invalid"
    assert second.document == 2
    (error,) = second.errors
    assert error.message.startswith("invalid YAML:")
    assert "line 7" in error.message


def test_duplicate_keys_are_errors() -> None:
    (result,) = validate_text("apiVersion: v1\nkind: Secret\nkind: ConfigMap\n")
    assert result.status == "invalid"
    assert 'found duplicate key "kind"' in result.errors[0].message
    assert "line 3" in result.errors[0].message


def test_yaml_is_read_the_way_kubectl_reads_it() -> None:
    (doc,) = load_documents(
        "a: 20:00\nb: 2024-01-01\nc: 1e3\nd: 0x1F\ne: yes\nf: 1_000\ng: 02:00\nh: .5\n"
    )
    assert doc.data == {
        "a": "20:00",
        "b": "2024-01-01",
        "c": 1000.0,
        "d": 31,
        "e": True,
        "f": 1000,
        "g": "02:00",
        "h": 0.5,
    }
    assert doc.lines[("b",)] == 2


def test_document_shapes() -> None:
    results = validate_text("- a\n- b\n---\nkind: Dataset\n---\napiVersion: sedna.io/v1alpha1\n")
    assert [r.status for r in results] == ["invalid", "invalid", "invalid"]
    assert results[0].errors[0].message == "document is array, not an object"
    assert {e.path for e in results[1].errors} == {"apiVersion"}
    assert {e.path for e in results[2].errors} == {"kind"}
    assert validate_text("") == validate_text("# only a comment\n---\n")
    (empty,) = validate_text("")
    assert empty.status == "skipped"


def test_kind_and_version_checks() -> None:
    base = "apiVersion: {v}\nkind: {k}\nmetadata: {{name: x}}\nspec: {{}}\n"
    (unknown,) = validate_text(base.format(v="sedna.io/v1alpha1", k="JointInferenceServic"))
    assert unknown.errors[0].path == "kind"
    assert 'did you mean "JointInferenceService"' in unknown.errors[0].message
    (short,) = validate_text(base.format(v="sedna.io/v1alpha1", k="ji"))
    assert 'did you mean "JointInferenceService"' in short.errors[0].message
    (version,) = validate_text(base.format(v="sedna.io/v1beta1", k="Dataset"))
    assert version.errors[0].path == "apiVersion"
    (other,) = validate_text(base.format(v="apps/v1", k="Deployment"))
    assert other.status == "skipped"
    assert other.reason == "apps/v1 Deployment is not a Sedna object"


def test_generate_name_status_and_json(good: Callable[[str], Doc]) -> None:
    doc = good("Dataset")
    doc["metadata"] = {"generateName": "data-"}
    doc["status"] = {"numberOfSamples": "not even a number"}  # ignored, as on create
    assert validate_object(doc).status == "valid"
    (result,) = validate_text(json.dumps(doc), source="d.json")
    assert result.status == "valid"


def test_list_documents_are_expanded(good: Callable[[str], Doc]) -> None:
    bad = good("Model")
    bad["spec"]["format"] = ""
    listing = {"apiVersion": "v1", "kind": "List", "items": [good("Dataset"), bad]}
    results = validate_text(yaml.safe_dump(listing, sort_keys=False))
    assert [(r.item, r.status) for r in results] == [(0, "valid"), (1, "invalid")]
    assert results[1].errors[0].path == "spec.format"
    assert results[1].errors[0].line is not None


def test_paths_directories_and_stdin(tmp_path: Path, good: Callable[[str], Doc]) -> None:
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    (nested / "model.yml").write_text(yaml.safe_dump(good("Model")), encoding="utf-8")
    (tmp_path / "data.json").write_text(json.dumps(good("Dataset")), encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not a manifest", encoding="utf-8")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.yaml").write_text("kind: [", encoding="utf-8")
    (tmp_path / "empty").mkdir()
    stdin = io.StringIO(yaml.safe_dump(good("ReidJob")))

    report = validate_paths(
        [tmp_path, "-", tmp_path / "empty", tmp_path / "missing.yaml"], stdin=stdin
    )
    summary = [(Path(r.source).name, r.status) for r in report.results]
    assert summary == [
        ("model.yml", "valid"),
        ("data.json", "valid"),
        ("<stdin>", "valid"),
        ("empty", "invalid"),
        ("missing.yaml", "invalid"),
    ]
    assert report.results[3].errors[0].message == "no .yaml, .yml or .json files found"
    assert report.results[4].errors[0].message == "no such file or directory"


def test_valid_result_carries_the_typed_object(good: Callable[[str], Doc]) -> None:
    doc = good("IncrementalLearningJob")
    del doc["spec"]["deploySpec"]["model"]["pollPeriodSeconds"]
    obj = validate_object(doc).obj
    assert isinstance(obj, IncrementalLearningJob)
    assert obj.spec.deploy_spec.model.poll_period_seconds == 60  # upstream's default
    assert obj.spec.train_spec.trigger.timer is not None
    assert obj.spec.train_spec.template.spec.containers[0].name == "train-worker"
    # Opaque pod fields stay available to the controllers.
    assert obj.spec.train_spec.template.spec.model_extra == {"nodeName": "edge-node"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
                for p, c in zip("abcde", "bcdef", strict=True)
            ),
            "more than",
        ),
        ("&a [*a]\n", "deeper than"),
        ("[" * 1000 + "]" * 1000, "nests"),
        ('{"a":' * 150 + "1" + "}" * 150, "deeper than"),
    ],
    ids=["alias-bomb", "recursive-alias", "deep-yaml", "deep-json"],
)
def test_hostile_documents_are_refused_cleanly(text: str, message: str) -> None:
    (result,) = validate_text(text)
    assert result.status == "invalid"
    assert message in result.errors[0].message
