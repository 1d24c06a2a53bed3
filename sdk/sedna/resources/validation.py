"""Offline validation of Sedna manifests: files, directories or stdin, many documents each.

Every ``sedna.io/v1alpha1`` document is checked the way the API server would check it with
the CRDs in ``crds/`` installed: known kind, a valid ``metadata.name``, and the spec against
the resource model (required fields, types, enums, ranges, patterns and the CEL rules). Each
problem is reported with its file, its document number and the kubectl-style path of the
field at fault (``spec.trainingWorkers[1].dataset``). Documents of other groups (a Secret in
the same file) are reported as skipped.

Two behaviours mirror the API server on purpose: ``null`` values are dropped before the
check (so ``nodeName:`` with no value reads as a missing field), and ``status`` is ignored (the
server ignores it on create).
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO, get_args, get_origin

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from sedna.resources._base import API_VERSION, GROUP, VERSION, SednaObject
from sedna.resources._yaml import (
    DocPath,
    DocumentTooComplexError,
    check_complexity,
    load_documents,
)
from sedna.resources.registry import UnknownKindError, get_kind

__all__ = [
    "MANIFEST_SUFFIXES",
    "DocumentResult",
    "FieldError",
    "ManifestError",
    "ValidationReport",
    "find_manifest_files",
    "prune_nulls",
    "validate_object",
    "validate_paths",
    "validate_text",
]

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
"""File suffixes read when a directory is given."""

STDIN = "-"
_STDIN_LABEL = "<stdin>"

DocumentStatus = Literal["valid", "invalid", "skipped"]

_SIMPLE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "list_type": "an array",
}


@dataclass(frozen=True)
class FieldError:
    """One problem in a document.

    Parameters
    ----------
    path
        kubectl-style path of the field at fault (``spec.edgeWorker.hardExampleMining.name``);
        empty for problems with the document as a whole.
    message
        What is wrong, in the API server's wording where there is one.
    line
        1-based line of the field (or of its closest parent present in the file), if known.
    """

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready form."""
        return {"path": self.path, "message": self.message, "line": self.line}


@dataclass(frozen=True)
class ManifestError:
    """A :class:`FieldError` together with where it was found.

    Parameters
    ----------
    source
        File the document came from (``<stdin>`` for standard input).
    document
        1-based position of the document in the file (0 for problems with the file itself).
    path
        kubectl-style field path.
    message
        What is wrong.
    line
        1-based line in the file, if known.
    item
        Index inside a ``kind: List`` document, if the error is in one of its items.
    """

    source: str
    document: int
    path: str
    message: str
    line: int | None = None
    item: int | None = None

    def __str__(self) -> str:
        where = f"{self.source}"
        if self.document:
            where += f" #{self.document}" + (
                f" items[{self.item}]" if self.item is not None else ""
            )
        if self.line:
            where += f" (line {self.line})"
        field_part = f"{self.path}: " if self.path else ""
        return f"{where}: {field_part}{self.message}"


