"""``sedna apply -f``: validate manifests locally, then create or update them on GlobalManager."""

from __future__ import annotations

import json
from typing import Annotated

import grpc
import typer
from rich.console import Console
from rich.markup import escape

from sedna.api.gm.v1 import resource_service_pb2 as pb
from sedna.cli.client import Connection, describe_rpc_error, grpc_errors
from sedna.cli.manifests import Document, read_documents
from sedna.cli.options import FilenameOpt, connection_options
from sedna.resources.registry import get_kind

__all__ = ["apply_command", "object_label", "print_invalid"]

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)


def object_label(kind: str, name: str) -> str:
    """``dataset.sedna.io/foo``, as kubectl names objects."""
    return f"{get_kind(kind).singular}.sedna.io/{name}"


def print_invalid(doc: Document) -> None:
    """Print each field error of an invalid document on its own line, with file and line."""
    label = f" {doc.result.label}" if doc.result.kind or doc.result.name else ""
    for error in doc.result.errors:
        line = f" (line {error.line})" if error.line else ""
        _err.print(
            f"[red]error:[/red] {escape(doc.where)}{escape(label)}{line}: {escape(str(error))}"
        )


def _apply_one(conn: Connection, doc: Document, dry_run: bool) -> bool:
    assert doc.data is not None
    assert doc.result.kind is not None
    stub = conn.resources()
    kind, name = doc.result.kind, doc.result.name or ""
    namespace = doc.result.namespace or ""
    previous = ""
    try:
        previous = stub.Get(
            pb.GetRequest(kind=kind, namespace=namespace, name=name)
        ).resource.metadata.resource_version
    except grpc.RpcError as exc:
        if exc.code() is not grpc.StatusCode.NOT_FOUND:
            raise
    try:
        reply = stub.Apply(
            pb.ApplyRequest(manifest_json=json.dumps(doc.data).encode(), dry_run=dry_run)
        )
    except grpc.RpcError as exc:
        if exc.code() is grpc.StatusCode.UNAVAILABLE:
            raise
        _err.print(
            f"[red]error:[/red] {escape(doc.where)} {escape(doc.result.label)}: "
            f"{escape(describe_rpc_error(exc, conn.server))}"
        )
        return False
    if reply.created:
        verb = "created"
    elif reply.resource.metadata.resource_version == previous and not reply.spec_changed:
        verb = "unchanged"
    else:
        verb = "configured"
    suffix = " (dry run)" if dry_run else ""
    _out.print(f"{escape(object_label(kind, name))} {verb}{suffix}")
    return True


@connection_options
def apply_command(
    *,
    filename: FilenameOpt,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate on the server without saving.")
    ] = False,
    conn: Connection,
) -> None:
    """Create or update Sedna objects from manifests (kubectl apply semantics).

    Every document is validated locally first; invalid ones are reported with the path of
    each field at fault and not sent. Documents of other API groups (a Secret) are skipped
    with a note. Exits with status 1 when any document failed.
    """
    docs = read_documents(filename)
    ok = True
    with grpc_errors(conn.server):
        for doc in docs:
            if doc.result.status == "invalid":
                print_invalid(doc)
                ok = False
            elif doc.result.status == "skipped":
                reason = doc.result.reason or "not a Sedna object"
                _err.print(f"[yellow]skipped:[/yellow] {escape(doc.where)}: {escape(reason)}")
            elif not _apply_one(conn, doc, dry_run):
                ok = False
    if not ok:
        raise typer.Exit(code=1)
