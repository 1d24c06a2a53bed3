"""How ``sedna get``/``describe``/``nodes`` print objects: printer columns, ages, YAML and JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import yaml

from sedna.resources._meta import PrinterColumn, ResourceKind

__all__ = [
    "columns_for",
    "format_cell",
    "human_duration",
    "json_path_value",
    "parse_timestamp",
    "row_for",
    "to_json",
    "to_yaml",
]

_SEGMENT = re.compile(
    r"\.([A-Za-z0-9_-]+)"
    r"|\[(\d+)\]"
    r"""|\[\?\(@\.([A-Za-z0-9_-]+)\s*==\s*(?:"([^"]*)"|'([^']*)'|([^)\s]+))\)\]"""
)


def _matches(item: Any, field: str, wanted: str, bare: str | None) -> bool:
    if not isinstance(item, dict) or field not in item:
        return False
    if bare is None:  # a quoted literal: compare as strings
        return bool(item[field] == wanted)
    # A bare literal (number, true): compare its text with the value's JSON text.
    return json.dumps(item[field]) == wanted or str(item[field]) == wanted


def json_path_value(data: Any, path: str) -> Any:
    """Evaluate a CRD printer-column path (``.status.phase``, ``.spec.workers[0].name``).

    Supports keys, list indices and equality filters
    (``.status.metrics[?(@.key=="inferenceNumber")].value``, first match as kubectl prints).
    Returns ``None`` when any step is missing (kubectl prints an empty cell).
    """
    value = data
    position = 0
    text = path.strip().removeprefix("{").removesuffix("}").removeprefix("$")
    while position < len(text):
        match = _SEGMENT.match(text, position)
        if match is None:
            return None
        position = match.end()
        key, index, field, double, single, bare = match.groups()
        if key is not None:
            value = value.get(key) if isinstance(value, dict) else None
        elif index is not None:
            i = int(index)
            value = value[i] if isinstance(value, list) and i < len(value) else None
        else:
            wanted = next(v for v in (double, single, bare) if v is not None)
            items = value if isinstance(value, list) else []
            value = next((item for item in items if _matches(item, field, wanted, bare)), None)
        if value is None:
            return None
    return value


def human_duration(seconds: float) -> str:
    """Format an age like kubectl (``5s``, ``3m20s``, ``95m``, ``2h``, ``4d``, ``2y30d``)."""
    if seconds < -1:
        return "<invalid>"
    s = max(int(seconds), 0)
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    days = hours // 24
    if days < 365 * 2:
        return f"{days}d"
    if days < 365 * 8:
        return f"{days // 365}y" if days % 365 == 0 else f"{days // 365}y{days % 365}d"
    return f"{days // 365}y"


def parse_timestamp(value: Any) -> datetime | None:
    """Read an RFC 3339 timestamp (``2024-05-01T10:00:00Z``); None when it is not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def format_cell(value: Any, column_type: str, now: datetime | None = None) -> str:
    """Render one printer-column value as kubectl does (dates as ages)."""
    if value is None:
        return ""
    if column_type == "date":
        stamp = parse_timestamp(value)
        if stamp is None:
            return str(value)
        return human_duration(((now or datetime.now(UTC)) - stamp).total_seconds())
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def columns_for(info: ResourceKind, *, wide: bool) -> tuple[PrinterColumn, ...]:
    """The kind's printer columns (priority 0, or all with ``-o wide``) and AGE."""
    return tuple(c for c in info.all_printer_columns if wide or c.priority == 0)


def row_for(
    data: dict[str, Any],
    columns: Sequence[PrinterColumn],
    *,
    with_namespace: bool,
    now: datetime | None = None,
) -> list[str]:
    """The table row of one object (as ``to_dict()``): [NAMESPACE,] NAME, columns..."""
    meta = data.get("metadata") or {}
    row = [str(meta.get("namespace", ""))] if with_namespace else []
    row.append(str(meta.get("name", "")))
    row += [format_cell(json_path_value(data, c.json_path), c.type, now) for c in columns]
    return row


def to_yaml(data: Any) -> str:
    """Block-style YAML with keys in their given order."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def to_json(data: Any) -> str:
    """Indented JSON."""
    return json.dumps(data, indent=2, ensure_ascii=False)
