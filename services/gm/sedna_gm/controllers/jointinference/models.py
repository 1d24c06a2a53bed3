"""The Models a JointInferenceService's workers load, and the S3 Secrets those Models name.

A worker's Model must exist in the service's namespace with a usable ``spec.url`` (an absolute
host path, ``file://``, ``s3://`` or ``http(s)://``); when the Model has a ``credentialName``
the Secret must resolve with both keys (as for Datasets). Problems come back as
:class:`~.status.ModelProblem` entries naming the Model, the spec field that refers to it and
what is wrong (never a key value).
"""

from __future__ import annotations

from collections.abc import Mapping

from sedna.resources.objects import ObjectKey, ResourceObject
from sedna_gm.controllers.dataset import (
    REASON_INVALID_SECRET,
    REASON_SECRET_NOT_FOUND,
    REASON_SECRET_UNREADABLE,
)
from sedna_gm.controllers.informer import Informer
from sedna_gm.controllers.jointinference.status import ModelProblem
from sedna_gm.controllers.jointinference.workers import (
    CLOUD,
    EDGE,
    ResolvedModel,
    spec_key,
    spec_path,
)
from sedna_gm.controllers.workers_common import url_problem
from sedna_gm.workloads.port import WorkloadError
from sedna_gm.workloads.secret_files import InvalidSecretError
from sedna_gm.workloads.storage import (
    ACCESS_KEY_ENV,
    SECRET_KEY_ENV,
    S3Secret,
    SecretNotFoundError,
    SecretSource,
)

__all__ = [
    "MODEL_KIND",
    "REASON_INVALID_MODEL",
    "REASON_MODEL_NOT_FOUND",
    "ModelSecretError",
    "model_name",
    "resolve_models",
    "resolve_s3_secret",
]

MODEL_KIND = "Model"
REASON_MODEL_NOT_FOUND = "ModelNotFound"
REASON_INVALID_MODEL = "InvalidModel"


class ModelSecretError(Exception):
    """A Model's ``credentialName`` cannot be used; ``reason`` is the condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def model_name(obj: ResourceObject, role: str) -> str:
    """The Model name ``role``'s worker refers to ("" when absent)."""
    worker = obj.spec.get(spec_key(role))
    model = worker.get("model") if isinstance(worker, Mapping) else None
    return str(model.get("name", "")) if isinstance(model, Mapping) else ""


async def resolve_s3_secret(
    secrets: SecretSource | None, namespace: str, secret_name: str
) -> S3Secret:
    """Read the S3 Secret ``namespace/secret_name``; both keys must be present.

    Raises
    ------
    ModelSecretError
        Missing (``SecretNotFound``), incomplete (``InvalidSecret``) or unreadable
        (``SecretUnreadable``).
    """
    what = f"secret {namespace}/{secret_name}"
    if secrets is None:
        raise ModelSecretError(
            REASON_SECRET_NOT_FOUND, f"{what}: the GlobalManager has no secret source configured"
        )
    try:
        secret = await secrets.get_s3_secret(namespace, secret_name)
    except SecretNotFoundError:
        raise ModelSecretError(REASON_SECRET_NOT_FOUND, f"{what} not found") from None
    except WorkloadError as exc:
        invalid = isinstance(exc, InvalidSecretError)
        reason = REASON_INVALID_SECRET if invalid else REASON_SECRET_UNREADABLE
        text = str(exc)
        raise ModelSecretError(reason, text if secret_name in text else f"{what}: {text}") from None
    missing = [
        key
        for key, value in (
            (ACCESS_KEY_ENV, secret.access_key_id),
            (SECRET_KEY_ENV, secret.secret_access_key),
        )
        if not value
    ]
    if missing:
        raise ModelSecretError(
            REASON_INVALID_SECRET, f"{what}: data {' and '.join(missing)} missing or empty"
        )
    return secret


async def resolve_models(
    obj: ResourceObject, models: Informer, secrets: SecretSource | None
) -> tuple[dict[str, ResolvedModel], list[ModelProblem]]:
    """Both workers' Models (role -> model), or the problems that stop the service.

    Parameters
    ----------
    obj
        The JointInferenceService.
    models
        The Model informer.
    secrets
        Where ``credentialName`` Secrets are read.
    """
    resolved: dict[str, ResolvedModel] = {}
    problems: list[ModelProblem] = []
    for role in (CLOUD, EDGE):
        name = model_name(obj, role)
        label = f"Model {obj.namespace}/{name} ({spec_path(role)}.model.name)"
        model = models.get(ObjectKey(MODEL_KIND, obj.namespace, name))
        if model is None or model.deletion_timestamp is not None:
            problems.append(ModelProblem(role, REASON_MODEL_NOT_FOUND, f"{label} not found"))
            continue
        url = str(model.spec.get("url") or "")
        problem = url_problem(url)
        if problem:
            problems.append(ModelProblem(role, REASON_INVALID_MODEL, f"{label} {problem}"))
            continue
        secret: S3Secret | None = None
        secret_name = str(model.spec.get("credentialName") or "")
        if secret_name:
            try:
                secret = await resolve_s3_secret(secrets, obj.namespace, secret_name)
            except ModelSecretError as exc:
                message = f"{label} spec.credentialName: {exc}"
                problems.append(ModelProblem(role, exc.reason, message))
                continue
        model_format = str(model.spec.get("format") or "").strip()
        resolved[role] = ResolvedModel(name, url, secret, model_format)
    return resolved, problems
