"""Shared fixtures: upstream example resources and the Kubernetes API emulator."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from sedna.resources.objects import ResourceObject

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


def _load_emulator() -> ModuleType:
    # --import-mode=importlib keeps tests/ off sys.path: load the shared helper by path.
    name = "sedna_tests_support_k8s_emulator"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, REPO / "tests" / "support" / "k8s_emulator.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def cluster() -> AsyncIterator[Any]:
    """An emulated API server serving the built-in resources (pods, deployments...)."""
    async with _load_emulator().emulated_api_server(builtin_resources=True) as running:
        yield running
