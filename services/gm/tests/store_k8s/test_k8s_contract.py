"""The ResourceStore contract against KubernetesResourceStore on the API server emulator.

The same :class:`StoreContract` the SQL adapter passes (``services/gm/tests/store/contract.py``,
loaded by this folder's conftest), here through the official ``kubernetes`` client over HTTP to
``tests/support/k8s_emulator.py``. History expiry is the emulator's
:meth:`ApiServerEmulator.compact` (etcd compaction): watches from older versions get 410 Gone.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from sedna_gm.store.kubernetes import KubernetesResourceStore

contract = sys.modules["sedna_store_contract"]  # loaded by conftest.py


class TestKubernetesContract(contract.StoreContract):  # type: ignore[misc,name-defined]
    per_kind_watch_order = (
        "the Kubernetes API watches one resource type per stream; a watch of every kind merges "
        "independent streams, and nothing tells when a quiet stream has passed a version, so "
        "events of different kinds cannot be put in one order without waiting for bookmarks"
    )

    # ``store`` is this folder's conftest fixture (short watch timeout: streams reconnect).

    @pytest.fixture(autouse=True)
    def _remember_cluster(self, cluster: Any) -> None:
        self.cluster = cluster

    async def expire_history(self, store: KubernetesResourceStore) -> None:
        self.cluster.emulator.compact()
