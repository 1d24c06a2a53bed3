"""The transport-agnostic LC hub: one session per connected node, at-least-once both ways.

Events (GM -> node) are numbered per *session*; the node acknowledges them cumulatively
after applying them, and unacknowledged ones are resent after a reconnect (when the node
resumes the same session) or after ``retransmit_seconds`` without ack progress. When the hub
cannot resume (unknown session, GM restart, queue overflow) it opens a new session and sends
a *full resync*: an UPSERT for every desired object, then ``ResyncCompleted``.

Reports (node -> GM) carry the node's own sequence numbers; the hub applies them strictly in
order through the :class:`~sedna_gm.core.ports.ReportHandler`, persists the highest applied
one through the :class:`~sedna_gm.hub.state_store.HubStateStore` and only then acks it, so a
report is applied once even across GM restarts. A report whose seq is already applied is
acked again without re-applying; one after a gap is ignored (the node retransmits).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import CollectorRegistry

from sedna.api.gm.v1 import hub_service_pb2
from sedna.resources.objects import ObjectKey, ResourceObject
from sedna.runtime import register_secret, require_positive, wait_first
from sedna.runtime.retransmit import RetransmitTimer
from sedna_gm.core.ports import DesiredStateSource, NodeInfo, ReportHandler
from sedna_gm.hub.metrics import HubMetrics
from sedna_gm.hub.node_queue import NodeQueue, PendingEvent
from sedna_gm.hub.state_store import HubStateStore, MemoryHubStateStore, NodeRecord

__all__ = ["HubConfig", "HubRejectedError", "NodeHub", "NodeStats", "NodeStream", "RejectCode"]

_log = logging.getLogger(__name__)

RejectCode = Literal["unauthenticated", "permission_denied", "invalid_argument", "unavailable"]


class HubRejectedError(Exception):
    """The hub refused or ended a stream; ``code`` maps to a gRPC status.

    Parameters
    ----------
    code
        Why, in transport-neutral terms.
    message
        Human-readable reason (never contains a token).
    """

    def __init__(self, code: RejectCode, message: str) -> None:
        super().__init__(message)
        self.code: RejectCode = code
        self.message = message


class NodeStream(Protocol):
    """One bidirectional stream with a node, as the hub sees it."""

    async def recv(self) -> hub_service_pb2.ConnectRequest | None:
        """The next message, or None when the node closed the stream."""
        ...

    async def send(self, message: hub_service_pb2.ConnectResponse) -> None:
        """Send one message (called from one task at a time)."""


@dataclass(frozen=True)
class HubConfig:
    """Tuning of the hub.

    Parameters
    ----------
    heartbeat_seconds
        Heartbeat interval; a node silent for three intervals is disconnected.
    queue_capacity
        Most events held per node (pending + unacknowledged).
    enqueue_timeout
        How long ``upsert``/``remove`` wait for space before the node is marked for a full
        resync (its queue is dropped; the resync replays the desired state).
    retransmit_seconds
        Resend unacknowledged events after this long without ack progress; None means two
        heartbeat intervals.
    hello_timeout
        How long a new stream may take to send its NodeHello.
    node_tokens
        Node name -> bearer token; when set, a node must present its own token. None
        accepts any node (embedded loopback mode).
    """

    heartbeat_seconds: float = 5.0
    queue_capacity: int = 10_000
    enqueue_timeout: float = 10.0
    retransmit_seconds: float | None = None
    hello_timeout: float = 10.0
    node_tokens: Mapping[str, str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        """Reject values that would make the hub stall or spin."""
        require_positive(
            self,
            "heartbeat_seconds",
            "enqueue_timeout",
            "hello_timeout",
            optional=["retransmit_seconds"],
        )
        if self.queue_capacity < 1:
            raise ValueError(f"queue_capacity must be >= 1, not {self.queue_capacity!r}")
        for node, token in (self.node_tokens or {}).items():
            if not node or not token:
                raise ValueError(f"node_tokens: node {node!r} needs a non-empty name and token")

    @property
    def retransmit_after(self) -> float:
        """Effective retransmit timeout in seconds."""
        return self.retransmit_seconds or 2 * self.heartbeat_seconds


@dataclass(frozen=True)
class NodeStats:
    """Delivery figures of one node (for NodeService)."""

    pending_messages: int
    delivery_lag_ms: int
    connected_since: datetime | None
    resource_count: int
    agent_version: str


class _Session:
    """One stream of a node; every send goes through here (one writer at a time)."""

    def __init__(self, node: _Node, stream: NodeStream, metrics: HubMetrics) -> None:
        self.node = node
        self.stream = stream
        self.metrics = metrics
        self.closed = asyncio.Event()
        self.finished = asyncio.Event()
        self.close_reason = ""
        self._send_lock = asyncio.Lock()

    async def send(self, message: hub_service_pb2.ConnectResponse) -> None:
        async with self._send_lock:
            await self.stream.send(message)
        self.metrics.messages.labels("out", message.WhichOneof("message") or "none").inc()

    def close(self, reason: str) -> None:
        if not self.closed.is_set():
            self.close_reason = reason
            self.closed.set()


class _Node:
    """Everything the hub knows about one node."""

    def __init__(self, name: str, queue: NodeQueue) -> None:
        self.name = name
        self.queue = queue
        self.labels: dict[str, str] = {}
        self.agent_address = ""
        self.agent_version = ""
        self.connected_since: datetime | None = None
        self.last_seen: datetime | None = None
        # The in-memory event session; empty until the first connection of this process.
        self.session_id = ""
        self.needs_resync = True
        self.stored_session_id = ""
        self.last_applied_report_seq = 0
        self.report_lock = asyncio.Lock()
        self.connect_lock = asyncio.Lock()
        self.wakeup = asyncio.Event()
        self.space = asyncio.Event()
        self.timer = RetransmitTimer(1.0)
        self.resend_now = False
        self.placed: set[ObjectKey] = set()
        self.active: _Session | None = None

    def notify_space(self) -> None:
        # Waiters hold the old event: setting it wakes them all; new waiters get a fresh one.
        self.space.set()
        self.space = asyncio.Event()


def _now() -> datetime:
    return datetime.now(UTC)


class NodeHub:
    """The LC hub core: implements ``NodeMessenger`` and ``NodeDirectory``.

    Parameters
    ----------
    reports
        Applies every report from a node.
    desired
        The desired objects of a node, for full resyncs.
    config
        Timings, capacity and node tokens.
    store
        Durable per-node report positions; in memory when None.
    registry
        Prometheus registry for the hub metrics (a private one when None).
    """

    def __init__(
        self,
        reports: ReportHandler,
        desired: DesiredStateSource,
        config: HubConfig | None = None,
        *,
        store: HubStateStore | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._reports = reports
        self._desired = desired
        self.config = config or HubConfig()
        self._store: HubStateStore = store if store is not None else MemoryHubStateStore()
        self.metrics = HubMetrics(registry)
        self._nodes: dict[str, _Node] = {}
        for token in (self.config.node_tokens or {}).values():
            register_secret(token)

    # -- lifecycle -----------------------------------------------------------------------

    async def load(self) -> None:
        """Read the persisted node records (call once before serving)."""
        for record in await self._store.load_all():
            node = self._node(record.node_name)
            node.stored_session_id = record.session_id
            node.last_applied_report_seq = record.last_applied_report_seq

    async def close(self, grace: float = 5.0) -> None:
        """End every session and wait (up to ``grace`` seconds) for them to finish."""
        sessions = [node.active for node in self._nodes.values() if node.active is not None]
        for session in sessions:
            session.close("hub shutting down")
        if sessions:
            await asyncio.wait(
                [asyncio.ensure_future(s.finished.wait()) for s in sessions], timeout=grace
            )

    # -- NodeMessenger -------------------------------------------------------------------

    async def upsert(
        self,
        node_name: str,
        obj: ResourceObject,
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        """Queue ``obj`` for the node; a newer upsert of the same key replaces a pending one.

        Waits up to ``config.enqueue_timeout`` for space when the node's queue is full; then
        the node's queue is dropped and the node is marked for a full resync.
        """
        await self._enqueue(
            node_name, hub_service_pb2.OPERATION_UPSERT, obj, dict(credentials or {})
        )

    async def remove(self, node_name: str, obj: ResourceObject) -> None:
        """Queue the removal of ``obj`` (by key) from the node."""
        await self._enqueue(node_name, hub_service_pb2.OPERATION_DELETE, obj, {})

    async def _enqueue(
        self,
        node_name: str,
        operation: hub_service_pb2.Operation.ValueType,
        obj: ResourceObject,
        credentials: dict[str, str],
    ) -> None:
        if not node_name:
            raise ValueError(f"node_name must not be empty (object {obj.key})")
        node = self._node(node_name)
        if operation == hub_service_pb2.OPERATION_UPSERT:
            node.placed.add(obj.key)
        else:
            node.placed.discard(obj.key)
        if node.needs_resync and node.active is None:
            # The next connection replays the whole desired state, which includes this.
            return
        queue = node.queue
        deadline = time.monotonic() + self.config.enqueue_timeout
        while queue.full and not queue.contains(obj.key):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._overflow(node)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(node.space.wait(), remaining)
            if node.needs_resync and node.active is None:
                return
        queue.put(PendingEvent(operation, obj, credentials, time.monotonic()))
        node.wakeup.set()

    def _overflow(self, node: _Node) -> None:
        _log.warning(
            "hub queue of node full: dropping it, the node gets a full resync",
            extra={"node": node.name, "capacity": node.queue.capacity},
        )
        node.queue.restart(keep_pending=False)
        node.needs_resync = True
        node.notify_space()
        if node.active is not None:
            node.active.close("event queue overflowed: full resync needed")

    # -- NodeDirectory -------------------------------------------------------------------

    def get_node(self, name: str) -> NodeInfo | None:
        """The node, or None when it never registered."""
        node = self._nodes.get(name)
        return None if node is None else self._info(node)

    def list_nodes(self) -> Sequence[NodeInfo]:
        """All known nodes, by name."""
        return [self._info(self._nodes[name]) for name in sorted(self._nodes)]

    def _info(self, node: _Node) -> NodeInfo:
        return NodeInfo(
            name=node.name,
            connected=node.active is not None and node.connected_since is not None,
            last_seen=node.last_seen,
            labels=dict(node.labels),
            agent_address=node.agent_address,
        )

    def node_stats(self, name: str) -> NodeStats | None:
        """Delivery figures of a node, or None when unknown."""
        node = self._nodes.get(name)
        if node is None:
            return None
        return NodeStats(
            pending_messages=len(node.queue),
            delivery_lag_ms=int(node.queue.oldest_age(time.monotonic()) * 1000),
            connected_since=node.connected_since if node.active is not None else None,
            resource_count=len(node.placed),
            agent_version=node.agent_version,
        )

    # -- sessions ------------------------------------------------------------------------

    def _node(self, name: str) -> _Node:
        node = self._nodes.get(name)
        if node is None:
            node = _Node(name, NodeQueue(self.config.queue_capacity, self.metrics.pending.inc))
            self._nodes[name] = node
        return node

    def _authorize(self, node_name: str, token: str | None) -> None:
        tokens = self.config.node_tokens
        if tokens is None:
            return
        if not token:
            raise HubRejectedError(
                "unauthenticated",
                f"node {node_name!r}: missing bearer token "
                "(send metadata 'authorization: Bearer <node token>')",
            )
        expected = tokens.get(node_name)
        if expected is not None and hmac.compare_digest(token.encode(), expected.encode()):
            return
        if expected is None:
            raise HubRejectedError(
                "permission_denied", f"node {node_name!r} has no token configured on this GM"
            )
        raise HubRejectedError("permission_denied", f"token is not the token of node {node_name!r}")

    async def serve(self, stream: NodeStream, token: str | None = None) -> None:
        """Run one node stream until it ends.

        Parameters
        ----------
        stream
            The stream; its first message must be a NodeHello.
        token
            The bearer token the caller presented, if any.

        Raises
        ------
        HubRejectedError
            Bad hello, failed authentication, or the session ended on an error (the node
            should reconnect).
        """
        try:
            first = await asyncio.wait_for(stream.recv(), self.config.hello_timeout)
        except TimeoutError:
            raise HubRejectedError(
                "invalid_argument", f"no NodeHello within {self.config.hello_timeout:g}s"
            ) from None
        if first is None or first.WhichOneof("message") != "hello":
            raise HubRejectedError("invalid_argument", "the first message must be a NodeHello")
        hello = first.hello
        if not hello.node_name:
            raise HubRejectedError("invalid_argument", "hello.node_name must not be empty")
        self._authorize(hello.node_name, token)
        self.metrics.messages.labels("in", "hello").inc()
        node = self._node(hello.node_name)
        async with node.connect_lock:
            previous = node.active
            if previous is not None:
                previous.close("replaced by a new connection of the same node")
                await previous.finished.wait()
            session = _Session(node, stream, self.metrics)
            node.active = session
        try:
            error = await self._run_session(session, hello)
        finally:
            node.active = None if node.active is session else node.active
            if node.connected_since is not None and node.active is None:
                self.metrics.connected_nodes.dec()
                node.connected_since = None
            node.last_seen = _now()
            session.finished.set()
        if error is not None:
            raise HubRejectedError("unavailable", error)

    async def _handshake(self, session: _Session, hello: hub_service_pb2.NodeHello) -> bool:
        node = session.node
        if not hello.session_id:
            # A node without a session has fresh local state: its report numbering restarted.
            node.last_applied_report_seq = 0
        queue = node.queue
        last = hello.last_applied_event_seq
        resume = (
            not node.needs_resync
            and bool(node.session_id)
            and hello.session_id == node.session_id
            and queue.acked_seq <= last < queue.next_seq
        )
        if not resume:
            node.session_id = uuid.uuid4().hex
            queue.restart(keep_pending=True)
            node.needs_resync = False
        node.labels = dict(hello.labels)
        node.agent_address = hello.agent_address
        node.agent_version = hello.agent_version
        await self._save(node)
        await session.send(
            hub_service_pb2.ConnectResponse(
                welcome=hub_service_pb2.HubWelcome(
                    session_id=node.session_id,
                    last_applied_report_seq=node.last_applied_report_seq,
                    full_resync=not resume,
                    heartbeat_interval_ms=int(self.config.heartbeat_seconds * 1000),
                )
            )
        )
        node.connected_since = _now()
        node.last_seen = node.connected_since
        self.metrics.connected_nodes.inc()
        _log.info(
            "node connected",
            extra={"node": node.name, "full_resync": not resume, "session": node.session_id},
        )
        return not resume

    async def _save(self, node: _Node) -> None:
        node.stored_session_id = node.session_id
        await self._store.save(NodeRecord(node.name, node.session_id, node.last_applied_report_seq))

    async def _run_session(self, session: _Session, hello: hub_service_pb2.NodeHello) -> str | None:
        """Run until the stream ends; an error message when it ended abnormally."""
        full = await self._handshake(session, hello)
        tasks = {
            asyncio.ensure_future(self._send_loop(session, full, hello.last_applied_event_seq)),
            asyncio.ensure_future(self._receive_loop(session)),
            asyncio.ensure_future(self._heartbeat_loop(session)),
            asyncio.ensure_future(session.closed.wait()),
        }
        for task in await wait_first(tasks):
            if task.cancelled():
                continue
            exc = task.exception()
            if exc is not None:
                _log.warning(
                    "node session failed",
                    extra={"node": session.node.name, "error": f"{type(exc).__name__}: {exc}"},
                )
                return f"node {session.node.name!r} session failed: {exc}"
            result = task.result()
            if isinstance(result, str):
                return result
        if session.closed.is_set():
            return session.close_reason
        return None

    async def _send_loop(self, session: _Session, full: bool, last_applied: int) -> None:
        node = session.node
        queue = node.queue
        if full:
            objects = list(await self._desired.desired_objects(node.name))
            for obj, credentials in objects:
                await session.send(queue.number_upsert(obj, credentials).message)
            await session.send(queue.number_resync_completed([obj for obj, _ in objects]).message)
            node.placed = {obj.key for obj, _ in objects} | {
                key
                for key, event in queue.pending.items()
                if event.operation == hub_service_pb2.OPERATION_UPSERT
            }
        else:
            self._on_ack(node, last_applied)
            for sent in list(queue.unacked):
                await session.send(sent.message)
        node.timer = RetransmitTimer(self.config.retransmit_after)
        node.timer.restart(time.monotonic())
        while True:
            node.wakeup.clear()
            outstanding = bool(queue.unacked)
            sent_message = queue.take()
            if sent_message is not None:
                node.timer.on_send(outstanding, time.monotonic())
                await session.send(sent_message.message)
                continue
            wait = node.timer.remaining(time.monotonic()) if queue.unacked else node.timer.wait
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(node.wakeup.wait(), max(wait, 0.01))
            now = time.monotonic()
            if node.resend_now or node.timer.due(bool(queue.unacked), now):
                # Go-back-N: the node acks cumulatively and skips what it already applied.
                if not node.resend_now:
                    node.timer.fired(now)
                node.resend_now = False
                for sent in list(queue.unacked):
                    await session.send(sent.message)

    async def _receive_loop(self, session: _Session) -> str | None:
        node = session.node
        silent_limit = 3 * self.config.heartbeat_seconds
        while True:
            try:
                message = await asyncio.wait_for(session.stream.recv(), silent_limit)
            except TimeoutError:
                _log.warning("node silent: disconnecting", extra={"node": node.name})
                return f"node {node.name!r} silent for {silent_limit:g}s"
            if message is None:
                return None
            node.last_seen = _now()
            kind = message.WhichOneof("message")
            self.metrics.messages.labels("in", kind or "none").inc()
            if kind == "ack":
                self._on_ack(node, message.ack.seq)
            elif kind == "report":
                await self._on_report(session, message.report)
            elif kind == "hello":
                return f"node {node.name!r} sent a second NodeHello on one stream"

    def _on_ack(self, node: _Node, seq: int) -> None:
        now = time.monotonic()
        acked_before = node.queue.acked_seq
        if node.timer.on_ack(seq, acked_before, bool(node.queue.unacked), now):
            # The node keeps acknowledging one event: it received later ones after a gap.
            node.resend_now = True
            node.wakeup.set()
        done = node.queue.ack(seq)
        if done:
            for sent in done:
                self.metrics.delivery_lag.observe(now - sent.queued_at)
            node.notify_space()

    async def _on_report(self, session: _Session, report: hub_service_pb2.NodeReport) -> None:
        node = session.node
        async with node.report_lock:
            last = node.last_applied_report_seq
            if report.seq <= last:
                ack = last
            elif report.seq != last + 1:
                # A gap (a lost message): acknowledging the last applied report again makes
                # the node resend from there (fast retransmit) rather than wait for its timer.
                ack = last
            else:
                await self._reports.handle_report(node.name, report)
                node.last_applied_report_seq = report.seq
                await self._save(node)
                ack = report.seq
        await session.send(hub_service_pb2.ConnectResponse(ack=hub_service_pb2.Ack(seq=ack)))

    async def _heartbeat_loop(self, session: _Session) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_seconds)
            stamp = Timestamp()
            stamp.GetCurrentTime()
            await session.send(
                hub_service_pb2.ConnectResponse(
                    heartbeat=hub_service_pb2.Heartbeat(sent_time=stamp)
                )
            )
