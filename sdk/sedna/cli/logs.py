"""``sedna logs WORKER``: a worker's output, streamed from its node's LocalController."""

from __future__ import annotations

import sys
from typing import Annotated

import grpc
import typer

from sedna.api.gm.v1 import node_service_pb2 as npb
from sedna.api.lc.v1 import worker_service_pb2 as wpb
from sedna.cli.client import Connection, fail, grpc_errors
from sedna.cli.options import NamespaceOpt, connection_options

__all__ = ["logs_command"]

_FOREVER = 365 * 24 * 3600.0


def _agent_address(conn: Connection, node: str) -> str:
    with grpc_errors(conn.server):
        reply = conn.nodes().GetNode(npb.GetNodeRequest(name=node))
    if not reply.node.agent_address:
        raise fail(
            f"node {node!r} has not told GlobalManager where its LocalController listens "
            "(is it connected? see `sedna nodes`); pass --lc HOST:PORT"
        )
    return reply.node.agent_address


@connection_options
def logs_command(
    *,
    worker: Annotated[str, typer.Argument(help="Worker name (see `sedna get` / the node).")],
    node: Annotated[
        str | None, typer.Option("--node", help="Node running the worker (asks GlobalManager).")
    ] = None,
    lc: Annotated[
        str | None,
        typer.Option("--lc", help="LocalController address HOST:PORT, instead of --node."),
    ] = None,
    namespace: NamespaceOpt = "default",
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep streaming new output.")
    ] = False,
    tail: Annotated[
        int, typer.Option("--tail", min=0, help="Start with the last N lines (0: all).")
    ] = 0,
    conn: Connection,
) -> None:
    """Print a worker's output (stdout and stderr) from the node it runs on."""
    if not node and not lc:
        raise fail("give --node NODE (looked up on GlobalManager) or --lc HOST:PORT", code=2)
    out = sys.stdout.buffer
    address = lc or _agent_address(conn, node or "")
    request = wpb.StreamWorkerLogsRequest(
        namespace=namespace, worker_name=worker, follow=follow, tail_lines=tail
    )
    with grpc_errors(address, what="LocalController"):
        stream = conn.node_agent(address).StreamWorkerLogs(
            request, timeout=_FOREVER if follow else conn.timeout
        )
        try:
            for chunk in stream:
                out.write(chunk.data)
                out.flush()
        except KeyboardInterrupt:
            stream.cancel()
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.CANCELLED:
                raise
