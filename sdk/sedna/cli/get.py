"""``sedna get KIND [NAME]``: tables with the kind's printer columns, YAML, JSON, and watch."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import grpc
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sedna.api.gm.v1 import resource_service_pb2 as pb
from sedna.cli.client import Connection, fail, grpc_errors
from sedna.cli.options import NamespaceOpt, connection_options
from sedna.cli.printing import columns_for, row_for, to_json, to_yaml
from sedna.resources._meta import ResourceKind
from sedna.resources.registry import UnknownKindError, all_kinds, get_kind
from sedna.resources.wire import resource_from_proto

__all__ = ["GetOutput", "get_command", "resolve_kind_or_exit"]

_EVENT_NAMES = {
    pb.EVENT_TYPE_ADDED: "ADDED",
    pb.EVENT_TYPE_MODIFIED: "MODIFIED",
    pb.EVENT_TYPE_DELETED: "DELETED",
}


class GetOutput(StrEnum):
    """``-o`` formats."""

    table = "table"
    wide = "wide"
    yaml = "yaml"
    json = "json"
    name = "name"


def resolve_kind_or_exit(kind: str) -> ResourceKind:
    """Look the kind up locally; unknown kinds exit 1 listing the valid ones."""
    try:
        return get_kind(kind)
    except UnknownKindError as exc:
        kinds = ", ".join(
            f"{k.kind} ({k.short_names[0]})" if k.short_names else k.kind for k in all_kinds()
        )
        raise fail(f"{exc}; valid kinds: {kinds}") from None


def _table(info: ResourceKind, objects: list[dict[str, Any]], *, wide: bool, all_ns: bool) -> Table:
    columns = columns_for(info, wide=wide)
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    if all_ns:
        table.add_column("NAMESPACE", no_wrap=True)
    table.add_column("NAME", no_wrap=True)
    for column in columns:
        table.add_column(column.name.upper(), no_wrap=True)
    for data in objects:
        table.add_row(*(escape(c) for c in row_for(data, columns, with_namespace=all_ns)))
    return table


def _print(
    info: ResourceKind, objects: list[dict[str, Any]], output: GetOutput, all_ns: bool, single: bool
) -> None:
    console = Console(highlight=False, soft_wrap=True)
    if output in (GetOutput.yaml, GetOutput.json):
        doc: Any = (
            objects[0]
            if single
            else {"apiVersion": "v1", "kind": "List", "items": objects, "metadata": {}}
        )
        typer.echo(to_yaml(doc) if output is GetOutput.yaml else to_json(doc), nl=False)
        if output is GetOutput.json:
            typer.echo()
        return
    if output is GetOutput.name:
        for data in objects:
            typer.echo(f"{info.singular}.sedna.io/{data['metadata']['name']}")
        return
    if not objects:
        where = "any namespace" if all_ns else "this namespace"
        Console(stderr=True).print(f"No {info.plural} found in {where}.")
        return
    console.print(_table(info, objects, wide=output is GetOutput.wide, all_ns=all_ns))


@connection_options
def get_command(
    *,
    kind: Annotated[str, typer.Argument(help="Kind, plural, singular or short name (ji, fl...).")],
    name: Annotated[str | None, typer.Argument(help="One object's name.")] = None,
    namespace: NamespaceOpt = "default",
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="List every namespace.")
    ] = False,
    selector: Annotated[
        list[str] | None,
        typer.Option("--selector", "-l", help="Label KEY=VALUE to match; repeat for several."),
    ] = None,
    output: Annotated[
        GetOutput, typer.Option("--output", "-o", help="Output format.", case_sensitive=False)
    ] = GetOutput.table,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="After listing, print changes as they happen.")
    ] = False,
    watch_timeout: Annotated[
        float,
        typer.Option(help="With --watch, stop after this many seconds (0: until Ctrl-C)."),
    ] = 0.0,
    conn: Connection,
) -> None:
    """Show Sedna objects: one by name, or every object of a kind."""
    info = resolve_kind_or_exit(kind)
    labels: dict[str, str] = {}
    for item in selector or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise fail(f"--selector {item!r}: expected KEY=VALUE")
        labels[key] = value
    ns = "" if all_namespaces else namespace
    with grpc_errors(conn.server):
        stub = conn.resources()
        if name is not None:
            reply = stub.Get(pb.GetRequest(kind=info.kind, namespace=namespace, name=name))
            objects = [resource_from_proto(reply.resource).to_dict()]
            version = reply.resource.metadata.resource_version
        else:
            objects, version, token_ = [], "", ""
            while True:
                page = stub.List(
                    pb.ListRequest(
                        kind=info.kind, namespace=ns, label_selector=labels, page_token=token_
                    )
                )
                objects += [resource_from_proto(r).to_dict() for r in page.resources]
                version = version or page.resource_version
                token_ = page.next_page_token
                if not token_:
                    break
        _print(info, objects, output, all_namespaces, single=name is not None)
        if watch:
            _watch(
                conn,
                info,
                namespace=ns if name is None else namespace,
                name=name,
                version=version,
                output=output,
                all_ns=all_namespaces,
                seconds=watch_timeout,
            )


def _watch(
    conn: Connection,
    info: ResourceKind,
    *,
    namespace: str,
    name: str | None,
    version: str,
    output: GetOutput,
    all_ns: bool,
    seconds: float,
) -> None:
    stream = conn.resources().Watch(
        pb.WatchRequest(kind=info.kind, namespace=namespace, resource_version=version),
        timeout=seconds or 365 * 24 * 3600.0,
    )
    console = Console(highlight=False, soft_wrap=True)
    columns = columns_for(info, wide=output is GetOutput.wide)
    try:
        for event in stream:
            if event.type not in _EVENT_NAMES:
                continue
            data = resource_from_proto(event.resource).to_dict()
            if name is not None and data["metadata"]["name"] != name:
                continue
            if output in (GetOutput.yaml, GetOutput.json):
                wrapped = {"type": _EVENT_NAMES[event.type], "object": data}
                typer.echo(
                    to_yaml(wrapped) + "---" if output is GetOutput.yaml else to_json(wrapped)
                )
            elif output is GetOutput.name:
                typer.echo(f"{info.singular}.sedna.io/{data['metadata']['name']}")
            else:
                row = row_for(data, columns, with_namespace=all_ns)
                console.print(
                    f"{_EVENT_NAMES[event.type]:<9} " + "   ".join(escape(c) for c in row)
                )
    except grpc.RpcError as exc:
        if exc.code() is not grpc.StatusCode.DEADLINE_EXCEEDED or not seconds:
            raise
    except KeyboardInterrupt:
        stream.cancel()
