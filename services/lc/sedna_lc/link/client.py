"""The LocalController's link to the GM hub: one stream, reconnected forever, at least once.

Downstream: each ResourceEvent is applied through the :class:`~sedna_lc.ports.ObjectHandler`,
then recorded in :class:`~sedna_lc.state.LocalState` (object + ``last_applied_event_seq`` in one
transaction), then acknowledged. Events at or below the last applied seq are acknowledged and
skipped, so redelivery is harmless. Upstream: reports wait in the :class:`~sedna_lc.state.Outbox`
until the GM acknowledges them; after a reconnect the welcome says what the GM already applied
and the rest is resent in order. Without ack progress for ``retransmit_seconds`` the
unacknowledged reports are resent too (go-back-N; the GM skips duplicates).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp

from sedna.api.gm.v1 import hub_service_pb2
from sedna.resources.objects import ObjectKey
from sedna.resources.wire import WireFormatError, key_from_reference, resource_from_proto
from sedna.runtime import (
    ChannelConfig,
    bearer_token_metadata,
    open_channel,
    require_positive,
    wait_first,
)
from sedna.runtime.retransmit import RetransmitTimer
from sedna_lc.link.backoff import Backoff
from sedna_lc.link.stream import GrpcLinkStream, LinkStream
from sedna_lc.ports import ObjectHandler
from sedna_lc.state.db import LocalState
from sedna_lc.state.outbox import Outbox

__all__ = ["GMLink", "LinkConfig", "LinkProtocolError"]

_log = logging.getLogger(__name__)


class LinkProtocolError(RuntimeError):
    """The GM broke the protocol or went silent; the link reconnects."""


@dataclass(frozen=True)
class LinkConfig:
    """Tuning of the GM link.

    Parameters
    ----------
    heartbeat_seconds
        Heartbeat interval until the GM's welcome names its own.
    backoff_initial, backoff_max
        Reconnect backoff bounds, seconds (full jitter).
    retransmit_seconds
        Resend unacknowledged reports after this long without ack progress; None means
        two heartbeat intervals.
    welcome_timeout
        How long to wait for HubWelcome after NodeHello.
    stream_timeout
        Deadline of one stream; the link reconnects (and resumes) when it expires.
    agent_address, agent_version, labels
        What the hello tells the GM about this node.
    """

    heartbeat_seconds: float = 5.0
    backoff_initial: float = 0.2
    backoff_max: float = 10.0
    retransmit_seconds: float | None = None
    welcome_timeout: float = 10.0
    stream_timeout: float = 24 * 3600.0
    agent_address: str = ""
    agent_version: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Reject values that would make the link stall or spin."""
        require_positive(
            self,
            "heartbeat_seconds",
            "welcome_timeout",
            "stream_timeout",
            optional=["retransmit_seconds"],
        )
        Backoff(self.backoff_initial, self.backoff_max)  # validates the bounds


StreamFactory = Callable[[], LinkStream]


