"""What every ``sedna demo`` command shares: deadlines, the data directory, the embedded
stack's lifecycle, applying the example's manifests, worker failures with their logs, signals.

Each demo (``demo_joint_inference``, ``demo_federated_learning``) keeps only its own steps and
its table; starting the GlobalManager and the LocalControllers as ``sedna up`` does, waiting
with deadlines and reporting a crashing worker with the end of its log live here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import Progress

import sedna
from sedna.api.gm.v1 import resource_service_pb2 as rpb
from sedna.cli.client import Connection, describe_rpc_error
from sedna.cli.demo_cluster import WorkerState, log_tail
from sedna.cli.manifests import read_documents
from sedna.cli.stack import RunningComponent, Stack, StackError, plan_stack

__all__ = [
    "MARKER",
    "PORT_RANGE",
    "Deadline",
    "DemoError",
    "DemoInterruptedError",
    "DemoStack",
    "claim_data_dir",
    "find_example_dir",
    "install_signals",
    "pick_port",
    "print_error",
    "say",
    "venv_first_on_path",
]

MARKER = ".sedna-demo"
PORT_RANGE = (20000, 25000)
"""Where demo ports are picked (below the controller's range and the ephemeral one)."""


class DemoError(Exception):
    """The demo cannot go on; ``details`` are (title, text) pairs such as log tails."""

    def __init__(self, message: str, details: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


class DemoInterruptedError(Exception):
    """SIGTERM or Ctrl-C."""


class Deadline:
    """The demo's overall deadline; each step waits at most what is left."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left (never negative)."""
        return max(0.0, self.end - time.monotonic())

    def check(self, what: str) -> None:
        """Raise :class:`DemoError` naming ``what`` once the deadline has passed."""
        if self.remaining() <= 0:
            raise DemoError(
                f"timed out after {self.seconds:g}s {what} (raise --timeout on a slow machine)"
            )


def find_example_dir(folder: str, explicit: Path | None = None) -> Path:
    """The ``examples/<folder>`` directory: ``explicit``, else next to the installed SDK (an
    editable install from the repository, as ``make install`` does), else under the current
    directory.

    Raises
    ------
    DemoError
        No such folder with a ``prepare.py``.
    """
    here = Path(sedna.__file__).resolve().parents[2] / "examples" / folder
    candidates = [explicit] if explicit else [here, Path.cwd() / "examples" / folder]
    for candidate in candidates:
        if candidate is not None and (candidate / "prepare.py").is_file():
            return candidate.resolve()
    where = ", ".join(str(c) for c in candidates if c is not None)
    label = folder.replace("_", "-")
    raise DemoError(
        f"cannot find the {label} example (prepare.py) in {where}: run the demo from "
        "a checkout of the Sedna repository installed with `make install`, or pass "
        "--example-dir"
    )


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def claim_data_dir(data_dir: Path, command: str = "sedna demo") -> None:
    """Make ``data_dir`` the demo's, and clear the previous run's stack state.

    Trained models are kept (a demo may reuse them); the stack state (resources, node state,
    logs) is removed so every run starts from an empty control plane.

    Parameters
    ----------
    data_dir
        The ``--data-dir``.
    command
        Written into the marker file (which demo owns the directory).

    Raises
    ------
    DemoError
        ``data_dir`` is a file, a non-empty folder the demo did not create, or the folder of
        a demo whose stack still runs (``--keep-running``).
    """
    if data_dir.exists() and not data_dir.is_dir():
        raise DemoError(f"--data-dir {data_dir} is a file")
    if data_dir.is_dir() and any(data_dir.iterdir()) and not (data_dir / MARKER).exists():
        raise DemoError(
            f"--data-dir {data_dir} is not empty and was not created by `sedna demo`; "
            "choose another directory"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / MARKER).write_text(f"created by `{command}`\n")
    stack_dir = data_dir / "stack"
    plan_file = stack_dir / "stack.json"
    if plan_file.exists():
        try:
            components = json.loads(plan_file.read_text()).get("components", [])
            ports = [int(c["port"]) for c in components]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            ports = []
        if any(_listening(p) for p in ports):
            raise DemoError(
                f"a demo stack from {data_dir} is still running (started with --keep-running?); "
                "stop it (Ctrl-C in its terminal) or use another --data-dir"
            )
    shutil.rmtree(stack_dir, ignore_errors=True)


def pick_port(seed: str, port_range: tuple[int, int] = PORT_RANGE, what: str = "the demo") -> int:
    """A free loopback port of ``port_range``, searched from a hash of ``seed``.

    Raises
    ------
    DemoError
        Every port of the range is busy.
    """
    low, high = port_range
    start = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big") % (high - low)
    for offset in range(high - low):
        port = low + (start + offset) % (high - low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise DemoError(f"no free port in {low}-{high - 1} for {what}")


@contextlib.contextmanager
def venv_first_on_path() -> Iterator[None]:
    """Put this interpreter's bin directory first on PATH for the stack's children.

    The LocalControllers start workers with their own PATH; this makes ``python3`` and the
    Sedna console scripts resolve to this environment even when it is not activated.
    """
    bin_dir = str(Path(sys.executable).parent)
    before = os.environ.get("PATH")
    os.environ["PATH"] = os.pathsep.join(
        [bin_dir, *(p for p in (before or "").split(os.pathsep) if p)]
    )
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = before


def say(progress: Progress, text: str) -> None:
    """Print a line above the progress bars."""
    progress.console.print(text, highlight=False)


def print_error(console: Console, error: DemoError) -> None:
    """``error:`` and the message, then each detail (a log tail) in a panel."""
    console.print(f"[red]error:[/red] {escape(str(error))}")
    for title, text in error.details:
        console.print(Panel(escape(text), title=escape(title), title_align="left", expand=False))


def install_signals() -> Callable[[], None]:
    """Turn SIGINT/SIGTERM into :class:`DemoInterruptedError`; returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise DemoInterruptedError(signal.Signals(signum).name)

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


class DemoStack:
    """The embedded stack of one demo run (a GlobalManager and one LocalController per node,
    state in ``<data_dir>/stack``), and what a demo does with it.

    Parameters
    ----------
    data_dir
        The demo's ``--data-dir``.
    nodes
        Node names; each gets a LocalController.
    """

    def __init__(self, data_dir: Path, nodes: Sequence[str]) -> None:
        self.data_dir = data_dir
        self.nodes = tuple(nodes)
        self.stack: Stack | None = None
        self.conn: Connection | None = None
        self.agents: dict[str, str] = {}
        self.notes: list[str] = []

    @property
    def gm_address(self) -> str:
        """The GlobalManager's address ("" before :meth:`start`)."""
        return self.stack.plan.gm.address if self.stack is not None else ""

    def start(self, progress: Progress, deadline: Deadline) -> None:
        """Start the stack as ``sedna up`` does, within the deadline (at most 60 s a part).

        Raises
        ------
        DemoError
            The stack cannot be planned or does not start.
        """
        task = progress.add_task("Start the GlobalManager and LocalControllers", total=None)
        began = time.monotonic()
        try:
            plan = plan_stack((self.data_dir / "stack").resolve(), list(self.nodes), 0)
        except StackError as exc:
            raise DemoError(str(exc)) from None
        self.stack = Stack(plan, start_timeout=max(1.0, min(60.0, deadline.remaining())))

        def ready(component: Any) -> None:
            progress.update(task, description=f"{component.name} is ready at {component.address}")

        with venv_first_on_path():
            try:
                self.stack.start(on_ready=ready)
            except StackError as exc:
                raise DemoError(f"the stack did not start: {exc}") from None
        self.conn = Connection(server=plan.gm.address, timeout=10.0)
        self.agents = {c.node: c.address for c in plan.components if c.role == "lc"}
        progress.update(task, total=1, completed=1, description="Start the stack")
        say(
            progress,
            f"[green]✓[/green] stack up in {time.monotonic() - began:.1f}s: GlobalManager "
            f"{plan.gm.address}, LocalControllers "
            + ", ".join(f"{n} {a}" for n, a in self.agents.items())
            + f" (logs {self.stack.log_dir})",
        )

    def apply(self, progress: Progress, manifest: Path) -> list[str]:
        """Apply every document of ``manifest`` through the GlobalManager; their labels.

        Raises
        ------
        DemoError
            An invalid document or a refused apply (the message names it).
        """
        assert self.conn is not None
        applied: list[str] = []
        stub = self.conn.resources()
        for doc in read_documents([manifest]):
            if doc.result.status != "valid" or doc.data is None:
                errors = "; ".join(str(e) for e in doc.result.errors) or doc.result.reason
                raise DemoError(f"{doc.where}: {errors}")
            try:
                stub.Apply(rpb.ApplyRequest(manifest_json=json.dumps(doc.data).encode()))
            except grpc.RpcError as exc:
                raise DemoError(
                    f"applying {doc.result.label}: {describe_rpc_error(exc, self.conn.server)}"
                ) from None
            applied.append(doc.result.label)
        say(progress, f"[green]✓[/green] applied {', '.join(applied)} ({manifest})")
        return applied

    def supervise(self) -> None:
        """Restart a crashed GM/LC as ``sedna up`` does, and note it."""
        if self.stack is None:
            return

        def restarted(child: RunningComponent, code: int) -> None:
            self.notes.append(
                f"{child.plan.name} exited with code {code} and was restarted (log "
                f"{child.log_path})"
            )

        self.stack.check_and_restart(restarted)

    def fail_with_logs(self, message: str, workers: Sequence[WorkerState]) -> DemoError:
        """A :class:`DemoError` with the end of each worker's log (the GM's when none)."""
        assert self.conn is not None
        details: list[tuple[str, str]] = []
        if not workers and self.stack is not None:
            gm_log = self.stack.log_dir / "gm.log"
            try:
                tail = "\n".join(gm_log.read_text(errors="replace").splitlines()[-20:])
            except OSError:
                tail = "(no log)"
            details.append((f"GlobalManager, last lines (whole log: {gm_log})", tail))
        for worker in workers:
            title = f"{worker.name} on {worker.node}, last lines"
            node_dir = self.data_dir / "stack" / "nodes" / worker.node
            full = next(iter(node_dir.rglob(f"{worker.name}.log")), None)
            if full is not None:
                title += f" (whole log: {full})"
            details.append((title, log_tail(self.conn, worker)))
        return DemoError(message, details)

    def hold(self, console: Console, hint: str) -> None:
        """Keep the stack up (``--keep-running``) until Ctrl-C; ``hint`` says what to try."""
        console.print(f"The stack keeps running: {hint}; Ctrl-C stops it.")
        while True:
            self.supervise()
            time.sleep(0.5)

    def stop(self, console: Console) -> None:
        """Close the connection and stop the stack (its LocalControllers stop the workers)."""
        # A second Ctrl-C must not cut the stop short (children would be left running).
        with contextlib.suppress(ValueError):  # not the main thread: no signals to mask
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
        if self.conn is not None:
            self.conn.close()
        if self.stack is not None and self.stack.running:
            console.print("Stopping the stack...")
            began = time.monotonic()
            self.stack.stop()
            console.print(
                f"Stopped in {time.monotonic() - began:.1f}s; models, worker output, state and "
                f"logs kept in {self.data_dir}"
            )
