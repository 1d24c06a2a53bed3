"""Reading manifests for ``sedna apply`` and ``sedna delete -f``: each document, validated."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sedna.resources._yaml import DocumentTooComplexError, check_complexity, load_documents
from sedna.resources.validation import (
    DocumentResult,
    FieldError,
    find_manifest_files,
    validate_object,
)

__all__ = ["Document", "read_documents"]


@dataclass(frozen=True)
class Document:
    """One document with its validation result; ``data`` is None when it could not be read."""

    result: DocumentResult
    data: dict[str, Any] | None

    @property
    def where(self) -> str:
        """``file #2`` (``items[i]`` for List items) for messages."""
        text = f"{self.result.source} #{self.result.document}"
        if self.result.item is not None:
            text += f" items[{self.result.item}]"
        return text


def _invalid(source: str, document: int, message: str, line: int | None = None) -> Document:
    error = FieldError("", message, line)
    result = DocumentResult(
        source=source, document=document, status="invalid", line=line, errors=(error,)
    )
    return Document(result, None)


def _expand(
    data: Any, source: str, index: int, line: int, lines: Mapping[Any, int]
) -> list[Document]:
    head = validate_object(data, source=source, document=index, line=line, lines=lines)
    if head.status == "skipped" and head.kind == "List" and isinstance(data, Mapping):
        out = []
        for i, item in enumerate(data["items"]):
            sub = {path[2:]: n for path, n in lines.items() if path[:2] == ("items", i)}
            result = validate_object(
                item, source=source, document=index, line=line, lines=sub, item=i
            )
            out.append(Document(result, item if isinstance(item, dict) else None))
        return out
    return [Document(head, data if isinstance(data, dict) else None)]


def _read_text(text: str, source: str) -> list[Document]:
    if text.lstrip()[:1] in ("{", "["):
        try:
            parsed = json.loads(text)
            check_complexity(parsed)
        except (json.JSONDecodeError, RecursionError):
            pass  # JSON-looking YAML: the YAML reader reports the problem
        except DocumentTooComplexError as exc:
            return [_invalid(source, 1, f"invalid document: {exc}", 1)]
        else:
            return _expand(parsed, source, 1, 1, {})
    docs: list[Document] = []
    for loaded in load_documents(text):
        if loaded.error is not None:
            docs.append(_invalid(source, loaded.index, loaded.error, loaded.line))
        elif loaded.data is not None:
            docs.extend(_expand(loaded.data, source, loaded.index, loaded.line, loaded.lines))
    return docs


def _read_file(path: Path) -> list[Document]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return [_invalid(str(path), 0, "not a UTF-8 text file")]
    except OSError as exc:
        return [_invalid(str(path), 0, f"cannot read: {exc.strerror or exc}")]
    return _read_text(text, str(path))


def read_documents(paths: Iterable[str | Path]) -> list[Document]:
    """Read and validate every document of files, directories (recursively) and ``-``.

    Returns
    -------
    list of Document
        In input order; unreadable paths and unparsable documents come back invalid.
    """
    docs: list[Document] = []
    for raw in paths:
        if str(raw) == "-":
            docs.extend(_read_text(sys.stdin.read(), "<stdin>"))
            continue
        path = Path(raw)
        if path.is_dir():
            files = find_manifest_files(path)
            if not files:
                docs.append(_invalid(str(path), 0, "no .yaml, .yml or .json files found"))
            for file in files:
                docs.extend(_read_file(file))
        elif path.exists():
            docs.extend(_read_file(path))
        else:
            docs.append(_invalid(str(path), 0, "no such file or directory"))
    return docs
