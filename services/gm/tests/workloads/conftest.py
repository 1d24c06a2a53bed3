"""Shared fixtures: upstream example resources and the Kubernetes API emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import k8s_emulator

from sedna.resources.objects import ResourceObject
from sedna_gm.store.sql import SqlResourceStore

REPO = Path(__file__).resolve().parents[4]
EXAMPLES = REPO / "tests" / "fixtures" / "upstream_examples"


def load_example(file: str, kind: str) -> ResourceObject:
    """The first ``kind`` document of an upstream example, with a uid as if stored."""
    for doc in yaml.safe_load_all((EXAMPLES / file).read_text()):
        if doc and doc.get("kind") == kind:
            obj = ResourceObject.from_manifest(doc)
            obj.uid = f"uid-{obj.name}"
            return obj
    raise LookupError(f"{kind} not in {file}")


@pytest.fixture
async def cluster() -> AsyncIterator[Any]:
    """An emulated API server serving the built-in resources (pods, deployments...)."""
    async with k8s_emulator.emulated_api_server(builtin_resources=True) as running:
        yield running


@pytest.fixture(params=["memory", "sql"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SqlResourceStore | None]:
    """The local runtime's record store: none (in memory) or SQLite."""
    if request.param == "memory":
        yield None
        return
    s = SqlResourceStore(f"sqlite+aiosqlite:///{tmp_path / 'gm.db'}")
    await s.start()
    yield s
    await s.close()
