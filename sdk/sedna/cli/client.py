"""Connecting the CLI to GlobalManager (and to a node's LocalController), and its errors.

Every command takes the same connection options (``--server``/``SEDNA_SERVER``,
``--token``/``SEDNA_TOKEN``, ``--tls-ca``, ``--timeout``; declared in :mod:`sedna.cli.options`)
and gets a :class:`Connection` of them; every call carries a deadline. Server errors become one
line naming the gRPC code (plus one line per offending field), an unreachable server a hint to
start ``sedna up``; never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import typer
from rich.console import Console
from rich.markup import escape

from sedna.api.gm.v1 import node_service_pb2_grpc, resource_service_pb2_grpc
from sedna.api.lc.v1 import worker_service_pb2_grpc
from sedna.runtime import ChannelConfig, TLSConfigError, open_sync_channel

__all__ = [
    "DEFAULT_SERVER",
    "FIELD_VIOLATIONS_METADATA_KEY",
    "Connection",
    "fail",
    "grpc_errors",
]

DEFAULT_SERVER = "127.0.0.1:9000"
FIELD_VIOLATIONS_METADATA_KEY = "sedna-field-violations"
"""Trailing metadata in which GlobalManager lists the fields of an INVALID_ARGUMENT."""

_stderr = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise."""
    _stderr.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code=code)


def _violations(error: grpc.RpcError) -> list[str]:
    trailer = getattr(error, "trailing_metadata", None)
    pairs = trailer() if callable(trailer) else None
    for key, value in pairs or ():
        if key == FIELD_VIOLATIONS_METADATA_KEY:
            try:
                data = json.loads(value)
                return [f"{v['field']}: {v['description']}" for v in data]
            except (ValueError, TypeError, KeyError):
                return []
    return []


def describe_rpc_error(error: grpc.RpcError, target: str, what: str = "GlobalManager") -> str:
    """Return the one-line text of a failed call."""
    code: grpc.StatusCode = error.code()
    details: str = error.details() or ""
    if code is grpc.StatusCode.UNAVAILABLE and not details.startswith("resource store"):
        hint = ": is `sedna up` running?" if what == "GlobalManager" else ""
        reason = details.splitlines()[0] if details else code.name
        return f"cannot reach the {what} at {target} ({reason}){hint}"
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"{code.name}: no answer from the {what} at {target} in time (try --timeout)"
    return f"{code.name}: {details}"


@contextmanager
def grpc_errors(target: str, what: str = "GlobalManager") -> Iterator[None]:
    """Turn gRPC and TLS errors raised inside the block into one printed line and exit 1."""
    try:
        yield
    except grpc.RpcError as exc:
        line = describe_rpc_error(exc, target, what)
        violations = _violations(exc)
        error = fail(line)
        for violation in violations:
            _stderr.print(f"  {escape(violation)}")
        raise error from None
    except TLSConfigError as exc:
        raise fail(str(exc)) from None


@dataclass
class Connection:
    """Connection options shared by the commands; opens channels lazily and closes them.

    Parameters
    ----------
    server
        GlobalManager ``HOST:PORT``.
    token
        Bearer token, or None.
    tls_ca
        CA bundle; TLS when set.
    timeout
        Deadline of unary calls, in seconds.
    """

    server: str = DEFAULT_SERVER
    token: str | None = field(default=None, repr=False)
    tls_ca: Path | None = None
    timeout: float = 10.0
    _channels: list[grpc.Channel] = field(default_factory=list, repr=False)

    def channel(self, target: str | None = None) -> grpc.Channel:
        """Open a channel to ``target`` (GlobalManager by default) with these options."""
        config = ChannelConfig(
            target=target or self.server,
            ca_file=self.tls_ca,
            token=self.token or None,
            default_timeout=self.timeout,
        )
        try:
            channel = open_sync_channel(config)
        except TLSConfigError as exc:
            raise fail(str(exc)) from None
        self._channels.append(channel)
        return channel

    def resources(self) -> resource_service_pb2_grpc.ResourceServiceStub:
        """Stub of GlobalManager's ResourceService."""
        return resource_service_pb2_grpc.ResourceServiceStub(self.channel())

    def nodes(self) -> node_service_pb2_grpc.NodeServiceStub:
        """Stub of GlobalManager's NodeService."""
        return node_service_pb2_grpc.NodeServiceStub(self.channel())

    def node_agent(self, address: str) -> worker_service_pb2_grpc.NodeAgentServiceStub:
        """Stub of a LocalController's NodeAgentService at ``address``."""
        return worker_service_pb2_grpc.NodeAgentServiceStub(self.channel(address))

    def close(self) -> None:
        """Close every channel opened."""
        for channel in self._channels:
            channel.close()
        self._channels.clear()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
