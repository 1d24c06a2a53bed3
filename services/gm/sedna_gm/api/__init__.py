"""GlobalManager's resource API: a transport-agnostic core and its gRPC servicer.

:class:`ResourceApi` (apply, get, list, watch, delete on any ``ResourceStore``) holds the
semantics; :class:`ResourceServicer` only decodes requests, calls it and maps its errors to gRPC
status codes (see :mod:`sedna_gm.api.resource_servicer`).
"""

from sedna_gm.api.apply import ApplyResult, apply_manifest, parse_manifest_json
from sedna_gm.api.errors import FieldViolation, ManifestInvalidError, RequestError
from sedna_gm.api.query import ListPage, resolve_kind
from sedna_gm.api.resource_servicer import (
    FIELD_VIOLATIONS_METADATA_KEY,
    ResourceServicer,
    add_resource_service,
)
from sedna_gm.api.resources import ResourceApi

__all__ = [
    "FIELD_VIOLATIONS_METADATA_KEY",
    "ApplyResult",
    "FieldViolation",
    "ListPage",
    "ManifestInvalidError",
    "RequestError",
    "ResourceApi",
    "ResourceServicer",
    "add_resource_service",
    "apply_manifest",
    "parse_manifest_json",
    "resolve_kind",
]
