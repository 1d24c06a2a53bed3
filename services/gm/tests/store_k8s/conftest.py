"""Fixtures: the Kubernetes API emulator on loopback and a KubernetesResourceStore on it."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sedna_gm.store.kubernetes import KubernetesResourceStore

REPO = Path(__file__).resolve().parents[4]
CRDS = sorted((REPO / "crds").glob("sedna.io_*.yaml"))


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


k8s_emulator = _load_emulator()


@pytest.fixture
async def cluster() -> AsyncIterator[Any]:
    """An emulated API server with the Sedna CRDs installed."""
    async with k8s_emulator.emulated_api_server(crds=CRDS) as running:
        yield running


@pytest.fixture
async def store(cluster: Any) -> AsyncIterator[KubernetesResourceStore]:
    """A started store on the emulator (short watch timeout: exercises the reconnects)."""
    s = KubernetesResourceStore(cluster.api_client, watch_timeout_s=2, request_timeout_s=10)
    await s.start()
    yield s
    await s.close()


@pytest.fixture
def emulated_api_server() -> Any:
    """The emulator's context-manager factory, for tests that need their own cluster."""
    return k8s_emulator.emulated_api_server


@pytest.fixture
def crd_paths() -> list[Path]:
    """The repository's Sedna CRD manifests."""
    return list(CRDS)
