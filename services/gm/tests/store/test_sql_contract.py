"""The ResourceStore contract against SqlResourceStore on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.modules import load_module

from sedna_gm.store.sql import SqlResourceStore

HISTORY = 40


# Under this name the Kubernetes suite (store_k8s/conftest.py) loads it too: one module.
contract = load_module("sedna_store_contract", Path(__file__).with_name("contract.py"))


async def _expire(store: SqlResourceStore) -> None:
    # The log keeps the last HISTORY revisions: write more than that on a scratch object.
    scratch = await store.create(contract.dataset("scratch-for-expiry"))
    for i in range(HISTORY):
        scratch.status = {"i": i}
        scratch = await store.update_status(scratch)


class TestSqliteContract(contract.StoreContract):  # type: ignore[misc,name-defined]
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SqlResourceStore]:
        s = SqlResourceStore(
            f"sqlite:///{tmp_path / 'sedna.db'}", history_limit=HISTORY, poll_interval=0.05
        )
        await s.start()
        yield s
        await s.close()

    async def expire_history(self, store: SqlResourceStore) -> None:
        await _expire(store)


class TestPostgresContract(contract.StoreContract):  # type: ignore[misc,name-defined]
    @pytest.fixture
    async def store(self, postgres_url: str) -> AsyncIterator[SqlResourceStore]:
        s = SqlResourceStore(postgres_url, history_limit=HISTORY, poll_interval=0.05)
        await s.start()
        yield s
        await s.close()

    async def expire_history(self, store: SqlResourceStore) -> None:
        await _expire(store)
