"""Simulated LocalControllers: many real GM links in one process, driven over a pipe.

Each simulated node is the LC's real link stack: :class:`~sedna_lc.state.LocalState` (its own
SQLite file), :class:`~sedna_lc.state.Outbox` and :class:`~sedna_lc.link.GMLink` on its own
gRPC channel (``grpc.use_local_subchannel_pool``, so every node has its own TCP connection to
the GM, as separate LC processes would). What the real LC does above the link is replaced by
:class:`SimHandler` (records when each Dataset generation arrives) and by reports built exactly
like the LC's dataset monitor builds them (``NodeReport`` with owner + ``DatasetStatus``).

:func:`worker_main` is the entry point of one worker process (``multiprocessing`` spawn): it
serves commands (plain dicts) from the benchmark driver over a ``Connection`` until ``stop``.
Timestamps are ``time.monotonic()``: CLOCK_MONOTONIC on Linux, comparable across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from sedna.api.common.v1 import types_pb2
from sedna.api.gm.v1 import hub_service_pb2
from sedna.resources.objects import ObjectKey, ResourceObject
from sedna.runtime import ChannelConfig
from sedna_lc.link import GMLink, LinkConfig, LinkStream
from sedna_lc.state import LocalState, Outbox

__all__ = [
    "Command",
    "SimNode",
    "dataset_name",
    "machine_busy_seconds",
    "proc_cpu_seconds",
    "proc_status_kb",
    "worker_main",
]

Command = dict[str, Any]
"""One request from the driver: ``{"op": <name>, ...arguments}``."""

DATASET_KIND = "Dataset"


def dataset_name(node: str) -> str:
    """The one Dataset the benchmark places on ``node``."""
    return f"ds-{node}"


def proc_status_kb(pid: int, field_name: str = "VmRSS") -> int:
    """A ``/proc/PID/status`` memory field in KiB (0 when unreadable)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1])
    return 0


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from ``/proc/PID/stat``."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        text = Path(f"/proc/{pid}/stat").read_text()
        fields = text.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (all CPUs; ``/proc/stat``)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    return 0.0


class SimHandler:
    """The LC's ObjectHandler, reduced to recording arrivals.

    ``received[(name, generation)]`` is the monotonic time the link handed that generation
    over (the first time; redeliveries keep the first stamp).
    """

    def __init__(self) -> None:
        self.objects: dict[ObjectKey, ResourceObject] = {}
        self.received: dict[tuple[str, int], float] = {}
        self.arrived = asyncio.Event()

    async def apply(self, obj: ResourceObject, credentials: Mapping[str, str]) -> None:
        """Record the object and when this generation arrived."""
        self.received.setdefault((obj.name, obj.generation), time.monotonic())
        self.objects[obj.key] = obj
        self.arrived.set()

    async def remove(self, key: ObjectKey) -> None:
        """Forget the object."""
        self.objects.pop(key, None)

    async def resync(self, keys: Sequence[ObjectKey]) -> None:
        """Drop what the GM no longer places here."""
        for key in set(self.objects) - set(keys):
            self.objects.pop(key)


@dataclass
class Faults:
    """One-shot message drops of a node, shared by every stream of its link.

    Attributes
    ----------
    drop_next_report
        Swallow the next report the LC sends (as if lost on the way to the GM).
    drop_next_event
        Swallow the next resource event the GM sends (as if lost on the way to the LC).
    dropped
        ``(kind, monotonic time)`` of every message dropped so far.
    """

    drop_next_report: bool = False
    drop_next_event: bool = False
    dropped: list[tuple[str, float]] = field(default_factory=list)


class DroppingStream:
    """A :class:`~sedna_lc.link.LinkStream` wrapper that applies :class:`Faults`."""

    def __init__(self, inner: LinkStream, faults: Faults) -> None:
        self._inner = inner
        self._faults = faults

    async def send(self, message: hub_service_pb2.ConnectRequest) -> None:
        """Send, unless this is the report to lose."""
        if self._faults.drop_next_report and message.WhichOneof("message") == "report":
            self._faults.drop_next_report = False
            self._faults.dropped.append(("report", time.monotonic()))
            return
        await self._inner.send(message)

    async def recv(self) -> hub_service_pb2.ConnectResponse | None:
        """Receive, skipping the event to lose."""
        while True:
            message = await self._inner.recv()
            if (
                message is not None
                and self._faults.drop_next_event
                and message.WhichOneof("message") == "event"
            ):
                self._faults.drop_next_event = False
                self._faults.dropped.append(("event", time.monotonic()))
                continue
            return message

    def close(self) -> None:
        """Cancel the stream."""
        self._inner.close()


