"""Just enough PromQL reading for the dashboard checks: metric names and their matchers.

Grafana variables are replaced first (:func:`expand`), so an expression can also be sent to a
real Prometheus (the scrape test does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Selector", "expand", "selectors"]

_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_MATCHER = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(\"(?:[^\"\\]|\\.)*\")\s*")
_VARIABLE = re.compile(r"\$\{?(\w+)\}?")
_INTERVALS = {"__rate_interval", "__interval", "__range"}


@dataclass(frozen=True)
class Selector:
    """One vector selector: the metric name and the label names it matches on."""

    metric: str
    labels: frozenset[str]


def expand(expr: str) -> str:
    """Replace Grafana's variables: intervals by ``5m``, template variables by ``.*``."""
    return _VARIABLE.sub(lambda m: "5m" if m.group(1) in _INTERVALS else ".*", expr)


def selectors(expr: str) -> list[Selector]:
    """The vector selectors of ``expr`` (each needs a metric name: dashboards name them).

    Raises
    ------
    ValueError
        A selector without a metric name, or a matcher that cannot be read.
    """
    text = _RANGE.sub("", expand(expr))
    found: list[Selector] = []
    # Matchers first (their string values may hold anything), each tied to the name before it.
    position = 0
    plain: list[str] = []
    for match in _MATCHERS.finditer(text):
        before = text[position : match.start()]
        name_match = re.search(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*$", before)
        if name_match is None:
            raise ValueError(f"{expr!r}: a selector without a metric name")
        labels: set[str] = set()
        body = match.group(1).strip().rstrip(",")
        for part in filter(None, _split_matchers(body)):
            matcher = _MATCHER.fullmatch(part)
            if matcher is None:
                raise ValueError(f"{expr!r}: cannot read the matcher {part!r}")
            labels.add(matcher.group(1))
        found.append(Selector(name_match.group(1), frozenset(labels)))
        plain.append(before[: name_match.start()])
        position = match.end()
    plain.append(text[position:])
    # Bare metric names: identifiers that are not functions, keywords or grouping labels.
    rest = _GROUPING.sub(" ", _STRING.sub(" ", " ".join(plain)))
    for ident in _IDENT.finditer(rest):
        word = ident.group(0)
        after = rest[ident.end() :].lstrip()
        if word.lower() in _KEYWORDS or after.startswith("("):
            continue
        if re.fullmatch(r"\d", rest[ident.start() - 1 : ident.start()] or " "):
            continue  # a duration or number suffix such as 5m or 1e3
        found.append(Selector(word, frozenset()))
    return found


def _split_matchers(body: str) -> list[str]:
    parts: list[str] = []
    current = ""
    quoted = False
    escaped = False
    for char in body:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append(current)
            current = ""
            continue
        current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]
