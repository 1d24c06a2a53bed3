"""Reading manifests the way kubectl does, keeping the line of every field.

PyYAML implements YAML 1.1 to the letter, kubectl's parser (go-yaml) does not: PyYAML reads
``end: 20:00`` as the base-60 integer 1200 and ``2024-01-01`` as a date, where kubectl sends
the strings ``"20:00"`` and ``"2024-01-01"``. Upstream's own examples rely on kubectl's reading
(``timer: {start: 02:00, end: 20:00}``), so the loader here drops those two YAML 1.1 rules.
It also rejects duplicate keys, which PyYAML silently resolves to the last value.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import ConstructorError

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "DocPath",
    "DocumentTooComplexError",
    "LoadedDocument",
    "check_complexity",
    "load_documents",
]

DocPath = tuple[str | int, ...]
"""A location inside a document: keys and list indices from the root."""

_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        # Merge keys (<<) legitimately repeat keys; only plain mappings are checked.
        if not any(key.tag == _MERGE_TAG for key, _ in node.value):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, Hashable) and key in seen:
                    raise ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f'found duplicate key "{key}"',
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in {_INT_TAG, _FLOAT_TAG, _TIMESTAMP_TAG}]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# YAML 1.1 numbers without the base-60 forms (go-yaml has none); exponents without a dot are
# numbers too, as in go-yaml.
_Loader.add_implicit_resolver(
    _INT_TAG,
    re.compile(
        r"""^(?:[-+]?0b[0-1_]+
        |[-+]?0[0-7_]+
        |[-+]?(?:0|[1-9][0-9_]*)
        |[-+]?0x[0-9a-fA-F_]+)$""",
        re.X,
    ),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
        |\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


@dataclass(frozen=True)
class LoadedDocument:
    """One document of a YAML stream, or the error that stopped reading it.

    Parameters
    ----------
    index
        1-based position of the document in the stream.
    line
        1-based line where the document starts.
    data
        The parsed document (``None`` when ``error`` is set or the document is empty).
    error
        A readable parse error with its line, or ``None``.
    lines
        Line of every key and list item, by path from the document root.
    """

    index: int
    line: int
    data: Any = None
    error: str | None = None
    lines: dict[DocPath, int] = field(default_factory=dict, compare=False, repr=False)


def _describe(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        context = f" {exc.context}" if exc.context and exc.problem else ""
        return f"invalid YAML: {problem}{context}{where}"
    return f"invalid YAML: {exc}"


MAX_DEPTH = 100
"""Deepest nesting accepted; real manifests stay well under 20."""
MAX_NODES = 200_000
"""Most values accepted in one document, counting each use of a YAML alias again."""


class DocumentTooComplexError(ValueError):
    """A document nests too deeply or expands too far (YAML alias bombs, recursive aliases)."""


def _record_lines(root: yaml.Node) -> dict[DocPath, int]:
    # Iterative, bounded walk: later steps (pruning, validation) walk the same expanded tree,
    # so bounding it here keeps hostile documents from exhausting the stack or the CPU.
    out: dict[DocPath, int] = {}
    stack: list[tuple[yaml.Node, DocPath, int]] = [(root, (), root.start_mark.line + 1)]
    visited = 0
    while stack:
        node, path, line = stack.pop()
        visited += 1
        if visited > MAX_NODES:
            raise DocumentTooComplexError(f"document has more than {MAX_NODES} values")
        if len(path) > MAX_DEPTH:
            raise DocumentTooComplexError(f"document nests deeper than {MAX_DEPTH} levels")
        out.setdefault(path, line)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    stack.append(
                        (value_node, (*path, key_node.value), key_node.start_mark.line + 1)
                    )
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                stack.append((item, (*path, index), item.start_mark.line + 1))
    return out


def check_complexity(data: Any) -> None:
    """Raise if parsed data (from JSON, say) nests or expands beyond the limits.

    Parameters
    ----------
    data
        A parsed document.

    Raises
    ------
    DocumentTooComplexError
        When the data is deeper than ``MAX_DEPTH`` or has more than ``MAX_NODES`` values.
    """
    stack: list[tuple[Any, int]] = [(data, 0)]
    visited = 0
    while stack:
        value, depth = stack.pop()
        visited += 1
        if visited > MAX_NODES:
            raise DocumentTooComplexError(f"document has more than {MAX_NODES} values")
        if depth > MAX_DEPTH:
            raise DocumentTooComplexError(f"document nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def load_documents(text: str) -> Iterator[LoadedDocument]:
    """Parse a multi-document YAML stream, one document at a time.

    A syntax error ends the stream (the parser cannot resynchronise); it is yielded as a
    document with ``error`` set, after every document read before it. A document that
    parses but cannot be built (a duplicate key) is reported and reading goes on.

    Parameters
    ----------
    text
        The YAML (or JSON) text.

    Yields
    ------
    LoadedDocument
        Each non-empty document, in order.
    """
    loader = _Loader(text)
    index = 0
    try:
        while True:
            try:
                if not loader.check_node():
                    return
                node = loader.get_node()
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                yield LoadedDocument(
                    index=index + 1, line=mark.line + 1 if mark else 1, error=_describe(exc)
                )
                return
            except RecursionError:
                # PyYAML composes recursively; the parser cannot resume after this either.
                yield LoadedDocument(
                    index=index + 1, line=1, error="invalid document: it nests too deeply"
                )
                return
            index += 1
            if node is None:
                continue
            line = node.start_mark.line + 1
            try:
                lines = _record_lines(node)
                data = loader.construct_document(node)
            except (yaml.YAMLError, DocumentTooComplexError, RecursionError) as exc:
                # construct_document leaves its caches behind when it fails midway.
                loader.constructed_objects = {}
                loader.recursive_objects = {}
                loader.state_generators = []
                if isinstance(exc, yaml.YAMLError):
                    message = _describe(exc)
                elif isinstance(exc, DocumentTooComplexError):
                    message = f"invalid document: {exc}"
                else:
                    message = "invalid document: it nests too deeply"
                yield LoadedDocument(index=index, line=line, error=message)
                continue
            if data is None:
                continue
            yield LoadedDocument(index=index, line=line, data=data, lines=lines)
    finally:
        loader.dispose()
