"""``sedna describe KIND NAME``: metadata, spec as YAML, status, conditions and events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import grpc
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sedna.api.gm.v1 import resource_service_pb2 as pb
from sedna.api.gm.v1 import resource_service_pb2_grpc as pb_grpc
from sedna.cli.client import Connection, grpc_errors
from sedna.cli.get import resolve_kind_or_exit
from sedna.cli.options import NamespaceOpt, connection_options
from sedna.cli.printing import human_duration, parse_timestamp, to_yaml
from sedna.resources.objects import ResourceObject
from sedna.resources.wire import resource_from_proto

__all__ = ["describe_command", "render_description"]


def _when(stamp: datetime | None) -> str:
    if stamp is None:
        return "<none>"
    age = human_duration((datetime.now(UTC) - stamp).total_seconds())
    return f"{stamp.isoformat().replace('+00:00', 'Z')} ({age} ago)"


def _pairs(values: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "<none>"


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.rstrip().splitlines())


def _conditions_table(conditions: list[Any]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for header in ("TYPE", "STATUS", "REASON", "LAST TRANSITION", "MESSAGE"):
        table.add_column(header)
    for cond in conditions:
        if not isinstance(cond, dict):
            continue
        stamp = parse_timestamp(cond.get("lastTransitionTime") or cond.get("lastHeartbeatTime"))
        age = human_duration((datetime.now(UTC) - stamp).total_seconds()) if stamp else ""
        table.add_row(
            *(
                escape(str(v))
                for v in (
                    cond.get("type", ""),
                    cond.get("status", ""),
                    cond.get("reason", ""),
                    age,
                    cond.get("message", ""),
                )
            )
        )
    return table


def _event_age(event: pb.ObjectEvent, now: datetime) -> str:
    last = event.last_timestamp.ToDatetime(tzinfo=UTC)
    age = human_duration((now - last).total_seconds())
    if event.count > 1:
        first = event.first_timestamp.ToDatetime(tzinfo=UTC)
        return f"{age} (x{event.count} over {human_duration((now - first).total_seconds())})"
    return age


def _events_table(events: Sequence[pb.ObjectEvent]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for header in ("TYPE", "REASON", "AGE", "FROM", "MESSAGE"):
        table.add_column(header)
    now = datetime.now(UTC)
    for event in events:
        table.add_row(
            *(
                escape(v)
                for v in (
                    event.type,
                    event.reason,
                    _event_age(event, now),
                    event.source,
                    event.message,
                )
            )
        )
    return table


def render_description(
    obj: ResourceObject,
    console: Console,
    events: Sequence[pb.ObjectEvent] | None = None,
) -> None:
    """Print an object the way ``kubectl describe`` does.

    Parameters
    ----------
    obj
        The object.
    console
        Where to print.
    events
        Its events, oldest first (``<none>`` when empty); None leaves the section out (a
        GlobalManager without ``ListEvents``).
    """
    fields = [
        ("Name", obj.name),
        ("Namespace", obj.namespace),
        ("Kind", obj.kind),
        ("API Version", obj.api_version),
        ("UID", obj.uid),
        ("Resource Version", obj.resource_version),
        ("Generation", str(obj.generation)),
        ("Created", _when(obj.creation_timestamp)),
        ("Labels", _pairs(obj.labels)),
        ("Annotations", _pairs(obj.annotations)),
    ]
    if obj.deletion_timestamp is not None:
        fields.append(("Deleting since", _when(obj.deletion_timestamp)))
    if obj.finalizers:
        fields.append(("Finalizers", ", ".join(obj.finalizers)))
    if obj.owner_references:
        owners = ", ".join(f"{r.kind}/{r.name}" for r in obj.owner_references)
        fields.append(("Owners", owners))
    for label, value in fields:
        console.print(f"[bold]{label + ':':<18}[/bold]{escape(value)}")
    console.print("[bold]Spec:[/bold]")
    console.print(escape(_indent(to_yaml(obj.spec) if obj.spec else "{}")))
    status = dict(obj.status)
    conditions = status.pop("conditions", None)
    console.print("[bold]Status:[/bold]")
    console.print(escape(_indent(to_yaml(status))) if status else "  <none>")
    if isinstance(conditions, list) and conditions:
        console.print("[bold]Conditions:[/bold]")
        console.print(_conditions_table(conditions))
    if events is not None:
        console.print("[bold]Events:[/bold]")
        console.print(_events_table(events) if events else "  <none>")


@connection_options
def describe_command(
    *,
    kind: Annotated[str, typer.Argument(help="Kind, plural, singular or short name.")],
    name: Annotated[str, typer.Argument(help="The object's name.")],
    namespace: NamespaceOpt = "default",
    conn: Connection,
) -> None:
    """Show one Sedna object in detail: metadata, spec, status, conditions and events."""
    info = resolve_kind_or_exit(kind)
    stub = conn.resources()
    with grpc_errors(conn.server):
        reply = stub.Get(pb.GetRequest(kind=info.kind, namespace=namespace, name=name))
        events = _list_events(stub, info.kind, namespace, name)
    render_description(
        resource_from_proto(reply.resource), Console(highlight=False, soft_wrap=True), events
    )


def _list_events(
    stub: pb_grpc.ResourceServiceStub, kind: str, namespace: str, name: str
) -> Sequence[pb.ObjectEvent] | None:
    """The object's events; None when the GlobalManager predates ``ListEvents``."""
    try:
        reply = stub.ListEvents(pb.ListEventsRequest(kind=kind, namespace=namespace, name=name))
    except grpc.RpcError as exc:
        if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
            return None
        raise
    return list(reply.events)
