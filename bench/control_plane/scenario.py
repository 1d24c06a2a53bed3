"""One benchmark run for one node count: GM subprocess, simulated LCs, the four measurements.

Phases (each reported through ``progress``):

1. start ``sedna-gm`` (fresh SQLite store) and a Watch on kind Dataset; GM RSS with no node;
2. start the simulated LCs (``links_per_worker`` per process) and wait until the GM lists them
   all as connected; after two heartbeats, GM RSS and CPU with every node idle;
3. apply one Dataset per node as fast as the API takes them, then change every spec: each
   round ends when every node's handler got the generation *and* the Watch saw the status
   written for it (``observedGeneration`` and ``NodeReady=True``);
4. for each report interval: every node reports a new sample count once per interval for
   ``load_seconds``; latency from just before ``Outbox.submit`` on the LC to the Watch event
   carrying that ``status.numberOfSamples``; then wait until the GM has applied them all;
5. lost messages: one report lost right after an ack, one lost on an idle node, one resource
   event lost on its way to the LC; time until the status (or the LC) has the value anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import grpc

from sedna.api.gm.v1 import (
    node_service_pb2,
    node_service_pb2_grpc,
    resource_service_pb2,
    resource_service_pb2_grpc,
)
from sedna.runtime import ChannelConfig, open_channel

from .gm_process import GMProcess
from .results import LoadResult, RunResult
from .simlc import Command, dataset_name, machine_busy_seconds, proc_cpu_seconds, worker_main

__all__ = ["BenchConfig", "run_one"]

Progress = Callable[[str], None]

API_TIMEOUT = 300.0
"""Deadline of the benchmark's own Apply calls: a saturated GM answers late, not never."""
REPORTS_IN = 'sedna_hub_messages_total{direction="in",type="report"}'
"""The GM's counter of report messages received on node streams (duplicates included)."""


@dataclass(frozen=True)
class BenchConfig:
    """Options of a run (see ``python -m bench.control_plane --help``)."""

    links_per_worker: int = 250
    connect_batch: int = 100
    heartbeat_seconds: float = 5.0
    report_intervals: tuple[float, ...] = (60.0, 10.0)
    load_seconds: float = 45.0
    drain_timeout: float = 180.0
    apply_concurrency: int = 16
    drops: int = 5
    work_dir: Path | None = None
    lc_state_dir: Path | None = None
    keep: bool = False
    gm_log_level: str = "INFO"
    gm_args: tuple[str, ...] = ()


class StatusWatch:
    """One ResourceService Watch on kind Dataset, recording when each status value appeared.

    ``samples[(name, numberOfSamples)]`` and ``ready[(name, generation)]`` hold the monotonic
    time of the first event showing that value (``ready``: ``observedGeneration`` equals the
    generation and the ``NodeReady`` condition is True).
    """

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = resource_service_pb2_grpc.ResourceServiceStub(channel)
        self.samples: dict[tuple[str, int], float] = {}
        self.ready: dict[tuple[str, int], float] = {}
        self.events = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Open the stream in the background."""
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        request = resource_service_pb2.WatchRequest(kind="Dataset")
        async for event in self._stub.Watch(request, timeout=24 * 3600):
            now = time.monotonic()
            self.events += 1
            resource = event.resource
            if not resource.status_json:
                continue
            status: dict[str, Any] = json.loads(resource.status_json)
            name = resource.metadata.name
            samples = status.get("numberOfSamples")
            if isinstance(samples, int):
                self.samples.setdefault((name, samples), now)
            generation = status.get("observedGeneration")
            if generation == resource.metadata.generation and any(
                c.get("type") == "NodeReady" and c.get("status") == "True"
                for c in status.get("conditions", ())
            ):
                self.ready.setdefault((name, generation), now)

    async def stop(self) -> None:
        """Cancel the stream."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def check(self) -> None:
        """Raise if the stream ended (it must run for the whole run)."""
        if self._task is not None and self._task.done():
            exc = self._task.exception() if not self._task.cancelled() else None
            raise RuntimeError(f"the Dataset watch ended: {exc!r}")


