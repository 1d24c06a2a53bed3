"""Fixtures of the Helm chart tests (helpers in :mod:`chart.helm_chart`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from chart.helm_chart import CHART, VALUES_FILES, load_values, manifests, render_chart

Renderer = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def render() -> Renderer:
    """``render(values_name_or_dict)`` -> the rendered objects."""

    def run(values: str | dict[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
        data = load_values(values) if isinstance(values, str) else values
        return manifests(render_chart(CHART, data, **kw))

    return run


@pytest.fixture(scope="session")
def rendered_sets(render: Renderer) -> dict[str, list[dict[str, Any]]]:
    """The objects of every values file in :data:`VALUES_FILES`, rendered once."""
    return {name: render(name) for name in VALUES_FILES}