class GMLink:
    """Keeps this node connected to the GM hub.

    Parameters
    ----------
    channel
        Target, TLS and bearer token of the GM.
    node_name
        This node's name.
    state
        The open local database.
    handler
        Applies the objects the GM sends.
    outbox
        The report outbox (give managers the same instance as their ``ReportSink``); one on
        ``state`` when None.
    config
        Timings and hello fields.
    wrap_stream
        Optional wrapper around every stream (fault injection in tests).
    """

    def __init__(
        self,
        channel: ChannelConfig,
        node_name: str,
        state: LocalState,
        handler: ObjectHandler,
        *,
        outbox: Outbox | None = None,
        config: LinkConfig | None = None,
        wrap_stream: Callable[[LinkStream], LinkStream] | None = None,
    ) -> None:
        if not node_name:
            raise ValueError("node_name must not be empty")
        self._channel_config = channel
        token = channel.token
        self._call_metadata = bearer_token_metadata(token) if token is not None else ()
        self.node_name = node_name
        self._state = state
        self._handler = handler
        self.outbox = outbox if outbox is not None else Outbox(state)
        self.config = config or LinkConfig()
        self._wrap = wrap_stream
        self._backoff = Backoff(self.config.backoff_initial, self.config.backoff_max)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._connected = asyncio.Event()
        self._send_lock = asyncio.Lock()
        # Held while an event is applied and recorded; stop() waits for it.
        self._applying = asyncio.Lock()
        self._heartbeat = self.config.heartbeat_seconds
        self._session_id = ""
        self._last_event = 0
        self._acked_report = 0
        self._sent_report = 0
        self._timer = RetransmitTimer(self._retransmit)
        self._rewinds = 0
        self.connections = 0

    # -- public --------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a stream is up and welcomed."""
        return self._connected.is_set()

    @property
    def outbox_size(self) -> int:
        """Reports not yet acknowledged by the GM."""
        return self.outbox.size

    @property
    def session_id(self) -> str:
        """The current GM session (empty before the first welcome)."""
        return self._session_id

    async def start(self) -> None:
        """Start connecting in the background (returns at once)."""
        if self._task is None:
            await self.outbox.refresh_size()
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name=f"gm-link-{self.node_name}")

    async def wait_connected(self, within: float) -> None:
        """Wait until connected; TimeoutError after ``within`` seconds."""
        await asyncio.wait_for(self._connected.wait(), within)

    async def stop(self) -> None:
        """Close the stream and stop reconnecting (after the event being applied, if any)."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            # Never cancel between applying an event and recording it: the restarted node
            # would apply it again.
            async with self._applying:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._connected.clear()

    # -- connection loop -----------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            # The Connect stream outlives GM restarts: no grpc.aio interceptor on it (see
            # open_channel); its deadline and token are set on the call.
            channel = open_channel(self._channel_config, intercept_bidi_streams=False)
            stream: LinkStream | None = None
            try:
                stream = GrpcLinkStream(
                    channel, self.config.stream_timeout, metadata=self._call_metadata
                )
                if self._wrap is not None:
                    stream = self._wrap(stream)
                await self._session(stream)
                _log.info("GM ended the link stream", extra={"node": self.node_name})
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning(
                    "GM link down",
                    extra={"node": self.node_name, "error": f"{type(exc).__name__}: {exc}"},
                )
            finally:
                self._connected.clear()
                if stream is not None:
                    stream.close()
                await channel.close()
                # A shielded apply may still be running: the next session must see its record.
                async with self._applying:
                    pass
            delay = self._backoff.next_delay()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _send(self, stream: LinkStream, message: hub_service_pb2.ConnectRequest) -> None:
        async with self._send_lock:
            await stream.send(message)

    async def _session(self, stream: LinkStream) -> None:
        position = await self._state.link_position()
        hello = hub_service_pb2.NodeHello(
            node_name=self.node_name,
            last_applied_event_seq=position.last_applied_event_seq,
            session_id=position.session_id,
            agent_address=self.config.agent_address,
            agent_version=self.config.agent_version,
            labels=dict(self.config.labels),
        )
        await self._send(stream, hub_service_pb2.ConnectRequest(hello=hello))
        first = await asyncio.wait_for(stream.recv(), self.config.welcome_timeout)
        if first is None or first.WhichOneof("message") != "welcome":
            raise LinkProtocolError("the GM's first message was not a HubWelcome")
        welcome = first.welcome
        if not welcome.session_id:
            raise LinkProtocolError("HubWelcome.session_id is empty")
        if welcome.full_resync:
            await self._state.start_session(welcome.session_id, 0)
            self._last_event = 0
        else:
            if welcome.session_id != position.session_id:
                await self._state.start_session(welcome.session_id, position.last_applied_event_seq)
            self._last_event = position.last_applied_event_seq
        self._session_id = welcome.session_id
        if welcome.heartbeat_interval_ms:
            self._heartbeat = welcome.heartbeat_interval_ms / 1000.0
        gm_applied = welcome.last_applied_report_seq
        if gm_applied > await self._state.last_report_seq():
            # The GM saw higher seqs from an earlier incarnation of this node's state:
            # renumber what is pending after them instead of letting the GM skip it.
            _log.warning(
                "GM knows report seqs this node never assigned; renumbering the outbox",
                extra={"node": self.node_name, "gm_last_applied": gm_applied},
            )
            await self.outbox.rebase(gm_applied)
        else:
            await self.outbox.ack(gm_applied)
        self._acked_report = self._sent_report = gm_applied
        self._timer = RetransmitTimer(self._retransmit)
        self._timer.restart(time.monotonic())
        self.connections += 1
        self._backoff.reset()
        self._connected.set()
        _log.info(
            "GM link up",
            extra={"node": self.node_name, "full_resync": welcome.full_resync},
        )
        tasks = {
            asyncio.ensure_future(self._send_loop(stream)),
            asyncio.ensure_future(self._receive_loop(stream)),
            asyncio.ensure_future(self._heartbeat_loop(stream)),
        }
        for task in await wait_first(tasks):
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    # -- upstream ------------------------------------------------------------------------

    @property
    def _retransmit(self) -> float:
        return self.config.retransmit_seconds or 2 * self._heartbeat

    async def _send_loop(self, stream: LinkStream) -> None:
        changed = self.outbox.changed
        while True:
            now = time.monotonic()
            if self._timer.due(self._outstanding, now):
                # Go-back-N from the last acknowledged report; the GM skips what it applied.
                self._sent_report = self._acked_report
                self._timer.fired(now)
            changed.clear()
            rewinds = self._rewinds
            batch = await self.outbox.pending(self._sent_report)
            if batch:
                for report in batch:
                    self._timer.on_send(self._outstanding, time.monotonic())
                    await self._send(stream, hub_service_pb2.ConnectRequest(report=report))
                    if self._rewinds != rewinds:
                        break  # a fast retransmit moved the window back: start from there
                    self._sent_report = report.seq
                continue
            wait = self._timer.remaining(time.monotonic()) if self._outstanding else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), max(wait or self._timer.wait, 0.01))

    @property
    def _outstanding(self) -> bool:
        return self._sent_report > self._acked_report

    async def _on_ack(self, seq: int) -> None:
        if self._timer.on_ack(seq, self._acked_report, self._outstanding, time.monotonic()):
            # The GM keeps acknowledging the same report: it got later ones after a gap.
            self._sent_report = self._acked_report
            self._rewinds += 1
            self.outbox.changed.set()
            return
        if seq <= self._acked_report:
            return
        self._acked_report = seq
        self._sent_report = max(self._sent_report, seq)
        await self.outbox.ack(seq)

    # -- downstream ----------------------------------------------------------------------

    async def _receive_loop(self, stream: LinkStream) -> None:
        while True:
            silent_limit = 3 * self._heartbeat
            try:
                message = await asyncio.wait_for(stream.recv(), silent_limit)
            except TimeoutError:
                raise LinkProtocolError(f"GM silent for {silent_limit:g}s") from None
            if message is None:
                return
            kind = message.WhichOneof("message")
            if kind == "ack":
                await self._on_ack(message.ack.seq)
            elif kind == "event":
                await self._on_event(stream, message.event)
            elif kind == "resync_completed":
                await self._on_resync(stream, message.resync_completed)
            elif kind == "welcome":
                raise LinkProtocolError("unexpected second HubWelcome")

    async def _ack(self, stream: LinkStream, seq: int) -> None:
        await self._send(stream, hub_service_pb2.ConnectRequest(ack=hub_service_pb2.Ack(seq=seq)))

    def _in_order(self, seq: int) -> bool | None:
        """True: apply; False: already applied (re-ack); None: after a gap (ignore)."""
        if seq <= self._last_event:
            return False
        return True if seq == self._last_event + 1 else None

    async def _on_event(self, stream: LinkStream, event: hub_service_pb2.ResourceEvent) -> None:
        order = self._in_order(event.seq)
        # After a gap the event is not applied; acknowledging the last applied one again tells
        # the GM to resend from there (fast retransmit) instead of waiting for its timer.
        if order:
            # Shielded: a broken stream cancels this loop, but an event the handler applied is
            # always recorded too (else the node would apply it again after resuming).
            await asyncio.shield(self._apply_and_record(event.seq, lambda: self._apply(event)))
        await self._ack(stream, self._last_event)

    async def _apply_and_record(self, seq: int, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` (apply and record one event) unless the link is stopping."""
        async with self._applying:
            if self._stopping.is_set():
                return
            await work()
            self._last_event = seq

    async def _apply(self, event: hub_service_pb2.ResourceEvent) -> None:
        try:
            obj = resource_from_proto(event.resource)
        except WireFormatError as exc:
            # It can never be applied: record it as handled so it does not block the rest.
            _log.error(
                "GM sent an unreadable resource", extra={"seq": event.seq, "error": str(exc)}
            )
            await self._state.start_session(self._session_id, event.seq)
            return
        if event.operation == hub_service_pb2.OPERATION_UPSERT:
            credentials = dict(event.credentials)
            await self._handler.apply(obj, credentials)
            await self._state.record_upsert(event.seq, obj, credentials)
        elif event.operation == hub_service_pb2.OPERATION_DELETE:
            await self._handler.remove(obj.key)
            await self._state.record_remove(event.seq, obj.key)
        else:
            _log.error(
                "GM sent an event without operation",
                extra={"seq": event.seq, "object": str(obj.key)},
            )
            await self._state.start_session(self._session_id, event.seq)

    async def _on_resync(
        self, stream: LinkStream, message: hub_service_pb2.ResyncCompleted
    ) -> None:
        order = self._in_order(message.seq)
        if order is None:
            return
        if order:
            keys = [key_from_reference(ref) for ref in message.resources]
            await asyncio.shield(
                self._apply_and_record(message.seq, lambda: self._resync(message.seq, keys))
            )
        await self._ack(stream, self._last_event)

    async def _resync(self, seq: int, keys: list[ObjectKey]) -> None:
        await self._handler.resync(keys)
        await self._state.record_resync(seq, keys)

    async def _heartbeat_loop(self, stream: LinkStream) -> None:
        while True:
            await asyncio.sleep(self._heartbeat)
            stamp = Timestamp()
            stamp.GetCurrentTime()
            await self._send(
                stream,
                hub_service_pb2.ConnectRequest(
                    heartbeat=hub_service_pb2.Heartbeat(sent_time=stamp)
                ),
            )
