"""The workers of a FederatedLearningJob and their environment contract (pure logic).

Reference §2.4/§2.5: one aggregation worker (a Pod, worker type ``aggregation``) behind the
Service ``<name>-aggregation`` on port 7363, and one training worker per
``spec.trainingWorkers`` entry (a Pod, worker type ``train``) on its Dataset's node
(``spec.nodeName`` of the Dataset; a template ``nodeName`` must agree with it). Both default
to ``restartPolicy: OnFailure``.

- aggregator: ``AGG_BIND_PORT``, ``PARTICIPANTS_COUNT``, ``MODEL_URL`` (the aggregation Model,
  an output: host paths are mounted read-write), ``MODEL_NAME``, ``TRANSMITTER``
  (``s3`` when the job sets an s3 transmitter, else ``ws``), ``AGG_DATA_PATH`` (s3 only),
  ``PRETRAINED_MODEL_URL`` (when ``pretrainedModel`` is set) plus ``NAMESPACE``, ``JOB_NAME``,
  ``WORKER_NAME``;
- trainer: ``AGG_IP``/``AGG_PORT`` (the Service; in the local mode the aggregator node's host
  and its allocated port), ``PARTICIPANTS_COUNT``, ``MODEL_URL``, ``MODEL_NAME``,
  ``DATASET_NAME``, ``TRAIN_DATASET_URL`` (the Dataset's ``spec.url``), ``TRANSMITTER``,
  ``AGG_DATA_PATH``, ``PRETRAINED_MODEL_URL`` plus the common contract with ``LC_SERVER``
  (Kubernetes; locally the node's LC sets it). On Kubernetes trainers use the host network
  (as upstream) with ``dnsPolicy: ClusterFirstWithHostNet`` unless the template sets one, so
  the aggregator Service's name resolves.

The template's own ``env`` entries win over everything injected (Kubernetes semantics). A
worker's S3 credentials are the first of: the transmitter's ``credentialName``, the Model's,
the Dataset's (trainers).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from sedna.resources.objects import ResourceObject
from sedna.service.aggregation_client import DEFAULT_AGG_BULK_PORT
from sedna_gm.controllers.jointinference.workers import (
    HOST_NETWORK_DNS_POLICY,
    ResolvedModel,
    explicit_env,
)
from sedna_gm.workloads.builder import WorkerEnvSettings, build_worker, owner_of, worker_name
from sedna_gm.workloads.lifecycle import DesiredWorker
from sedna_gm.workloads.port import RuntimeMode, ServiceEndpoint, WorkloadError
from sedna_gm.workloads.storage import S3Secret, StoragePlan

__all__ = [
    "AGGREGATION",
    "AGG_BIND_PORT_ENV",
    "AGG_BULK_PORT_ENV",
    "DEFAULT_AGG_PORT",
    "TRAIN",
    "JobInputs",
    "ResolvedDataset",
    "aggregator_bulk_port",
    "aggregator_name",
    "build_aggregator",
    "build_trainer",
    "dataset_names",
    "explicit_agg_port",
    "trainer_name",
    "training_workers",
]

AGGREGATION = "aggregation"
TRAIN = "train"
DEFAULT_AGG_PORT = 7363
"""Upstream's aggregator port (the Kubernetes Service port and the default bind port)."""
AGG_BIND_PORT_ENV = "AGG_BIND_PORT"
AGG_BULK_PORT_ENV = "SEDNA_AGGREGATOR_BULK_PORT"
"""The aggregator's bulk port setting: a Kubernetes Service exposes it beside AGG_BIND_PORT;
local aggregators get ``0`` (a free port: several jobs share the host) unless it is set."""


@dataclass(frozen=True)
class ResolvedDataset:
    """A training worker's Dataset: its name, ``spec.url``, node and credentials."""

    name: str
    url: str
    node_name: str
    secret: S3Secret | None = None


