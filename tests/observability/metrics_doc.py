"""The metric tables of ``docs/metrics.md``, parsed, so tests and docs cannot drift.

Both the Prometheus scrape test and the dashboard test read the documentation through
:func:`documented_metrics`: a metric renamed in code but not in the doc (or the other way
round) fails a test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DOC",
    "EXERCISED_BY_SCRAPE_TEST",
    "KNOWN_EVENTS",
    "TYPES",
    "Documented",
    "documented_metrics",
    "load",
]

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
EXERCISED_BY_SCRAPE_TEST = {
    "after an RPC",
    "after a Dataset",
    "after an FL round",
    "after a ModelInfer",
    "after a node connects",
    "after a reconcile",
}
"""The ``Appears`` events ``tests/e2e/test_prometheus_scrape.py`` causes before scraping."""
KNOWN_EVENTS = EXERCISED_BY_SCRAPE_TEST | {
    "after a reconcile error",
    "after a JI report",
    "after a checkpoint failure",
    "after a model reload",
    "after a JI inference",
    "after a cloud failure",
    "after a bulk-port request",
}
TYPES = {"counter", "gauge", "histogram", "summary", "info"}
_HEADER = ["Metric", "Type", "Labels", "Services", "Appears", "Meaning"]


@dataclass(frozen=True)
class Documented:
    """One row of a metrics table in ``docs/metrics.md``."""

    name: str
    type: str
    labels: frozenset[str]
    services: tuple[str, ...]
    appears: str
    line: int

    @property
    def family(self) -> str:
        """The metadata (OpenMetrics family) name: a counter's without ``_total``."""
        return self.name.removesuffix("_total") if self.type == "counter" else self.name

    @property
    def series_name(self) -> str:
        """A sample name whose series carry exactly the documented labels."""
        return f"{self.name}_count" if self.type == "histogram" else self.name


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def documented_metrics(text: str) -> list[Documented]:
    """Parse every table of ``docs/metrics.md`` whose header is :data:`_HEADER`.

    Raises
    ------
    ValueError
        A malformed row (the message names the line and the cell at fault).
    """
    rows: list[Documented] = []
    in_table = False
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith("|"):
            in_table = False
            continue
        cells = _cells(line)
        if cells == _HEADER:
            in_table = True
            continue
        if not in_table or set(line) <= set("|- "):
            continue
        if len(cells) != len(_HEADER):
            raise ValueError(f"docs/metrics.md:{number}: expected {len(_HEADER)} cells")
        name, kind, labels, services, appears, meaning = cells
        match = re.fullmatch(r"`([a-zA-Z_:][a-zA-Z0-9_:]*)`", name)
        if not match:
            raise ValueError(f"docs/metrics.md:{number}: Metric {name!r} is not a `name`")
        if kind not in TYPES:
            raise ValueError(f"docs/metrics.md:{number}: Type {kind!r} is not one of {TYPES}")
        if appears != "start" and appears not in KNOWN_EVENTS:
            raise ValueError(f"docs/metrics.md:{number}: Appears {appears!r} is unknown")
        if not meaning:
            raise ValueError(f"docs/metrics.md:{number}: Meaning is empty")
        rows.append(
            Documented(
                name=match.group(1),
                type=kind,
                labels=frozenset(part.strip() for part in labels.split(",") if part.strip()),
                services=tuple(part.strip() for part in services.split(",")),
                appears=appears,
                line=number,
            )
        )
    return rows


def load() -> list[Documented]:
    """Every documented metric."""
    return documented_metrics(DOC.read_text())
