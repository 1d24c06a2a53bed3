"""Render ``joint-inference.yaml`` (the template next to this file) for one data directory.

The template's paths start with :data:`TEMPLATE_ROOT`, the default ``--out`` of
``prepare.py``; rendering replaces that prefix with the real data directory and the commands
``python3`` and ``sedna-inference`` with absolute paths in this Python environment, because
the LocalController starts workers with its own ``PATH``. Options of ``prepare.py`` (the HEM
threshold, the cloud worker kind) are applied to the parsed documents, never by editing text.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CLOUD_WORKERS",
    "TEMPLATE",
    "TEMPLATE_ROOT",
    "render",
    "service_name",
]

TEMPLATE = Path(__file__).with_name("joint-inference.yaml")
TEMPLATE_ROOT = "/tmp/sedna-joint-inference"
CLOUD_WORKERS = ("inference-server", "script")
"""``inference-server``: ``sedna-inference`` serves the big model (the template's choice);
``script``: ``cloud_worker.py``, the upstream-style ``BigModelService`` script."""


def _replace_root(value: Any, root: str) -> Any:
    if isinstance(value, str):
        return root + value[len(TEMPLATE_ROOT) :] if value.startswith(TEMPLATE_ROOT) else value
    if isinstance(value, list):
        return [_replace_root(v, root) for v in value]
    if isinstance(value, dict):
        return {k: _replace_root(v, root) for k, v in value.items()}
    return value


def _service(docs: list[dict[str, Any]]) -> dict[str, Any]:
    for doc in docs:
        if doc.get("kind") == "JointInferenceService":
            return doc
    raise ValueError(f"{TEMPLATE.name}: no JointInferenceService document")


def service_name(docs: list[dict[str, Any]]) -> str:
    """The JointInferenceService's name (the big model's name on the cloud)."""
    return str(_service(docs)["metadata"]["name"])


def _container(worker: Mapping[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = worker["template"]["spec"]["containers"][0]
    return container


def _set_env(container: dict[str, Any], name: str, value: str) -> None:
    env: list[dict[str, Any]] = container.setdefault("env", [])
    for item in env:
        if item.get("name") == name:
            item["value"] = value
            return
    env.append({"name": name, "value": value})


def render(
    out_dir: Path,
    *,
    python: str,
    inference_server: str,
    threshold: float | None = None,
    cloud_worker: str = "inference-server",
    cloud_port: int | None = None,
    template: Path = TEMPLATE,
) -> list[dict[str, Any]]:
    """The template's documents, ready to apply for ``out_dir``.

    Parameters
    ----------
    out_dir
        The data directory ``prepare.py`` wrote (absolute).
    python
        The interpreter the workers run with (has ``sedna`` installed).
    inference_server
        Absolute path of the ``sedna-inference`` console script.
    threshold
        ``threshold_cross_entropy`` of the CrossEntropy rule; None keeps the template's.
    cloud_worker
        One of :data:`CLOUD_WORKERS`.
    cloud_port
        Pin the big model's port (``BIG_MODEL_BIND_PORT`` in the cloud worker's env, which the
        controller then gives the edge as ``BIG_MODEL_PORT``); None lets the controller pick.
    template
        The template file.

    Returns
    -------
    list
        The documents (Models, Dataset, JointInferenceService).

    Raises
    ------
    ValueError
        An unknown ``cloud_worker``, or a template without a JointInferenceService.
    """
    if cloud_worker not in CLOUD_WORKERS:
        raise ValueError(f"cloud worker must be one of {', '.join(CLOUD_WORKERS)}")
    raw = [d for d in yaml.safe_load_all(template.read_text()) if d]
    docs: list[dict[str, Any]] = _replace_root(raw, str(out_dir))
    spec = _service(docs)["spec"]
    edge, cloud = _container(spec["edgeWorker"]), _container(spec["cloudWorker"])
    for container in (edge, cloud):
        command = container.get("command") or []
        if command[:1] == ["python3"]:
            container["command"] = [python, *command[1:]]
    if threshold is not None:
        spec["edgeWorker"]["hardExampleMining"] = {
            "name": "CrossEntropy",
            "parameters": [{"key": "threshold_cross_entropy", "value": f"{threshold:g}"}],
        }
    if cloud_port is not None:
        _set_env(cloud, "BIG_MODEL_BIND_PORT", str(cloud_port))
    if cloud_worker == "script":
        cloud["command"] = [python, "cloud_worker.py"]
        cloud.pop("args", None)
    else:
        cloud["args"] = [
            arg.replace("exec sedna-inference ", f"exec {shlex.quote(inference_server)} ", 1)
            for arg in cloud.get("args") or []
        ]
    return docs


def dump(docs: list[dict[str, Any]]) -> str:
    """The documents as one YAML stream."""
    return yaml.safe_dump_all(docs, sort_keys=False, width=100)
