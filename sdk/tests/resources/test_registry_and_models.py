"""The kind registry and the models' Python-side behaviour."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from sedna import resources
from sedna.resources import (
    API_VERSION,
    Dataset,
    DatasetSpec,
    FederatedLearningJobStatus,
    JointInferenceServiceStatus,
    LifelongLearningJobStatus,
    ObjectMeta,
    UnknownKindError,
    all_kinds,
    find_kind,
    get_kind,
)

UPSTREAM_KINDS = {
    "Dataset",
    "Model",
    "JointInferenceService",
    "FederatedLearningJob",
    "IncrementalLearningJob",
    "LifelongLearningJob",
    "ObjectSearchService",
    "ObjectTrackingService",
    "ReidJob",
    "VideoAnalyticsJob",
    "FeatureExtractionService",
}


def test_all_eleven_kinds() -> None:
    kinds = all_kinds()
    assert {info.kind for info in kinds} == UPSTREAM_KINDS
    for info in kinds:
        assert info.kind == info.model.KIND
        assert info.plural == info.kind.lower() + "s"
        assert info.singular == info.kind.lower()
        assert info.api_version == API_VERSION
        assert info.model.model_fields["spec"].annotation is info.spec_model
        assert info.printer_columns


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("ji", "JointInferenceService"),
        ("JI", "JointInferenceService"),
        ("jointinferenceservice", "JointInferenceService"),
        ("JointInferenceServices", "JointInferenceService"),
        ("jointinferenceservices.sedna.io", "JointInferenceService"),
        ("fl", "FederatedLearningJob"),
        ("il", "IncrementalLearningJob"),
        ("ll", "LifelongLearningJob"),
        ("objs", "ObjectSearchService"),
        ("objt", "ObjectTrackingService"),
        ("reid", "ReidJob"),
        ("va", "VideoAnalyticsJob"),
        ("fe", "FeatureExtractionService"),
        ("datasets", "Dataset"),
        ("Model", "Model"),
    ],
)
def test_lookup_by_any_name(name: str, kind: str) -> None:
    assert get_kind(name).kind == kind
    assert find_kind(name) is get_kind(name)


def test_unknown_name() -> None:
    assert find_kind("ds") is None
    with pytest.raises(UnknownKindError) as caught:
        get_kind("jointinference")
    assert "jointinferenceservice" in caught.value.suggestions
    assert "did you mean" in str(caught.value)


def test_public_api_is_importable() -> None:
    for name in resources.__all__:
        assert hasattr(resources, name), name


def test_objects_can_be_built_in_python() -> None:
    dataset = Dataset(
        metadata=ObjectMeta(name="data", namespace="default"),
        spec=DatasetSpec(url="/data/train.txt", format="txt", node_name="edge0"),
    )
    assert dataset.kind == "Dataset"
    assert dataset.model_dump(by_alias=True, exclude_none=True) == {
        "apiVersion": API_VERSION,
        "kind": "Dataset",
        "metadata": {"name": "data", "namespace": "default"},
        "spec": {"url": "/data/train.txt", "format": "txt", "nodeName": "edge0"},
    }


def test_kind_must_match_the_class() -> None:
    with pytest.raises(ValidationError, match='expected "Dataset"'):
        Dataset.model_validate(
            {
                "kind": "Model",
                "metadata": {"name": "x"},
                "spec": {"url": "/x", "format": "txt", "nodeName": "n"},
            }
        )


def test_status_is_lenient_and_typed() -> None:
    status = JointInferenceServiceStatus.model_validate(
        {
            "phase": "Running",
            "active": 2,
            "failed": 0,
            "startTime": "2025-01-01T00:00:00Z",
            "conditions": [
                {
                    "type": "Running",
                    "status": "True",
                    "lastHeartbeatTime": "2025-01-01T00:00:05Z",
                    "reason": "workersReady",
                }
            ],
            "metrics": [{"key": "inferenceNumber", "value": "12"}],
            "someFieldFromAnotherController": 1,
        }
    )
    assert status.start_time == datetime(2025, 1, 1, tzinfo=UTC)
    assert status.conditions is not None
    assert status.conditions[-1].last_heartbeat_time is not None
    with pytest.raises(ValidationError):
        FederatedLearningJobStatus.model_validate({"phase": "Complete"})


def test_lifelong_knowledge_base_keeps_upstream_names() -> None:
    wire = {
        "knowledgeBase": {
            "AIModels": {
                "numberOfAIModels": 1,
                "listOfAIModels": [
                    {"modelID": "task-0", "averagePrecision": 0.9, "numberOfTrainSamples": 100}
                ],
            },
            "AIClasses": {"numberOfAIClasses": 2, "listOfAIClasses": ["a", "b"]},
            "samples": {"numberOfLabeledUnseenSample": 1, "numberOfUnseenSample": 5},
        },
        "conditions": [{"type": "Ready", "status": "True", "stage": "Train"}],
    }
    status = LifelongLearningJobStatus.model_validate(wire)
    assert status.knowledge_base is not None
    assert status.knowledge_base.ai_models is not None
    assert status.knowledge_base.ai_models.number_of_ai_models == 1
    assert status.model_dump(by_alias=True, exclude_none=True) == wire
    with pytest.raises(ValidationError):
        LifelongLearningJobStatus.model_validate(
            {"conditions": [{"type": "Ready", "status": "True"}]}
        )
