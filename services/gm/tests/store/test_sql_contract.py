"""The ResourceStore contract against SqlResourceStore on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sedna_gm.store.sql import SqlResourceStore

HISTORY = 40


def _contract():  # type: ignore[no-untyped-def]
    name = "sedna_store_contract"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("contract.py"))
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


contract = _contract()


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