@dataclass(frozen=True)
class DocumentResult:
    """The outcome for one document.

    Parameters
    ----------
    source
        File the document came from (``<stdin>`` for standard input).
    document
        1-based position of the document in the file; 0 when the problem is the file itself.
    status
        ``valid``, ``invalid`` or ``skipped`` (not a Sedna object, or nothing to check).
    api_version, kind, name, namespace
        What the document says it is, as far as it could be read.
    item
        Index inside a ``kind: List`` document, for its items.
    line
        1-based line where the document starts.
    errors
        The problems; empty unless ``status`` is ``invalid``.
    warnings
        Advice that does not make the document invalid.
    reason
        Why the document was skipped.
    obj
        The parsed object, when the document is a valid Sedna object.
    """

    source: str
    document: int
    status: DocumentStatus
    api_version: str | None = None
    kind: str | None = None
    name: str | None = None
    namespace: str | None = None
    item: int | None = None
    line: int | None = None
    errors: tuple[FieldError, ...] = ()
    warnings: tuple[FieldError, ...] = ()
    reason: str | None = None
    obj: SednaObject[Any, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        """Whether the document passed (valid or skipped)."""
        return self.status != "invalid"

    @property
    def label(self) -> str:
        """``Kind/name`` of the document, as far as known."""
        return f"{self.kind or '?'}/{self.name or '?'}"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready form."""
        return {
            "source": self.source,
            "document": self.document,
            "item": self.item,
            "line": self.line,
            "status": self.status,
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
            "reason": self.reason,
            "errors": [error.to_dict() for error in self.errors],
            "warnings": [warning.to_dict() for warning in self.warnings],
        }


@dataclass(frozen=True)
class ValidationReport:
    """The outcome for everything that was validated.

    Parameters
    ----------
    results
        One entry per document (and per file that could not be read), in input order.
    """

    results: tuple[DocumentResult, ...]

    @property
    def ok(self) -> bool:
        """Whether nothing was invalid."""
        return all(result.ok for result in self.results)

    @property
    def errors(self) -> list[ManifestError]:
        """Every problem found, each with its file, document and field path."""
        return [
            ManifestError(
                source=result.source,
                document=result.document,
                path=error.path,
                message=error.message,
                line=error.line,
                item=result.item,
            )
            for result in self.results
            for error in result.errors
        ]

    def count(self, status: DocumentStatus) -> int:
        """Return how many documents have the given status."""
        return sum(1 for result in self.results if result.status == status)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready form."""
        return {
            "ok": self.ok,
            "valid": self.count("valid"),
            "invalid": self.count("invalid"),
            "skipped": self.count("skipped"),
            "documents": [result.to_dict() for result in self.results],
        }


# --- field paths and messages -----------------------------------------------------------------


def _format_path(loc: Sequence[str | int]) -> str:
    path = ""
    for segment in loc:
        if isinstance(segment, int):
            path += f"[{segment}]"
        elif _SIMPLE_KEY.match(segment):
            path += f".{segment}" if path else segment
        else:
            # Keys such as label names contain dots and slashes: bracket them as kubectl does.
            path += f"[{segment}]"
    return path


def _parse_relative_path(relative: str) -> list[str | int]:
    """Split ``.parameters[1].key`` into ``["parameters", 1, "key"]``."""
    parts: list[str | int] = []
    for name, index in re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]", relative):
        parts.append(name if name else int(index))
    return parts


def _show(value: Any) -> str:
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + '..."'


