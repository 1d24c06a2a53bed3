"""Apply: validate a manifest, then create the object or replace its spec, labels, annotations.

This is "server-side apply lite": the manifest is the whole desired object. Its ``spec``,
``metadata.labels`` and ``metadata.annotations`` replace the stored ones; ``status``,
finalizers and owner references (written by controllers) are kept; the store bumps
``generation`` exactly when the spec changes. An apply that changes nothing writes nothing, so
the ``resourceVersion`` stays the same (how a client tells "unchanged" from "configured").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sedna.resources.objects import DEFAULT_NAMESPACE, ResourceObject
from sedna.resources.validation import prune_nulls, validate_object
from sedna_gm.api.errors import FieldViolation, ManifestInvalidError, RequestError
from sedna_gm.store.errors import AlreadyExistsError, ConflictError, NotFoundError
from sedna_gm.store.port import ResourceStore

__all__ = ["MAX_APPLY_ATTEMPTS", "ApplyResult", "apply_manifest", "parse_manifest_json"]

MAX_APPLY_ATTEMPTS = 5
"""Read-modify-write attempts when a concurrent writer (a controller) bumps the version."""


@dataclass(frozen=True)
class ApplyResult:
    """What an apply did.

    Attributes
    ----------
    object
        The object as stored (or as it would be stored, for a dry run).
    created
        The object did not exist before.
    spec_changed
        The spec changed (the store incremented ``generation``); true on create.
    """

    object: ResourceObject
    created: bool
    spec_changed: bool


def parse_manifest_json(data: bytes) -> dict[str, Any]:
    """Decode ``ApplyRequest.manifest_json``.

    Raises
    ------
    RequestError
        Empty, not UTF-8, not JSON, or not a JSON object; the message names the problem and
        its position.
    """
    if not data.strip():
        raise RequestError.for_field("manifest_json", "Required value: the object as JSON")
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RequestError.for_field("manifest_json", f"not UTF-8: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise RequestError.for_field(
            "manifest_json",
            f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
        ) from None
    except RecursionError:
        raise RequestError.for_field("manifest_json", "nests too deeply") from None
    if not isinstance(value, dict):
        raise RequestError.for_field(
            "manifest_json", f"must be a JSON object, got {type(value).__name__}"
        )
    return value


def _label(manifest: Mapping[str, Any]) -> str:
    meta = manifest.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    kind = manifest.get("kind") or "object"
    name = meta.get("name") or "?"
    namespace = meta.get("namespace") or DEFAULT_NAMESPACE
    return f"{kind} {namespace}/{name}"


def validate_manifest(manifest: Mapping[str, Any]) -> ResourceObject:
    """Check a manifest as the API server would and build the object it describes.

    Parameters
    ----------
    manifest
        ``apiVersion``, ``kind``, ``metadata`` and ``spec`` of one Sedna object.

    Returns
    -------
    ResourceObject
        With empty server-managed fields; the namespace defaults to ``default``.

    Raises
    ------
    ManifestInvalidError
        Listing every field at fault, or saying that the document is not a Sedna object.
    """
    result = validate_object(dict(manifest), source="manifest")
    if result.status == "skipped":
        reason = result.reason or "not a Sedna object"
        raise ManifestInvalidError(
            _label(manifest),
            [FieldViolation("apiVersion", f"{reason}: only sedna.io/v1alpha1 kinds are served")],
        )
    if result.status == "invalid":
        raise ManifestInvalidError(
            _label(manifest), [FieldViolation(e.path, e.message) for e in result.errors]
        )
    return ResourceObject.from_manifest(prune_nulls(manifest))


async def apply_manifest(
    store: ResourceStore,
    manifest: Mapping[str, Any],
    *,
    dry_run: bool = False,
    expected_resource_version: str = "",
) -> ApplyResult:
    """Validate a manifest and create or update the object in ``store``.

    Parameters
    ----------
    store
        Where the object lives.
    manifest
        The whole object (``apiVersion``, ``kind``, ``metadata``, ``spec``).
    dry_run
        Validate and compute the result without writing.
    expected_resource_version
        When set, the object must exist with exactly this version.

    Returns
    -------
    ApplyResult
        The stored object, whether it was created and whether its spec changed.

    Raises
    ------
    ManifestInvalidError
        The manifest does not validate.
    NotFoundError
        ``expected_resource_version`` is set and the object does not exist.
    ConflictError
        ``expected_resource_version`` is stale, or concurrent writers kept winning.
    sedna_gm.store.errors.StoreError
        Anything else the store raises (e.g. ``StoreUnavailableError``).
    """
    desired = validate_manifest(manifest)
    for attempt in range(MAX_APPLY_ATTEMPTS):
        try:
            current = await store.get(desired.kind, desired.namespace, desired.name)
        except NotFoundError:
            if expected_resource_version:
                raise
            if dry_run:
                return ApplyResult(desired, created=True, spec_changed=True)
            try:
                created = await store.create(desired)
            except AlreadyExistsError:
                # Created concurrently: go round again and update it instead.
                if attempt == MAX_APPLY_ATTEMPTS - 1:
                    raise
                continue
            return ApplyResult(created, created=True, spec_changed=True)
        if expected_resource_version and current.resource_version != expected_resource_version:
            raise ConflictError(current.key, expected_resource_version, current.resource_version)
        spec_changed = current.spec != desired.spec
        if (
            not spec_changed
            and current.labels == desired.labels
            and current.annotations == desired.annotations
        ):
            return ApplyResult(current, created=False, spec_changed=False)
        updated = current.clone()
        updated.labels = dict(desired.labels)
        updated.annotations = dict(desired.annotations)
        updated.spec = desired.spec
        if dry_run:
            if spec_changed:
                updated.generation += 1
            return ApplyResult(updated, created=False, spec_changed=spec_changed)
        try:
            stored = await store.update(updated)
        except ConflictError:
            # A controller wrote in between: re-read and re-apply, unless the client pinned
            # the version (then the conflict is theirs to resolve).
            if expected_resource_version or attempt == MAX_APPLY_ATTEMPTS - 1:
                raise
            continue
        changed = stored.generation != current.generation
        return ApplyResult(stored, created=False, spec_changed=changed)
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover
