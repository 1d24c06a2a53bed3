"""The Dispatcher routes objects by kind and resyncs every manager."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sedna.resources.objects import ObjectKey, ResourceObject
from sedna.resources.worker import WORKER_API_VERSION
from sedna_lc.datasets import DatasetMonitor
from sedna_lc.dispatch import Dispatcher
from sedna_lc.workers import NO_COMMAND_MESSAGE, ProcessRuntime


class Listener:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    async def on_apply(self, obj: ResourceObject, credentials: Mapping[str, str]) -> None:
        self.events.append(("apply", obj.name))

    async def on_remove(self, key: ObjectKey) -> None:
        self.events.append(("remove", key.name))


async def test_routes_by_kind_and_resyncs(sink: Any, tmp_path: Path, eventually: Any) -> None:
    datasets = DatasetMonitor(sink, tmp_path / "state", interval=60)
    workers = ProcessRuntime(sink, tmp_path / "data")
    dispatcher = Dispatcher(datasets, workers)
    listener = Listener()
    dispatcher.registry.subscribe("Model", listener)
    data = tmp_path / "a.txt"
    data.write_text("1\n")
    ds = ResourceObject(kind="Dataset", name="ds", spec={"url": str(data), "format": "txt"})
    model = ResourceObject(kind="Model", name="m", spec={"url": "/m.pb", "format": "pb"})
    worker = ResourceObject(
        kind="Worker",
        api_version=WORKER_API_VERSION,
        name="w",
        spec={
            "owner": {"apiVersion": "v", "kind": "K", "name": "o", "namespace": "default"},
            "workerType": "edge",
        },
    )
    try:
        for obj in (ds, model, worker, model):  # the repeated Model is a no-op
            await dispatcher.apply(obj, {})
        assert datasets.keys() == [ds.key]
        await eventually(lambda: sink.of("dataset"), what="dataset report")
        assert sink.of("worker_state")[-1].worker_state.message == NO_COMMAND_MESSAGE
        assert [o.name for o in dispatcher.registry.objects("Model")] == ["m"]
        assert listener.events == [("apply", "m")]
        assert dispatcher.resource_count() == 3

        await dispatcher.resync([ds.key])
        assert datasets.keys() == [ds.key]
        assert workers.list_workers() == []
        assert dispatcher.registry.held() == []
        assert listener.events[-1] == ("remove", "m")
        await dispatcher.remove(ds.key)
        await dispatcher.remove(ObjectKey("Model", "default", "never-seen"))
        assert dispatcher.resource_count() == 0
    finally:
        await datasets.close()
        await workers.close(stop_workers=True)