@dataclass(frozen=True)
class JobInputs:
    """What the workers are built from once every referenced object resolved.

    Attributes
    ----------
    model
        The aggregation worker's Model (where the aggregated weights go).
    datasets
        One per ``spec.trainingWorkers`` entry, in order.
    pretrained
        ``spec.pretrainedModel`` (None when unset).
    transmitter_secret
        The s3 transmitter's ``credentialName`` credentials (None: none).
    """

    model: ResolvedModel
    datasets: tuple[ResolvedDataset, ...]
    pretrained: ResolvedModel | None = None
    transmitter_secret: S3Secret | None = None


def aggregator_name(job_name: str) -> str:
    """The aggregation worker's name (also its ``WORKER_NAME``)."""
    return worker_name(job_name, AGGREGATION)


def trainer_name(job_name: str, index: int, dataset: str) -> str:
    """The name of the training worker of ``spec.trainingWorkers[index]``."""
    return worker_name(job_name, TRAIN, f"{index}/{dataset}")


def training_workers(obj: ResourceObject) -> list[Mapping[str, Any]]:
    """``spec.trainingWorkers`` (entries that are not objects are skipped by validation)."""
    items = obj.spec.get("trainingWorkers")
    return [w for w in items if isinstance(w, Mapping)] if isinstance(items, list) else []


def _aggregation_template(obj: ResourceObject) -> Mapping[str, Any]:
    worker = obj.spec.get("aggregationWorker")
    template = worker.get("template") if isinstance(worker, Mapping) else None
    return template if isinstance(template, Mapping) else {}


def explicit_agg_port(obj: ResourceObject) -> int | None:
    """``AGG_BIND_PORT`` as the aggregator's template pins it (None when it does not).

    Raises
    ------
    WorkloadError
        The value is not a port number (the message names the field).
    """
    raw = explicit_env(_aggregation_template(obj), AGG_BIND_PORT_ENV)
    if raw is None:
        return None
    port = int(raw) if raw.strip().isdigit() else 0
    if not 0 < port < 65536:
        raise WorkloadError(
            f"spec.aggregationWorker.template.spec.containers[0].env {AGG_BIND_PORT_ENV}: "
            f"{raw!r} is not a port number (1-65535)"
        )
    return port


def aggregator_bulk_port(obj: ResourceObject) -> int | None:
    """The aggregator's bulk port: ``SEDNA_AGGREGATOR_BULK_PORT`` as its template sets it,
    else the default (7365); None when the template turns it off (``none``).

    Raises
    ------
    WorkloadError
        The value is neither a port number nor ``none`` (0, a free port, cannot be put
        behind a Service).
    """
    raw = explicit_env(_aggregation_template(obj), AGG_BULK_PORT_ENV)
    if raw is None:
        return DEFAULT_AGG_BULK_PORT
    text = raw.strip().lower()
    if text in ("", "none", "null"):
        return None
    port = int(text) if text.isdigit() else 0
    if not 0 < port < 65536:
        raise WorkloadError(
            f"spec.aggregationWorker.template.spec.containers[0].env {AGG_BULK_PORT_ENV}: "
            f"{raw!r} is not a port number (1-65535) or none"
        )
    return port


def _transmitter_env(obj: ResourceObject) -> dict[str, str]:
    transmitter = obj.spec.get("transmitter")
    s3 = transmitter.get("s3") if isinstance(transmitter, Mapping) else None
    if isinstance(s3, Mapping):  # s3 wins when both are set (as upstream)
        return {"TRANSMITTER": "s3", "AGG_DATA_PATH": str(s3.get("aggDataPath", ""))}
    return {"TRANSMITTER": "ws"}


def _model_env(inputs: JobInputs, storage: StoragePlan) -> dict[str, str]:
    url = inputs.model.url
    is_dir = "://" not in url and not PurePosixPath(url).suffix
    storage.add("MODEL_URL", url, is_dir=is_dir, writable=True)
    if inputs.pretrained is not None:
        storage.add("PRETRAINED_MODEL_URL", inputs.pretrained.url)
    return {"MODEL_NAME": inputs.model.name}


def _first_secret(*secrets: S3Secret | None) -> S3Secret | None:
    return next((s for s in secrets if s is not None), None)


