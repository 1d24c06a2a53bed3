"""Builders of JointInferenceServices and Models for the joint-inference controller tests."""

from __future__ import annotations

from typing import Any

from sedna.resources.objects import ResourceObject

CLOUD_COMMAND = ["python3", "-c", "print('cloud')"]
EDGE_COMMAND = ["python3", "-c", "print('edge')"]


def template(
    command: list[str] | None,
    *,
    node: str = "",
    env: list[dict[str, Any]] | None = None,
    **pod_spec: Any,
) -> dict[str, Any]:
    """A pod template with one container (``command`` None: none, as on Kubernetes)."""
    container: dict[str, Any] = {"name": "worker", "image": "example/worker:v1"}
    if command is not None:
        container["command"] = command
    if env:
        container["env"] = env
    spec: dict[str, Any] = {"containers": [container], **pod_spec}
    if node:
        spec["nodeName"] = node
    return {"spec": spec}


def service(
    name: str = "ji",
    namespace: str = "default",
    *,
    cloud_node: str = "cloud",
    edge_node: str = "edge-1",
    cloud_model: str = "big",
    edge_model: str = "little",
    cloud_template: dict[str, Any] | None = None,
    edge_template: dict[str, Any] | None = None,
    hem: str = "IBT",
    parameters: list[dict[str, str]] | None = None,
    uid: str = "",
) -> ResourceObject:
    """A JointInferenceService with a cloud and an edge worker."""
    if parameters is None:
        parameters = [{"key": "threshold_img", "value": "0.9"}]
    mining: dict[str, Any] = {"name": hem}
    if parameters:
        mining["parameters"] = parameters
    return ResourceObject(
        kind="JointInferenceService",
        name=name,
        namespace=namespace,
        uid=uid,
        spec={
            "edgeWorker": {
                "model": {"name": edge_model},
                "hardExampleMining": mining,
                "template": edge_template or template(EDGE_COMMAND, node=edge_node),
            },
            "cloudWorker": {
                "model": {"name": cloud_model},
                "template": cloud_template or template(CLOUD_COMMAND, node=cloud_node),
            },
        },
    )


def model(
    name: str, url: str, *, namespace: str = "default", credential: str = ""
) -> ResourceObject:
    """A Model."""
    spec: dict[str, Any] = {"url": url, "format": "onnx"}
    if credential:
        spec["credentialName"] = credential
    return ResourceObject(kind="Model", name=name, namespace=namespace, spec=spec)


def env_of(spec: Any) -> dict[str, str]:
    """The environment of a WorkerSpec (or of a ``Worker`` object's spec dict)."""
    items = spec.env if hasattr(spec, "env") else spec.get("env") or []
    return {
        (item.name if hasattr(item, "name") else item["name"]): (
            item.value if hasattr(item, "value") else item.get("value", "")
        )
        for item in items
    }
