"""``sedna nodes``: the LocalControllers GlobalManager knows, and whether they are connected."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sedna.api.gm.v1 import node_service_pb2 as npb
from sedna.cli.client import Connection, grpc_errors
from sedna.cli.options import connection_options
from sedna.cli.printing import human_duration, to_json

__all__ = ["node_to_dict", "nodes_command"]


def node_to_dict(node: npb.Node) -> dict[str, Any]:
    """A JSON-ready form of a ``Node`` message."""

    def stamp(field: Literal["connected_since", "last_seen"]) -> str | None:
        if not node.HasField(field):
            return None
        value: datetime = getattr(node, field).ToDatetime(tzinfo=UTC)
        return value.isoformat().replace("+00:00", "Z")

    return {
        "name": node.name,
        "connected": node.connected,
        "connectedSince": stamp("connected_since"),
        "lastSeen": stamp("last_seen"),
        "agentAddress": node.agent_address,
        "agentVersion": node.agent_version,
        "labels": dict(node.labels),
        "pendingMessages": node.pending_messages,
        "deliveryLagMs": node.delivery_lag_ms,
        "resourceCount": node.resource_count,
    }


def _ago(node: npb.Node) -> str:
    if not node.HasField("last_seen"):
        return "never"
    seen = node.last_seen.ToDatetime(tzinfo=UTC)
    return f"{human_duration((datetime.now(UTC) - seen).total_seconds())} ago"


@connection_options
def nodes_command(
    output: Annotated[
        str, typer.Option("--output", "-o", help="table or json.", case_sensitive=False)
    ] = "table",
    *,
    conn: Connection,
) -> None:
    """List the nodes (LocalControllers): connected, last seen, queued messages, labels."""
    with grpc_errors(conn.server):
        nodes = sorted(conn.nodes().ListNodes(npb.ListNodesRequest()).nodes, key=lambda n: n.name)
    if output.lower() == "json":
        typer.echo(to_json([node_to_dict(n) for n in nodes]))
        return
    if not nodes:
        Console(stderr=True).print("No nodes have connected yet.")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for header in ("NAME", "CONNECTED", "LAST SEEN", "PENDING", "RESOURCES", "LABELS"):
        table.add_column(header, no_wrap=header != "LABELS")
    for node in nodes:
        labels = ",".join(f"{k}={v}" for k, v in sorted(node.labels.items())) or "<none>"
        table.add_row(
            escape(node.name),
            "[green]yes[/green]" if node.connected else "[red]no[/red]",
            _ago(node),
            str(node.pending_messages),
            str(node.resource_count),
            escape(labels),
        )
    Console(highlight=False, soft_wrap=True).print(table)