class WorkerPool:
    """The simulated-LC worker processes and their command pipes.

    Commands carry an ``id``; a worker runs each in its own task and replies with the same
    ``id``, so several commands may be in flight on one worker.
    """

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipes: list[Connection] = []
        self._procs: list[BaseProcess] = []
        for i in range(count):
            ours, theirs = context.Pipe()
            proc = context.Process(
                target=worker_main, args=(theirs,), name=f"simlc-{i}", daemon=True
            )
            proc.start()
            theirs.close()
            self._pipes.append(ours)
            self._procs.append(proc)
        self._locks = [asyncio.Lock() for _ in self._pipes]
        self._waiting: list[dict[int, asyncio.Future[Command]]] = [{} for _ in self._pipes]
        self._ids = itertools.count(1)
        self._readers = [asyncio.create_task(self._read(i)) for i in range(count)]

    async def _read(self, index: int) -> None:
        """Hand each reply of worker ``index`` to the call waiting for it."""
        pending = self._waiting[index]
        while True:
            try:
                reply: Command = await asyncio.to_thread(self._pipes[index].recv)
            except (EOFError, OSError):
                for waiter in pending.values():
                    if not waiter.done():
                        waiter.set_exception(RuntimeError(f"simulated LC worker {index} exited"))
                return
            ident: int = reply.pop("id")
            future = pending.pop(ident, None)
            if future is not None and not future.done():
                future.set_result(reply)

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers."""
        return [p.pid for p in self._procs if p.pid is not None]

    async def call(self, index: int, command: Command) -> Command:
        """Send one command to worker ``index`` and wait for its reply."""
        ident = next(self._ids)
        future: asyncio.Future[Command] = asyncio.get_running_loop().create_future()
        self._waiting[index][ident] = future
        async with self._locks[index]:
            await asyncio.to_thread(self._pipes[index].send, {**command, "id": ident})
        reply = await future
        if "error" in reply:
            raise RuntimeError(f"simulated LC worker {index}: {reply['error']}")
        return reply

    async def each(self, commands: Sequence[Command | None]) -> list[Command]:
        """Send ``commands[i]`` to worker ``i`` (None: skip) concurrently; the replies."""
        calls = [self.call(i, c) for i, c in enumerate(commands) if c is not None]
        return list(await asyncio.gather(*calls))

    async def all(self, command: Command) -> list[Command]:
        """Send the same command to every worker."""
        return await self.each([command] * len(self._pipes))

    async def stop(self) -> None:
        """Stop every worker (nodes closed cleanly), then reap the processes."""
        with contextlib.suppress(TimeoutError, RuntimeError, OSError):
            await asyncio.wait_for(self.all({"op": "stop"}), 60)
        for proc in self._procs:
            await asyncio.to_thread(proc.join, 10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


def _manifest(node: str, version: int) -> bytes:
    suffix = "" if version == 1 else f"-v{version}"
    return json.dumps(
        {
            "apiVersion": "sedna.io/v1alpha1",
            "kind": "Dataset",
            "metadata": {"name": dataset_name(node), "namespace": "default"},
            "spec": {
                "url": f"/data/{node}/index{suffix}.txt",
                "format": "txt",
                "nodeName": node,
            },
        }
    ).encode()


async def _eventually(check: Callable[[], bool], within: float, what: str) -> None:
    """Poll ``check`` every 50 ms; TimeoutError naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within:g}s waiting for {what}")
        await asyncio.sleep(0.05)