def _timestamp_now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


class SimNode:
    """One simulated LC: local state, outbox, GM link, handler and fault switches.

    Parameters
    ----------
    name
        Node name.
    target
        GM address ``HOST:PORT``.
    state_dir
        Folder of this node's SQLite file.
    """

    def __init__(self, name: str, target: str, state_dir: Path) -> None:
        self.name = name
        self.state = LocalState(state_dir / f"{name}.db")
        self.outbox = Outbox(self.state)
        self.handler = SimHandler()
        self.faults = Faults()
        self.samples = 0
        self.last_submit = 0.0
        channel = ChannelConfig(target=target, options=(("grpc.use_local_subchannel_pool", 1),))
        self.link = GMLink(
            channel,
            name,
            self.state,
            self.handler,
            outbox=self.outbox,
            config=LinkConfig(agent_version="bench-simlc"),
            wrap_stream=lambda stream: DroppingStream(stream, self.faults),
        )

    async def start(self) -> None:
        """Open the local database and start connecting."""
        await self.state.open()
        await self.link.start()

    async def stop(self) -> None:
        """Stop the link and close the database."""
        await self.link.stop()
        await self.state.close()

    def dataset(self) -> ResourceObject | None:
        """The Dataset the GM placed here (None before it arrived)."""
        return self.handler.objects.get(ObjectKey(DATASET_KIND, "default", dataset_name(self.name)))

    async def report_samples(self) -> tuple[str, int, float]:
        """Submit a dataset report with a new sample count, as the LC's monitor would.

        Returns
        -------
        tuple
            ``(dataset name, number of samples, monotonic time before submit)``.
        """
        obj = self.dataset()
        self.samples += 1
        now = _timestamp_now()
        report = hub_service_pb2.NodeReport(
            owner=types_pb2.ObjectReference(
                api_version=obj.api_version if obj else "sedna.io/v1alpha1",
                kind=DATASET_KIND,
                namespace="default",
                name=dataset_name(self.name),
                uid=obj.uid if obj else "",
            ),
            observed_time=now,
            dataset=hub_service_pb2.DatasetStatus(number_of_samples=self.samples, update_time=now),
        )
        started = time.monotonic()
        self.last_submit = started
        await self.outbox.submit(report)
        return dataset_name(self.name), self.samples, started