def _num(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _unwrap(annotation: Any) -> Any:
    """Strip Optional and list from an annotation to reach the model it holds."""
    while (origin := get_origin(annotation)) is not None:
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if origin is dict or not args:
            return None
        annotation = args[0]
    return annotation


def _model_at(root: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    current: Any = root
    for segment in loc:
        if isinstance(segment, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        for name, info in current.model_fields.items():
            if segment in (info.alias, name):
                current = _unwrap(info.annotation)
                break
        else:
            return None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def _unknown_field_message(root: type[BaseModel], loc: Sequence[str | int]) -> str:
    key = str(loc[-1])
    message = f'unknown field "{key}"'
    parent = _model_at(root, loc[:-1])
    if parent is not None:
        known = [info.alias or name for name, info in parent.model_fields.items()]
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        if not close:
            # Case and separators: deviceSocVersions vs device_soc_versions, nodename vs nodeName.
            folded = {name.lower().replace("_", ""): name for name in known}
            wanted = key.lower().replace("_", "").replace("-", "")
            close = [folded[wanted]] if wanted in folded else []
        if close:
            message += f' (did you mean "{close[0]}"?)'
    return message


def _message(error: Mapping[str, Any], root: type[BaseModel], loc: Sequence[str | int]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if "message" in ctx:
        return str(ctx["message"])
    if kind == "missing":
        return "Required value"
    if kind == "extra_forbidden":
        return _unknown_field_message(root, loc)
    if kind == "literal_error":
        supported = ", ".join(f'"{v}"' for v in re.findall(r"'([^']*)'", str(ctx["expected"])))
        return f"Unsupported value: {_show(value)}: supported values: {supported}"
    if kind in _TYPE_NAMES:
        return f"Invalid value: {_show(value)}: must be {_TYPE_NAMES[kind]}"
    if kind == "too_short":
        count = ctx.get("min_length", 1)
        return f"Required value: must have at least {count} item{'s' if count != 1 else ''}"
    if kind == "string_too_short":
        return "Required value: must not be empty"
    if kind == "greater_than_equal":
        return f"Invalid value: {_show(value)}: must be greater than or equal to {_num(ctx['ge'])}"
    if kind == "less_than_equal":
        return f"Invalid value: {_show(value)}: must be less than or equal to {_num(ctx['le'])}"
    text = str(error.get("msg", "invalid"))
    return f"Invalid value: {_show(value)}: {text.replace('Input should be', 'must be')}"


def _line_for(lines: Mapping[DocPath, int], loc: Sequence[str | int]) -> int | None:
    # A missing field has no line of its own: point at the closest parent that exists.
    for end in range(len(loc), -1, -1):
        line = lines.get(tuple(loc[:end]))
        if line is not None:
            return line
    return None


def _field_errors(
    exc: PydanticValidationError,
    model: type[BaseModel],
    lines: Mapping[DocPath, int],
    prefix: DocPath,
) -> list[FieldError]:
    errors: list[FieldError] = []
    for error in exc.errors(include_url=False):
        loc: list[str | int] = list(error["loc"])
        ctx = error.get("ctx") or {}
        relative = str(ctx.get("field_path", ""))
        if relative:
            loc += _parse_relative_path(relative)
        full = (*prefix, *loc)
        errors.append(
            FieldError(
                path=_format_path(loc),
                message=_message(error, model, loc),
                line=_line_for(lines, full),
            )
        )
    return errors


def prune_nulls(value: Any) -> Any:
    """Return ``value`` without the null entries of its mappings, at every depth.

    The API server drops nulls before storing, and validation reads them as absent too.
    """
    if isinstance(value, Mapping):
        return {key: prune_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [prune_nulls(item) for item in value]
    return value


# --- documents --------------------------------------------------------------------------------


def validate_object(
    data: Any,
    *,
    source: str = "<object>",
    document: int = 1,
    line: int | None = None,
    lines: Mapping[DocPath, int] | None = None,
    item: int | None = None,
) -> DocumentResult:
    """Validate one parsed document.

    Parameters
    ----------
    data
        The document, as parsed from YAML or JSON.
    source
        File name to report.
    document
        1-based document number to report.
    line
        Line where the document starts, if known.
    lines
        Line of each key by path from the document root, if known (see ``load_documents``).
    item
        Index inside a ``kind: List`` document, when validating one of its items.

    Returns
    -------
    DocumentResult
        ``valid`` (with the parsed object), ``invalid`` (with its errors) or ``skipped``.
    """
    lines = lines or {}
    prefix: DocPath = ("items", item) if item is not None else ()

    def result(status: DocumentStatus, **kwargs: Any) -> DocumentResult:
        return DocumentResult(
            source=source, document=document, status=status, item=item, line=line, **kwargs
        )

    if not isinstance(data, Mapping):
        return result(
            "invalid", errors=(FieldError("", f"document is {_show(data)}, not an object"),)
        )
    api_version = data.get("apiVersion")
    kind = data.get("kind")
    metadata = data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    namespace = metadata.get("namespace") if isinstance(metadata, Mapping) else None
    ident: dict[str, Any] = {
        "api_version": api_version if isinstance(api_version, str) else None,
        "kind": kind if isinstance(kind, str) else None,
        "name": name if isinstance(name, str) else None,
        "namespace": namespace if isinstance(namespace, str) else None,
    }

    if not isinstance(api_version, str) or not api_version or not isinstance(kind, str) or not kind:
        missing = [
            FieldError(key, "Required value", _line_for(lines, prefix))
            for key, value in (("apiVersion", api_version), ("kind", kind))
            if not isinstance(value, str) or not value
        ]
        return result("invalid", errors=tuple(missing), **ident)

    if kind == "List" and isinstance(data.get("items"), list):
        # A `kubectl get -o yaml` dump: the caller expands the items.
        return result("skipped", reason="List (items are checked one by one)", **ident)

    group, _, version = api_version.rpartition("/")
    if group != GROUP:
        return result("skipped", reason=f"{api_version} {kind} is not a Sedna object", **ident)
    if version != VERSION:
        message = f'Unsupported value: "{api_version}": supported values: "{API_VERSION}"'
        return result(
            "invalid",
            errors=(FieldError("apiVersion", message, _line_for(lines, (*prefix, "apiVersion"))),),
            **ident,
        )
    try:
        info = get_kind(kind)
    except UnknownKindError as exc:
        hint = f' (did you mean "{get_kind(exc.suggestions[0]).kind}"?)' if exc.suggestions else ""
        message = f'Unsupported value: "{kind}": not a kind of {API_VERSION}{hint}'
        return result(
            "invalid",
            errors=(FieldError("kind", message, _line_for(lines, (*prefix, "kind"))),),
            **ident,
        )
    if kind != info.kind:
        # get_kind is lenient (plural, short names, any case); a manifest must use the kind.
        message = f'Unsupported value: "{kind}": did you mean "{info.kind}"?'
        return result(
            "invalid",
            errors=(FieldError("kind", message, _line_for(lines, (*prefix, "kind"))),),
            **ident,
        )

    body = prune_nulls({key: value for key, value in data.items() if key != "status"})
    try:
        obj = info.model.model_validate(body, by_alias=True, by_name=False)
    except PydanticValidationError as exc:
        errors = _field_errors(exc, info.model, lines, prefix)
        return result("invalid", errors=tuple(errors), **ident)
    warnings = tuple(
        FieldError(
            f"spec.{path}" if path else "spec",
            message,
            _line_for(lines, (*prefix, "spec", *_parse_relative_path(f".{path}"))),
        )
        for path, message in obj.spec.lint()
    )
    return result("valid", warnings=warnings, obj=obj, **ident)


def _looks_like_json(text: str) -> bool:
    return text.lstrip()[:1] in ("{", "[")


def validate_text(text: str, source: str = _STDIN_LABEL) -> list[DocumentResult]:
    """Validate every document of a YAML (or JSON) text.

    Parameters
    ----------
    text
        The manifests; YAML documents separated by ``---``, or one JSON object.
    source
        File name to report.

    Returns
    -------
    list of DocumentResult
        One result per document (``kind: List`` documents are expanded into their items).
        A text with no documents gives one ``skipped`` result.
    """
    if _looks_like_json(text):
        try:
            parsed = json.loads(text)
            check_complexity(parsed)
        except (json.JSONDecodeError, RecursionError):
            pass  # JSON-like YAML (a flow mapping), or too deep: the YAML reader reports it
        except DocumentTooComplexError as exc:
            error = FieldError("", f"invalid document: {exc}", 1)
            return [
                DocumentResult(source=source, document=1, status="invalid", line=1, errors=(error,))
            ]
        else:
            return _expand(parsed, source=source, document=1, line=1, lines={})

    results: list[DocumentResult] = []
    for loaded in load_documents(text):
        if loaded.error is not None:
            results.append(
                DocumentResult(
                    source=source,
                    document=loaded.index,
                    status="invalid",
                    line=loaded.line,
                    errors=(FieldError("", loaded.error, loaded.line),),
                )
            )
            continue
        results.extend(
            _expand(
                loaded.data,
                source=source,
                document=loaded.index,
                line=loaded.line,
                lines=loaded.lines,
            )
        )
    if not results:
        results.append(
            DocumentResult(source=source, document=0, status="skipped", reason="no documents")
        )
    return results


def _expand(
    data: Any, *, source: str, document: int, line: int, lines: Mapping[DocPath, int]
) -> list[DocumentResult]:
    head = validate_object(data, source=source, document=document, line=line, lines=lines)
    if not (head.status == "skipped" and head.kind == "List" and isinstance(data, Mapping)):
        return [head]
    return [
        validate_object(
            item,
            source=source,
            document=document,
            line=lines.get(("items", index), line),
            lines={path[2:]: n for path, n in lines.items() if path[:2] == ("items", index)},
            item=index,
        )
        for index, item in enumerate(data["items"])
    ]


def find_manifest_files(directory: Path) -> list[Path]:
    """Return the manifest files under a directory, recursively, in a stable order.

    Hidden files and folders (``.git``, ``.venv`` ...) are left out.

    Parameters
    ----------
    directory
        The folder to search.

    Returns
    -------
    list of Path
        Files ending in .yaml, .yml or .json, sorted by path.
    """
    return sorted(
        path
        for path in directory.rglob("*")
        if path.is_file()
        and path.suffix.lower() in MANIFEST_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )


def _file_error(source: str, message: str) -> DocumentResult:
    return DocumentResult(
        source=source, document=0, status="invalid", errors=(FieldError("", message),)
    )


def _validate_file(path: Path) -> list[DocumentResult]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return [_file_error(str(path), "not a UTF-8 text file")]
    except OSError as exc:
        return [_file_error(str(path), f"cannot read: {exc.strerror or exc}")]
    return validate_text(text, source=str(path))


def validate_paths(paths: Iterable[str | Path], *, stdin: TextIO | None = None) -> ValidationReport:
    """Validate manifests from files, directories (recursively) and standard input.

    Parameters
    ----------
    paths
        Files, directories, or ``-`` for standard input.
    stdin
        Stream read for ``-``; ``sys.stdin`` by default.

    Returns
    -------
    ValidationReport
        Every document's result. A path that does not exist, a directory without manifests
        and an unreadable file are reported as invalid results with document number 0.
    """
    results: list[DocumentResult] = []
    for raw in paths:
        if str(raw) == STDIN:
            stream = stdin if stdin is not None else sys.stdin
            results.extend(validate_text(stream.read(), source=_STDIN_LABEL))
            continue
        path = Path(raw)
        if path.is_dir():
            files = find_manifest_files(path)
            if not files:
                results.append(_file_error(str(path), "no .yaml, .yml or .json files found"))
            for file in files:
                results.extend(_validate_file(file))
        elif path.exists():
            results.extend(_validate_file(path))
        else:
            results.append(_file_error(str(path), "no such file or directory"))
    return ValidationReport(tuple(results))
