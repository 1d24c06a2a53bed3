"""``sedna up``: run the whole control plane on this machine, no Kubernetes needed."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sedna.cli.stack import ComponentPlan, RunningComponent, Stack, StackError, plan_stack

__all__ = ["up_command"]

DEFAULT_NODES = "cloud,edge-1"


def _endpoint_table(stack: Stack) -> Table:
    table = Table(title="Sedna is up", title_justify="left")
    table.add_column("Component", no_wrap=True)
    table.add_column("gRPC", no_wrap=True)
    table.add_column("Worker HTTP API", no_wrap=True)
    table.add_column("Metrics", no_wrap=True)
    for component in stack.plan.components:
        label = "GlobalManager" if component.role == "gm" else f"LC {component.node}"
        http = f"http://127.0.0.1:{component.http_port}" if component.http_port else "-"
        table.add_row(
            label,
            component.address,
            http,
            f":{component.metrics_port}/metrics",
        )
    return table


def node_labels_option(values: list[str], nodes: list[str]) -> dict[str, str]:
    """Parse ``--node-labels NODE:KEY=VALUE,...`` options into node -> ``KEY=VALUE,...``.

    Raises
    ------
    StackError
        A value without ``NODE:``, an unknown node, or a label without ``=`` (the LC checks
        the keys and values themselves when it starts).
    """
    result: dict[str, list[str]] = {}
    for value in values:
        node, sep, labels = value.partition(":")
        node = node.strip()
        if not sep or not node:
            raise StackError(f"--node-labels {value!r}: expected NODE:KEY=VALUE,...")
        if node not in nodes:
            raise StackError(f"--node-labels: {node!r} is not one of --nodes ({', '.join(nodes)})")
        parts = [p.strip() for p in labels.split(",") if p.strip()]
        bad = [p for p in parts if "=" not in p or not p.partition("=")[0].strip()]
        if bad or not parts:
            raise StackError(f"--node-labels {value!r}: expected NODE:KEY=VALUE,...")
        result.setdefault(node, []).extend(parts)
    return {node: ",".join(parts) for node, parts in result.items()}


def up_command(  # noqa: PLR0917 - typer passes every option by keyword
    nodes: Annotated[
        str,
        typer.Option(
            "--nodes",
            help="Comma-separated node names; each gets its own LocalController.",
        ),
    ] = DEFAULT_NODES,
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            help="Where the stack keeps its state (resources, node outboxes, worker logs). "
            "Run `sedna up` again with the same directory to continue where it stopped.",
        ),
    ] = Path(".sedna"),
    port: Annotated[
        int,
        typer.Option(
            "--port",
            min=0,
            max=65535,
            help="GlobalManager gRPC port (what `sedna --server` talks to); 0 picks a free one.",
        ),
    ] = 9000,
    start_timeout: Annotated[
        float,
        typer.Option("--start-timeout", min=1.0, help="Seconds each component may take to start."),
    ] = 60.0,
    secrets_dir: Annotated[
        Path | None,
        typer.Option(
            "--secrets-dir",
            exists=True,
            file_okay=False,
            dir_okay=True,
            readable=True,
            help="Directory of Kubernetes Secret manifests (YAML, as for kubectl apply) that "
            "a Dataset's credentialName names, e.g. S3 keys; read again on every lookup.",
        ),
    ] = None,
    node_labels: Annotated[
        list[str] | None,
        typer.Option(
            "--node-labels",
            metavar="NODE:KEY=VALUE,...",
            help="Labels of one node, for workers placed by nodeSelector/affinity "
            "(e.g. edge-1:gpu=true,zone=a); repeat for more nodes. Every node also has "
            "kubernetes.io/hostname=<node>.",
        ),
    ] = None,
) -> None:
    """Start a GlobalManager (SQLite store) and one LocalController per node; Ctrl-C stops all."""
    console = Console()
    node_names = [n.strip() for n in nodes.split(",") if n.strip()]
    try:
        plan = plan_stack(
            data_dir.resolve(),
            node_names,
            port,
            secrets_dir=secrets_dir.resolve() if secrets_dir else None,
        )
        plan.node_labels = node_labels_option(node_labels or [], node_names)
    except StackError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    stack = Stack(plan, start_timeout=start_timeout)
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with console.status("Starting the GlobalManager and LocalControllers...") as status:

            def ready(component: ComponentPlan) -> None:
                status.update(f"{component.name} is ready at {component.address}")

            stack.start(on_ready=ready)
        console.print(_endpoint_table(stack))
        console.print(
            f"Logs: {stack.log_dir}\nState: {plan.data_dir}\nTry: [bold]sedna nodes --server "
            f"{plan.gm.address}[/bold]   Stop: Ctrl-C"
        )

        def restarted(child: RunningComponent, code: int) -> None:
            console.print(
                f"[yellow]{child.plan.name} exited with code {code}; restarted "
                f"(restart #{child.restarts}, log {child.log_path})[/yellow]"
            )

        while not stop_requested.wait(0.5):
            stack.check_and_restart(restarted)
    except StackError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        if stack.running:
            console.print("Stopping...")
            stack.stop()
            console.print("Stopped; state kept in " + str(plan.data_dir))
        for sig, handler in previous.items():
            signal.signal(sig, handler)