class Worker:
    """The simulated nodes of one process and the commands that drive them."""

    def __init__(self) -> None:
        self.nodes: dict[str, SimNode] = {}
        self._handlers: dict[str, Callable[[Command], Awaitable[Command]]] = {
            "start": self.start,
            "wait_received": self.wait_received,
            "report": self.report,
            "drop_reports": self.drop_reports,
            "arm_event_drops": self.arm_event_drops,
            "stats": self.stats,
        }

    async def handle(self, command: Command) -> Command:
        """Run one command and return its reply."""
        return await self._handlers[command["op"]](command)

    async def start(self, command: Command) -> Command:
        """Start the nodes (``batch`` at a time, each batch connected before the next)."""
        state_dir = Path(command["state_dir"])
        started = time.monotonic()
        names: list[str] = command["nodes"]
        batch: int = command["batch"]
        for first in range(0, len(names), batch):
            group = [SimNode(name, command["target"], state_dir) for name in names[first:][:batch]]
            await asyncio.gather(*(node.start() for node in group))
            for node in group:
                self.nodes[node.name] = node
            await asyncio.gather(*(node.link.wait_connected(command["timeout"]) for node in group))
        return {
            "connected": sum(n.link.connected for n in self.nodes.values()),
            "seconds": time.monotonic() - started,
        }

    async def wait_received(self, command: Command) -> Command:
        """Wait until each named node got its Dataset at ``generation``; arrival times."""
        generation: int = command["generation"]
        names: list[str] = command.get("nodes") or list(self.nodes)
        deadline = time.monotonic() + command["timeout"]
        times: dict[str, float] = {}
        while True:
            for name in names:
                stamp = self.nodes[name].handler.received.get((dataset_name(name), generation))
                if stamp is not None:
                    times[dataset_name(name)] = stamp
            if len(times) == len(names) or time.monotonic() > deadline:
                return {"times": times, "missing": len(names) - len(times)}
            await asyncio.sleep(0.05)

    async def report(self, command: Command) -> Command:
        """Report new sample counts at a steady rate for ``duration`` seconds.

        Every node reports once per ``interval`` seconds; the nodes are shuffled and their
        reports evenly spaced, so this worker submits ``len(nodes) / interval`` reports per
        second. Each submit runs in its own task (a slow commit does not delay the next).
        """
        interval: float = command["interval"]
        duration: float = command["duration"]
        order = list(self.nodes.values())
        random.Random(command.get("seed", 0)).shuffle(order)
        gap = interval / len(order)
        submitted: list[tuple[str, int, float]] = []
        tasks: set[asyncio.Task[tuple[str, int, float]]] = set()
        start = time.monotonic()
        behind = 0.0
        tick = 0
        while True:
            due = start + tick * gap
            if due - start >= duration:
                break
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                behind = max(behind, -delay)
            tasks.add(asyncio.create_task(order[tick % len(order)].report_samples()))
            tick += 1
            done = {t for t in tasks if t.done()}
            submitted.extend(t.result() for t in done)
            tasks -= done
        if tasks:
            submitted.extend(await asyncio.gather(*tasks))
        return {"submitted": submitted, "behind": behind}

    @staticmethod
    async def _wait_acked(node: SimNode, within: float) -> None:
        """Poll until the node's outbox is empty (or ``within`` seconds passed)."""
        deadline = time.monotonic() + within
        while True:
            if not node.link.outbox_size or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.01)

    async def drop_reports(self, command: Command) -> Command:
        """Lose one report per named node; return what was submitted and when.

        ``mode="after_ack"``: report once, wait for the GM's ack, then lose the next report
        (the link's retransmit timer starts from that fresh ack). ``mode="idle"``: wait until
        the node has not reported for ``idle`` seconds, then lose its next report.
        """
        mode: str = command["mode"]

        async def one(node: SimNode) -> tuple[str, int, float, bool]:
            if mode == "after_ack":
                await node.report_samples()
                await self._wait_acked(node, 30.0)
            else:
                quiet = command["idle"] - (time.monotonic() - node.last_submit)
                if quiet > 0:
                    await asyncio.sleep(quiet)
            node.faults.drop_next_report = True
            before = len(node.faults.dropped)
            name, value, started = await node.report_samples()
            await asyncio.sleep(0.5)
            return name, value, started, len(node.faults.dropped) > before

        results = await asyncio.gather(*(one(self.nodes[name]) for name in command["nodes"]))
        return {"submitted": [r[:3] for r in results], "dropped": sum(r[3] for r in results)}

    async def arm_event_drops(self, command: Command) -> Command:
        """Make each named node lose the next resource event the GM sends it."""
        for name in command["nodes"]:
            self.nodes[name].faults.drop_next_event = True
        return {"armed": len(command["nodes"])}

    async def stats(self, command: Command) -> Command:
        """This process: RSS, CPU, connections made, reports still unacknowledged, drops."""
        pid = os.getpid()
        return {
            "rss_kb": proc_status_kb(pid),
            "cpu_s": proc_cpu_seconds(pid),
            "connected": sum(n.link.connected for n in self.nodes.values()),
            "connections": sum(n.link.connections for n in self.nodes.values()),
            "outbox": sum(n.link.outbox_size for n in self.nodes.values()),
            "dropped": sum(len(n.faults.dropped) for n in self.nodes.values()),
            "pending_drops": sum(
                n.faults.drop_next_event or n.faults.drop_next_report for n in self.nodes.values()
            ),
        }

    async def stop(self) -> None:
        """Stop every node."""
        await asyncio.gather(*(node.stop() for node in self.nodes.values()))


async def _serve(conn: Connection) -> None:
    worker = Worker()
    tasks: set[asyncio.Task[None]] = set()

    async def run(command: Command) -> None:
        try:
            reply = await worker.handle(command)
        except Exception as exc:  # reported to the driver, which aborts the run
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        conn.send({**reply, "id": command["id"]})

    try:
        while True:
            command: Command = await asyncio.to_thread(conn.recv)
            if command["op"] == "stop":
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await worker.stop()
                conn.send({"stopped": True, "id": command["id"]})
                return
            task = asyncio.create_task(run(command))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        with contextlib.suppress(Exception):
            await worker.stop()


def worker_main(conn: Connection) -> None:
    """Entry point of a worker process: serve the driver's commands until ``stop``."""
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(_serve(conn))