def build_aggregator(
    obj: ResourceObject,
    inputs: JobInputs,
    *,
    mode: RuntimeMode,
    settings: WorkerEnvSettings,
    port: int,
) -> DesiredWorker:
    """The aggregation worker, binding ``port``.

    Raises
    ------
    WorkloadError
        The template is malformed (the message names the field) or a URL is unusable.
    """
    storage = StoragePlan(mode)
    local_bulk = mode is not RuntimeMode.KUBERNETES and (
        explicit_env(_aggregation_template(obj), AGG_BULK_PORT_ENV) is None
    )
    env = {
        AGG_BIND_PORT_ENV: str(port),
        **({AGG_BULK_PORT_ENV: "0"} if local_bulk else {}),
        "PARTICIPANTS_COUNT": str(len(inputs.datasets)),
        **_model_env(inputs, storage),
        **_transmitter_env(obj),
    }
    built = build_worker(
        owner_of(obj),
        AGGREGATION,
        _aggregation_template(obj),
        mode=mode,
        name=aggregator_name(obj.name),
        settings=settings,
        feature_env=env,
        storage=storage,
        s3=_first_secret(inputs.transmitter_secret, inputs.model.secret),
        with_lc=mode is RuntimeMode.KUBERNETES,
        template_path="spec.aggregationWorker.template",
    )
    return DesiredWorker(built.spec, None, built.credentials)


def _placed_template(
    template: Mapping[str, Any], dataset: ResolvedDataset, path: str
) -> dict[str, Any]:
    """``template`` with ``spec.nodeName`` set to the Dataset's node.

    Raises
    ------
    WorkloadError
        The template names another node.
    """
    placed: dict[str, Any] = copy.deepcopy(dict(template))
    spec = placed.get("spec")
    if not isinstance(spec, dict):
        return placed  # build_worker names the problem
    pinned = spec.get("nodeName")
    if pinned and pinned != dataset.node_name:
        raise WorkloadError(
            f"{path}.spec.nodeName: {pinned!r} is not the node of Dataset {dataset.name} "
            f"({dataset.node_name!r}); a training worker runs where its data is"
        )
    spec["nodeName"] = dataset.node_name
    return placed


def build_trainer(
    obj: ResourceObject,
    index: int,
    inputs: JobInputs,
    *,
    mode: RuntimeMode,
    settings: WorkerEnvSettings,
    aggregator: ServiceEndpoint,
) -> DesiredWorker:
    """The training worker of ``spec.trainingWorkers[index]``, reporting to ``aggregator``.

    Raises
    ------
    WorkloadError
        The template is malformed or on another node than its Dataset, or a URL is unusable.
    """
    dataset = inputs.datasets[index]
    path = f"spec.trainingWorkers[{index}].template"
    raw = training_workers(obj)[index].get("template")
    template = _placed_template(raw if isinstance(raw, Mapping) else {}, dataset, path)
    storage = StoragePlan(mode)
    env = {
        "AGG_IP": aggregator.host,
        "AGG_PORT": str(aggregator.port),
        "PARTICIPANTS_COUNT": str(len(inputs.datasets)),
        **_model_env(inputs, storage),
        "DATASET_NAME": dataset.name,
        **_transmitter_env(obj),
    }
    storage.add("TRAIN_DATASET_URL", dataset.url)
    kubernetes = mode is RuntimeMode.KUBERNETES
    spec = template.get("spec")
    has_policy = isinstance(spec, Mapping) and spec.get("dnsPolicy")
    built = build_worker(
        owner_of(obj),
        TRAIN,
        template,
        mode=mode,
        name=trainer_name(obj.name, index, dataset.name),
        settings=settings,
        feature_env=env,
        storage=storage,
        s3=_first_secret(inputs.transmitter_secret, inputs.model.secret, dataset.secret),
        with_lc=kubernetes,
        host_network=kubernetes,
        dns_policy=HOST_NETWORK_DNS_POLICY if kubernetes and not has_policy else None,
        template_path=path,
    )
    return DesiredWorker(built.spec, None, built.credentials)


def dataset_names(obj: ResourceObject) -> Sequence[str]:
    """The Dataset each training worker names, in order ("" when absent)."""
    names = []
    for worker in training_workers(obj):
        dataset = worker.get("dataset")
        names.append(str(dataset.get("name", "")) if isinstance(dataset, Mapping) else "")
    return names
