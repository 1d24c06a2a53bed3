"""Fixtures: the Kubernetes API emulator on loopback and a KubernetesResourceStore on it.

The test modules here find the ResourceStore contract (``services/gm/tests/store/contract.py``)
as ``sys.modules["sedna_store_contract"]``: this conftest, imported first, loads it by path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support import k8s_emulator
from support.modules import load_module

from sedna_gm.store.kubernetes import KubernetesResourceStore

REPO = Path(__file__).resolve().parents[4]
CRDS = sorted((REPO / "crds").glob("sedna.io_*.yaml"))
# The namespaces of the emulated cluster: like a real one, it refuses objects in any other.
NAMESPACES = ("default", "kube-system", "other", "team", "zeta")

# The name test_sql_contract.py loads it under, too: one module whichever comes first.
load_module("sedna_store_contract", Path(__file__).resolve().parents[1] / "store" / "contract.py")


@pytest.fixture
async def cluster() -> AsyncIterator[Any]:
    """An emulated API server with the Sedna CRDs installed and :data:`NAMESPACES`."""
    async with k8s_emulator.emulated_api_server(crds=CRDS, namespaces=NAMESPACES) as running:
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