class Run:
    """State shared by the phases of one run."""

    def __init__(
        self, nodes: int, config: BenchConfig, gm: GMProcess, pool: WorkerPool, progress: Progress
    ) -> None:
        self.config = config
        self.gm = gm
        self.pool = pool
        self.progress = progress
        self.names = [f"edge-{i:04d}" for i in range(nodes)]
        per = math.ceil(nodes / len(pool.pids))
        self.shards = [self.names[i * per : (i + 1) * per] for i in range(len(pool.pids))]
        self.result = RunResult(nodes=nodes, workers=len(self.shards))
        self.watch: StatusWatch | None = None
        # For the CPU other processes used during the run (our own is subtracted).
        self.started = time.monotonic()
        self.machine_busy = machine_busy_seconds()
        self.driver_cpu = proc_cpu_seconds(os.getpid())
        self.gm_cpu = gm.cpu_seconds()

    def shard_of(self, names: Sequence[str]) -> list[list[str]]:
        """``names`` split by the worker that owns them."""
        wanted = set(names)
        return [[n for n in shard if n in wanted] for shard in self.shards]

    async def sim_cpu(self) -> float:
        """CPU seconds used by all workers so far."""
        return float(sum(s["cpu_s"] for s in await self.pool.all({"op": "stats"})))

    # -- phases ------------------------------------------------------------------------

    async def connect(self, state_dir: Path) -> None:
        """Start every simulated LC and wait until the GM lists them all as connected."""
        r = self.result
        self.progress(f"connecting {r.nodes} simulated LCs over {r.workers} processes")
        started = time.monotonic()
        timeout = 60.0 + r.nodes * 0.1
        await self.pool.each(
            [
                {
                    "op": "start",
                    "nodes": shard,
                    "target": self.gm.target,
                    "state_dir": str(state_dir),
                    "batch": self.config.connect_batch,
                    "timeout": timeout,
                }
                for shard in self.shards
            ]
        )
        async with open_channel(ChannelConfig(target=self.gm.target)) as channel:
            stub = node_service_pb2_grpc.NodeServiceStub(channel)

            async def connected() -> int:
                reply = await stub.ListNodes(node_service_pb2.ListNodesRequest())
                return sum(n.connected for n in reply.nodes)

            while (count := await connected()) < r.nodes:
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"only {count} of {r.nodes} nodes connected")
                await asyncio.sleep(0.2)
        r.connect_s = time.monotonic() - started

    async def idle(self) -> None:
        """GM RSS and CPU with every node connected and idle (two heartbeat periods)."""
        window = 2 * self.config.heartbeat_seconds
        self.progress(f"{self.result.nodes} nodes connected, idle for {window:g} s")
        cpu, started = self.gm.cpu_seconds(), time.monotonic()
        await asyncio.sleep(window)
        self.result.gm_cpu_idle = (self.gm.cpu_seconds() - cpu) / (time.monotonic() - started)
        self.result.rss_idle_kb = self.gm.rss_kb()

    async def reconcile_round(self, version: int) -> tuple[float, float]:
        """Apply every node's Dataset at ``version``; (objects/s, seconds) until delivered
        to every node and the status written for that generation."""
        assert self.watch is not None
        r = self.result
        verb = "creating" if version == 1 else "changing"
        self.progress(f"{verb} {r.nodes} Datasets (generation {version})")
        semaphore = asyncio.Semaphore(self.config.apply_concurrency)
        async with open_channel(ChannelConfig(target=self.gm.target)) as channel:
            stub = resource_service_pb2_grpc.ResourceServiceStub(channel)

            async def apply(node: str) -> None:
                async with semaphore:
                    await stub.Apply(
                        resource_service_pb2.ApplyRequest(manifest_json=_manifest(node, version)),
                        timeout=API_TIMEOUT,
                    )

            started = time.monotonic()
            waiting = asyncio.ensure_future(
                self.pool.all(
                    {"op": "wait_received", "generation": version, "timeout": 120 + r.nodes * 0.2}
                )
            )
            try:
                await asyncio.gather(*(apply(node) for node in self.names))
                replies = await waiting
            finally:
                waiting.cancel()  # only matters when an Apply failed
        missing = sum(reply["missing"] for reply in replies)
        if missing:
            raise TimeoutError(f"{missing} nodes never received generation {version}")
        delivered = max(t for reply in replies for t in reply["times"].values())
        watch = self.watch
        await _eventually(
            lambda: all((dataset_name(n), version) in watch.ready for n in self.names),
            60 + r.nodes * 0.2,
            f"status of generation {version} on every Dataset",
        )
        written = max(watch.ready[(dataset_name(n), version)] for n in self.names)
        seconds = max(delivered, written) - started
        return r.nodes / seconds, seconds

    async def reconcile(self) -> None:
        """Create N Datasets, then change every spec; throughput of each round."""
        r = self.result
        cpu, started = self.gm.cpu_seconds(), time.monotonic()
        r.create_rate, r.create_s = await self.reconcile_round(1)
        r.rss_placed_kb = self.gm.rss_kb()
        r.update_rate, r.update_s = await self.reconcile_round(2)
        r.gm_cpu_reconcile = (self.gm.cpu_seconds() - cpu) / (time.monotonic() - started)

    async def report_load(self, interval: float) -> LoadResult:
        """Steady dataset reports from every node; LC-submit -> Watch latency.

        Every node reports a new sample count once per ``interval`` seconds for
        ``load_seconds``; then the run waits (up to ``drain_timeout``) until the Watch has
        shown every submitted value, so a GM that fell behind is measured, not cut off.
        """
        assert self.watch is not None
        cfg, r = self.config, self.result
        load = LoadResult(interval=interval, offered_rate=r.nodes / interval)
        self.progress(
            f"{load.offered_rate:.0f} reports/s (every {interval:g} s per node) "
            f"for {cfg.load_seconds:g} s"
        )
        before = self.gm.metrics().get(REPORTS_IN, 0)
        cpu, sim_cpu, started = self.gm.cpu_seconds(), await self.sim_cpu(), time.monotonic()
        replies = await self.pool.all(
            {
                "op": "report",
                "interval": interval,
                "duration": cfg.load_seconds,
                "seed": r.nodes + int(interval * 1000),
            }
        )
        ended = time.monotonic()
        load.gm_cpu = (self.gm.cpu_seconds() - cpu) / (ended - started)
        load.sim_cpu = (await self.sim_cpu() - sim_cpu) / (ended - started)
        load.behind_s = max(reply["behind"] for reply in replies)
        submitted = [tuple(s) for reply in replies for s in reply["submitted"]]
        load.submitted = len(submitted)
        watch = self.watch
        self.progress(f"waiting for the GM to apply all {len(submitted)} reports")
        try:
            await _eventually(
                lambda: all((n, v) in watch.samples for n, v, _ in submitted),
                cfg.drain_timeout,
                "every report in the status",
            )
        except TimeoutError:
            r.notes.append(
                f"load every {interval:g} s: reports still missing {cfg.drain_timeout:g} s "
                "after the load ended"
            )
        seen = [watch.samples[(n, v)] for n, v, _ in submitted if (n, v) in watch.samples]
        load.drain_s = max(0.0, max(seen, default=ended) - ended)
        load.applied_rate = len(seen) / (max(seen, default=ended) - started)
        load.received = int(self.gm.metrics().get(REPORTS_IN, 0) - before)
        for name, value, t0 in submitted:
            at = watch.samples.get((name, value))
            if at is None:
                load.missing += 1
            else:
                load.latencies_ms.append((at - t0) * 1000)
        await self.wait_outboxes_empty()
        return load

    async def wait_outboxes_empty(self, within: float = 60.0) -> None:
        """Wait until every node's outbox is acknowledged (the GM is idle again)."""
        deadline = time.monotonic() + within
        while sum(s["outbox"] for s in await self.pool.all({"op": "stats"})):
            if time.monotonic() > deadline:
                self.result.notes.append("outboxes not empty before the next phase")
                return
            await asyncio.sleep(0.2)

    async def reports(self) -> None:
        """One report load per configured interval."""
        for interval in self.config.report_intervals:
            self.result.loads.append(await self.report_load(interval))

    async def lost_messages(self) -> None:
        """Recovery time after one lost message, three ways, ``drops`` nodes each."""
        assert self.watch is not None
        cfg, r = self.config, self.result
        k = max(1, min(cfg.drops, r.nodes // 3))
        groups = [self.names[i::3][:k] for i in range(3)]
        retransmit = 2 * cfg.heartbeat_seconds
        self.progress(
            f"lost messages on {3 * k} nodes (retransmit after {retransmit:g} s without ack)"
        )
        # GM -> LC: the next event to each of these nodes is lost; then change their specs.
        await self.pool.each(
            [{"op": "arm_event_drops", "nodes": s} for s in self.shard_of(groups[2])]
        )
        event_start = time.monotonic()
        waiting = asyncio.ensure_future(
            self.pool.each(
                [
                    {"op": "wait_received", "generation": 3, "nodes": s, "timeout": 120}
                    if s
                    else None
                    for s in self.shard_of(groups[2])
                ]
            )
        )
        try:
            await self._lost_reports(groups, retransmit)
            replies = await waiting
        finally:
            waiting.cancel()  # only matters when a step failed
        r.drops_done += len(groups[2]) - sum(reply["missing"] for reply in replies)
        r.stale_event.extend(t - event_start for reply in replies for t in reply["times"].values())

    async def _lost_reports(self, groups: list[list[str]], retransmit: float) -> None:
        """Change group 2's specs (their next event is lost), then lose one report on each
        node of groups 0 and 1 and time how long until the status shows it anyway."""
        assert self.watch is not None
        r = self.result
        async with open_channel(ChannelConfig(target=self.gm.target)) as channel:
            stub = resource_service_pb2_grpc.ResourceServiceStub(channel)
            for node in groups[2]:
                await stub.Apply(
                    resource_service_pb2.ApplyRequest(manifest_json=_manifest(node, 3)),
                    timeout=API_TIMEOUT,
                )
        # LC -> GM: after a fresh ack, and on a node idle for longer than the retransmit time.
        drops = [
            self.pool.each(
                [
                    {"op": "drop_reports", "mode": mode, "nodes": s, "idle": retransmit + 1}
                    if s
                    else None
                    for s in self.shard_of(group)
                ]
            )
            for mode, group in (("after_ack", groups[0]), ("idle", groups[1]))
        ]
        after_ack, idle = await asyncio.gather(*drops)
        r.drops_done = sum(x["dropped"] for x in after_ack + idle)
        watch = self.watch
        for replies, out in ((after_ack, r.stale_after_ack), (idle, r.stale_idle)):
            submitted = [tuple(s) for reply in replies for s in reply["submitted"]]
            try:
                await _eventually(
                    lambda s=submitted: all((n, v) in watch.samples for n, v, _ in s),  # type: ignore[misc]
                    6 * retransmit,
                    "reports lost on the way to the GM",
                )
            except TimeoutError:
                r.notes.append("a lost report never reached the status")
            out.extend(
                watch.samples[(n, v)] - t0 for n, v, t0 in submitted if (n, v) in watch.samples
            )

    async def finish(self) -> None:
        """End-of-run figures: GM RSS, client memory, reconnects, leftover outbox."""
        r = self.result
        r.rss_end_kb = self.gm.rss_kb()
        stats = await self.pool.all({"op": "stats"})
        ours = (
            self.gm.cpu_seconds()
            - self.gm_cpu
            + sum(s["cpu_s"] for s in stats)
            + proc_cpu_seconds(os.getpid())
            - self.driver_cpu
        )
        busy = machine_busy_seconds() - self.machine_busy
        r.other_cpu = max(0.0, busy - ours) / (time.monotonic() - self.started)
        r.sim_rss_kb = sum(s["rss_kb"] for s in stats)
        r.reconnects = sum(s["connections"] for s in stats) - r.nodes
        if (left := sum(s["outbox"] for s in stats)) > 0:
            r.notes.append(f"{left} reports still unacknowledged at the end")
        if (pending := sum(s["pending_drops"] for s in stats)) > 0:
            r.notes.append(f"{pending} armed drops never triggered")


def _tmpfs() -> Path | None:
    """``/dev/shm`` when it is a writable folder."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


async def run_one(nodes: int, config: BenchConfig, progress: Progress) -> RunResult:
    """Run every phase for ``nodes`` simulated LCs on a fresh GM and return the figures."""
    base = config.work_dir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"sedna-cp-bench-{nodes}-", dir=base))
    state_base = config.lc_state_dir or _tmpfs() or work
    state_dir = Path(tempfile.mkdtemp(prefix=f"sedna-cp-lc-{nodes}-", dir=state_base))
    gm = GMProcess(work, config.heartbeat_seconds, config.gm_log_level, config.gm_args)
    pool: WorkerPool | None = None
    try:
        progress(f"starting sedna-gm (store {work / 'gm.db'})")
        await gm.start()
        pool = WorkerPool(max(1, math.ceil(nodes / config.links_per_worker)))
        run = Run(nodes, config, gm, pool, progress)
        async with open_channel(ChannelConfig(target=gm.target)) as channel:
            run.watch = StatusWatch(channel)
            run.watch.start()
            await asyncio.sleep(1.0)
            run.result.rss_base_kb = gm.rss_kb()
            await run.connect(state_dir)
            await run.idle()
            for phase in (run.reconcile, run.reports, run.lost_messages, run.finish):
                run.watch.check()
                await phase()
            await run.watch.stop()
    finally:
        progress("stopping")
        try:
            if pool is not None:
                await pool.stop()
        finally:
            gm.stop()
            if not config.keep:
                shutil.rmtree(state_dir, ignore_errors=True)
                shutil.rmtree(work, ignore_errors=True)
    return run.result
