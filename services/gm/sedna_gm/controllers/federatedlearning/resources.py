"""The objects a FederatedLearningJob refers to: its Models, Datasets and transmitter Secret.

Every reference must resolve in the job's namespace: the aggregation Model
(``spec.aggregationWorker.model.name``), ``spec.pretrainedModel`` when set, each training
worker's Dataset (it must have a ``nodeName`` and a usable ``url``) and the Secrets their
``credentialName`` and the s3 transmitter's ``credentialName`` name. Problems come back as
:class:`Problem` entries naming the object and the field that refers to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sedna.resources.objects import ObjectKey, ResourceObject
from sedna_gm.controllers.federatedlearning.workers import (
    JobInputs,
    ResolvedDataset,
    dataset_names,
)
from sedna_gm.controllers.informer import Informer
from sedna_gm.controllers.jointinference.models import (
    MODEL_KIND,
    REASON_INVALID_MODEL,
    REASON_MODEL_NOT_FOUND,
    ModelSecretError,
    resolve_s3_secret,
)
from sedna_gm.controllers.jointinference.workers import ResolvedModel
from sedna_gm.controllers.workers_common import url_problem
from sedna_gm.workloads.storage import S3Secret, SecretSource

__all__ = [
    "DATASET_KIND",
    "REASON_DATASET_NOT_FOUND",
    "REASON_INVALID_DATASET",
    "Problem",
    "aggregation_model_name",
    "pretrained_model_name",
    "resolve_inputs",
]

DATASET_KIND = "Dataset"
REASON_DATASET_NOT_FOUND = "DatasetNotFound"
REASON_INVALID_DATASET = "InvalidDataset"


@dataclass(frozen=True)
class Problem:
    """Why a referenced object cannot be used (``reason`` is the condition reason)."""

    reason: str
    message: str


def _ref_name(parent: object, key: str) -> str:
    ref = parent.get(key) if isinstance(parent, Mapping) else None
    return str(ref.get("name", "")) if isinstance(ref, Mapping) else ""


def aggregation_model_name(obj: ResourceObject) -> str:
    """``spec.aggregationWorker.model.name`` ("" when absent)."""
    return _ref_name(obj.spec.get("aggregationWorker"), "model")


def pretrained_model_name(obj: ResourceObject) -> str:
    """``spec.pretrainedModel.name`` ("" when unset)."""
    return _ref_name(obj.spec, "pretrainedModel")


class _Resolver:
    def __init__(
        self, obj: ResourceObject, objects: Mapping[str, Informer], secrets: SecretSource | None
    ) -> None:
        self.obj = obj
        self.objects = objects
        self.secrets = secrets
        self.problems: list[Problem] = []

    def _get(self, kind: str, name: str, label: str, reason: str) -> ResourceObject | None:
        found = self.objects[kind].get(ObjectKey(kind, self.obj.namespace, name))
        if found is None or found.deletion_timestamp is not None:
            self.problems.append(Problem(reason, f"{label} not found"))
            return None
        return found

    async def _secret(self, found: ResourceObject, label: str) -> tuple[bool, S3Secret | None]:
        name = str(found.spec.get("credentialName") or "")
        if not name:
            return True, None
        try:
            return True, await resolve_s3_secret(self.secrets, self.obj.namespace, name)
        except ModelSecretError as exc:
            self.problems.append(Problem(exc.reason, f"{label} spec.credentialName: {exc}"))
            return False, None

    async def model(self, name: str, field: str) -> ResolvedModel | None:
        label = f"Model {self.obj.namespace}/{name} ({field})"
        found = self._get(MODEL_KIND, name, label, REASON_MODEL_NOT_FOUND)
        if found is None:
            return None
        url = str(found.spec.get("url") or "")
        problem = url_problem(url)
        if problem:
            self.problems.append(Problem(REASON_INVALID_MODEL, f"{label} {problem}"))
            return None
        ok, secret = await self._secret(found, label)
        model_format = str(found.spec.get("format") or "").strip()
        return ResolvedModel(name, url, secret, model_format) if ok else None

    async def dataset(self, index: int, name: str) -> ResolvedDataset | None:
        field = f"spec.trainingWorkers[{index}].dataset.name"
        label = f"Dataset {self.obj.namespace}/{name} ({field})"
        found = self._get(DATASET_KIND, name, label, REASON_DATASET_NOT_FOUND)
        if found is None:
            return None
        url = str(found.spec.get("url") or "")
        node = str(found.spec.get("nodeName") or "")
        problem = url_problem(url, "TRAIN_DATASET_URL") or ("" if node else "has no nodeName")
        if problem:
            self.problems.append(Problem(REASON_INVALID_DATASET, f"{label} {problem}"))
            return None
        ok, secret = await self._secret(found, label)
        return ResolvedDataset(name, url, node, secret) if ok else None

    async def transmitter_secret(self) -> S3Secret | None:
        transmitter = self.obj.spec.get("transmitter")
        s3 = transmitter.get("s3") if isinstance(transmitter, Mapping) else None
        name = str(s3.get("credentialName") or "") if isinstance(s3, Mapping) else ""
        if not name:
            return None
        try:
            return await resolve_s3_secret(self.secrets, self.obj.namespace, name)
        except ModelSecretError as exc:
            message = f"spec.transmitter.s3.credentialName: {exc}"
            self.problems.append(Problem(exc.reason, message))
            return None


async def resolve_inputs(
    obj: ResourceObject, objects: Mapping[str, Informer], secrets: SecretSource | None
) -> tuple[JobInputs | None, list[Problem]]:
    """Everything the job refers to, or the problems that hold it back.

    Parameters
    ----------
    obj
        The FederatedLearningJob (a valid spec).
    objects
        Informers by kind: ``Model`` and ``Dataset``.
    secrets
        Where ``credentialName`` Secrets are read.
    """
    resolver = _Resolver(obj, objects, secrets)
    model = await resolver.model(aggregation_model_name(obj), "spec.aggregationWorker.model.name")
    pretrained_name = pretrained_model_name(obj)
    pretrained = (
        await resolver.model(pretrained_name, "spec.pretrainedModel.name")
        if pretrained_name
        else None
    )
    datasets = [await resolver.dataset(i, n) for i, n in enumerate(dataset_names(obj))]
    transmitter_secret = await resolver.transmitter_secret()
    if resolver.problems or model is None:
        return None, resolver.problems
    resolved = tuple(d for d in datasets if d is not None)
    return JobInputs(model, resolved, pretrained, transmitter_secret), []
