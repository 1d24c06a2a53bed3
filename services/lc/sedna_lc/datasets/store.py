"""What the dataset monitor last reported, kept in a JSON file so a restart does not repeat it."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ReportedState", "ReportedStore"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportedState:
    """The last report sent for one dataset incarnation (``uid``)."""

    uid: str
    count: int | None
    error: str


class ReportedStore:
    """A small JSON map ``namespace/name`` -> :class:`ReportedState`, written atomically.

    Parameters
    ----------
    path
        The file (its folder is created on first write). A corrupt file is logged and treated
        as empty: the worst outcome is one repeated report.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._items: dict[str, ReportedState] = self._load()

    def _load(self) -> dict[str, ReportedState]:
        try:
            raw: Any = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable dataset state %s: %s", self._path, exc)
            return {}
        items: dict[str, ReportedState] = {}
        if isinstance(raw, dict):
            for key, value in raw.items():
                if isinstance(value, dict):
                    count = value.get("count")
                    items[str(key)] = ReportedState(
                        uid=str(value.get("uid", "")),
                        count=count if isinstance(count, int) else None,
                        error=str(value.get("error", "")),
                    )
        return items

    def _save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            key: {"uid": s.uid, "count": s.count, "error": s.error}
            for key, s in sorted(self._items.items())
        }
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, self._path)

    def get(self, key: str) -> ReportedState | None:
        """The last report for ``key``, if any."""
        return self._items.get(key)

    def put(self, key: str, state: ReportedState) -> None:
        """Record a report that the sink accepted."""
        self._items[key] = state
        self._save()

    def discard(self, key: str) -> None:
        """Forget ``key`` (the dataset was removed)."""
        if self._items.pop(key, None) is not None:
            self._save()

    def recorded(self) -> list[str]:
        """Every recorded key."""
        return list(self._items)
