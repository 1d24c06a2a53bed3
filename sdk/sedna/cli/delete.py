"""``sedna delete KIND NAME`` or ``sedna delete -f FILE``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.console import Console
from rich.markup import escape

from sedna.api.gm.v1 import resource_service_pb2 as pb
from sedna.cli.apply import print_invalid
from sedna.cli.client import Connection, describe_rpc_error, fail, grpc_errors
from sedna.cli.get import resolve_kind_or_exit
from sedna.cli.manifests import read_documents
from sedna.cli.options import NamespaceOpt, connection_options

__all__ = ["delete_command"]

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)


def _delete(conn: Connection, kind: str, namespace: str, name: str) -> bool:
    info = resolve_kind_or_exit(kind)
    try:
        conn.resources().Delete(pb.DeleteRequest(kind=info.kind, namespace=namespace, name=name))
    except grpc.RpcError as exc:
        if exc.code() is grpc.StatusCode.UNAVAILABLE:
            raise
        _err.print(f"[red]error:[/red] {escape(describe_rpc_error(exc, conn.server))}")
        return False
    _out.print(f'{info.singular}.sedna.io "{escape(name)}" deleted')
    return True


@connection_options
def delete_command(
    *,
    kind: Annotated[
        str | None, typer.Argument(help="Kind, plural, singular or short name.")
    ] = None,
    names: Annotated[list[str] | None, typer.Argument(help="Names of the objects.")] = None,
    filename: Annotated[
        list[Path] | None,
        typer.Option("--filename", "-f", help="Delete the objects these manifests describe."),
    ] = None,
    namespace: NamespaceOpt = "default",
    conn: Connection,
) -> None:
    """Delete Sedna objects; each disappears once the workers it started are gone."""
    if filename and (kind or names):
        raise fail("give either KIND NAME... or -f FILE, not both", code=2)
    if not filename and (not kind or not names):
        raise fail("give KIND and at least one NAME, or -f FILE", code=2)
    ok = True
    with grpc_errors(conn.server):
        if filename:
            for doc in read_documents(filename):
                if doc.result.status == "invalid" and not (doc.result.kind and doc.result.name):
                    print_invalid(doc)
                    ok = False
                elif doc.result.status == "skipped" or not doc.result.kind:
                    continue
                else:
                    ns = doc.result.namespace or "default"
                    ok = _delete(conn, doc.result.kind, ns, doc.result.name or "") and ok
        else:
            assert kind is not None
            assert names is not None
            for name in names:
                ok = _delete(conn, kind, namespace, name) and ok
    if not ok:
        raise typer.Exit(code=1)
