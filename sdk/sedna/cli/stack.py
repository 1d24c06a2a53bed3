"""The embedded stack behind ``sedna up``: a GlobalManager plus one LocalController per node.

Each component is a child process running its console script (``sedna-gm``, ``sedna-lc``), so
the stack behaves like a real deployment (separate processes, gRPC on loopback) and a crashed
component is restarted on its own. The plan (ports, paths) is kept in ``<data-dir>/stack.json``
so a restarted stack comes back on the same addresses with the same state.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = [
    "ComponentPlan",
    "RunningComponent",
    "Stack",
    "StackError",
    "StackPlan",
    "plan_stack",
    "wait_healthy",
]

PLAN_FILE = "stack.json"
LOOPBACK = "127.0.0.1"


class StackError(RuntimeError):
    """The stack cannot be planned or started (bad node name, busy port, child failed)."""


@dataclass
class ComponentPlan:
    """One child process: what it is, its ports and how to start it."""

    name: str
    role: str  # "gm" or "lc"
    port: int
    metrics_port: int
    http_port: int = 0
    node: str = ""

    @property
    def address(self) -> str:
        """gRPC address on loopback."""
        return f"{LOOPBACK}:{self.port}"


@dataclass
class StackPlan:
    """Every component of the stack and where its state lives."""

    data_dir: Path
    components: list[ComponentPlan] = field(default_factory=list)
    secrets_dir: Path | None = None
    """Given to the GlobalManager as ``--secrets-dir`` (Secret manifests for credentialName)."""
    node_labels: dict[str, str] = field(default_factory=dict)
    """Node -> ``KEY=VALUE,...``, given to that node's LC as ``--node-labels`` (not stored)."""

    @property
    def gm(self) -> ComponentPlan:
        """The GlobalManager's plan."""
        return next(c for c in self.components if c.role == "gm")

    def save(self) -> None:
        """Write the plan to ``<data-dir>/stack.json``."""
        data = {"components": [asdict(c) for c in self.components]}
        (self.data_dir / PLAN_FILE).write_text(json.dumps(data, indent=2) + "\n")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _check_node_name(name: str) -> None:
    valid = name and len(name) <= 63 and all(ch.isalnum() or ch == "-" for ch in name)
    if not valid or not name[0].isalnum() or not name[-1].isalnum() or name.lower() != name:
        raise StackError(
            f"--nodes: {name!r} is not a valid node name (lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)"
        )


def plan_stack(
    data_dir: Path, nodes: Sequence[str], gm_port: int, *, secrets_dir: Path | None = None
) -> StackPlan:
    """Plan the stack, reusing the ports of an earlier run in the same data directory.

    Parameters
    ----------
    data_dir
        Where all state lives; created when missing.
    nodes
        Node names, one LocalController each.
    gm_port
        The GlobalManager's gRPC port (0 picks a free one); its metrics use the next free port.
    secrets_dir
        Directory of Secret manifests the GlobalManager resolves ``credentialName`` from
        (not stored in ``stack.json``: give it on every run).

    Returns
    -------
    StackPlan
        The plan, saved to ``<data_dir>/stack.json``.

    Raises
    ------
    StackError
        A node name is invalid or repeated.
    """
    if not nodes:
        raise StackError("--nodes: give at least one node name")
    for name in nodes:
        _check_node_name(name)
    duplicates = sorted({n for n in nodes if list(nodes).count(n) > 1})
    if duplicates:
        raise StackError(f"--nodes: repeated node name(s): {', '.join(duplicates)}")
    data_dir.mkdir(parents=True, exist_ok=True)
    previous: dict[str, ComponentPlan] = {}
    plan_path = data_dir / PLAN_FILE
    if plan_path.exists():
        try:
            stored = json.loads(plan_path.read_text())
            previous = {c["name"]: ComponentPlan(**c) for c in stored["components"]}
        except (OSError, ValueError, KeyError, TypeError):
            previous = {}  # an unreadable plan only costs new ports
    plan = StackPlan(data_dir=data_dir, secrets_dir=secrets_dir)
    gm = previous.get("gm")
    if gm is None or (gm_port and gm.port != gm_port):
        gm = ComponentPlan("gm", "gm", gm_port or _free_port(), _free_port())
    plan.components.append(gm)
    for node in nodes:
        lc = previous.get(f"lc-{node}")
        if lc is None:
            lc = ComponentPlan(
                f"lc-{node}", "lc", _free_port(), _free_port(), http_port=_free_port(), node=node
            )
        plan.components.append(lc)
    plan.save()
    return plan


def _script(name: str) -> str:
    # Prefer the console script installed next to this interpreter (the active venv).
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        raise StackError(f"cannot find the {name} command: is Sedna installed in this environment?")
    return found


def component_command(plan: StackPlan, component: ComponentPlan) -> list[str]:
    """The command line that starts one component."""
    common = [
        "--host",
        LOOPBACK,
        "--port",
        str(component.port),
        "--metrics-port",
        str(component.metrics_port),
        "--log-format",
        "json",
    ]
    if component.role == "gm":
        db = plan.data_dir / "gm" / "sedna.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        secrets = ["--secrets-dir", str(plan.secrets_dir)] if plan.secrets_dir else []
        return [
            _script("sedna-gm"),
            *common,
            "--store-url",
            f"sqlite:///{db}",
            "--runtime",
            "local",
            *secrets,
        ]
    node_dir = plan.data_dir / "nodes" / component.node
    node_dir.mkdir(parents=True, exist_ok=True)
    labels = plan.node_labels.get(component.node)
    node_labels = ["--node-labels", labels] if labels else []
    return [
        _script("sedna-lc"),
        *common,
        "--node-name",
        component.node,
        "--gm-address",
        plan.gm.address,
        "--http-port",
        str(component.http_port),
        "--data-dir",
        str(node_dir),
        *node_labels,
    ]


def wait_healthy(address: str, deadline: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Block until the gRPC health service at ``address`` reports SERVING.

    Raises
    ------
    StackError
        ``deadline`` (a ``time.monotonic()`` value) passed, or ``alive()`` turned false.
    """
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if not alive():
                raise StackError(f"the process serving {address} exited during start-up")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StackError(f"{address} did not become healthy in time")
            try:
                reply = stub.Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=min(1.0, remaining)
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            # Not a synchronisation sleep: a back-off between health probes, bounded above.
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


@dataclass
class RunningComponent:
    """A started child and its log file."""

    plan: ComponentPlan
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    restarts: int = 0
    started_at: float = 0.0


class Stack:
    """Start, supervise and stop the components of a :class:`StackPlan`."""

    def __init__(self, plan: StackPlan, *, start_timeout: float = 60.0) -> None:
        self.plan = plan
        self.start_timeout = start_timeout
        self.running: dict[str, RunningComponent] = {}
        self.log_dir = plan.data_dir / "logs"

    def _spawn(self, component: ComponentPlan) -> RunningComponent:
        for port in (component.port, component.metrics_port, component.http_port):
            if port and not _port_is_free(port):
                hint = (
                    "choose another --port"
                    if component.role == "gm" and port == component.port
                    else f"or delete {self.plan.data_dir / PLAN_FILE} to plan new ports"
                )
                raise StackError(
                    f"{component.name}: port {port} on {LOOPBACK} is in use, by another "
                    f"`sedna up` (with this --data-dir or another) or another program; stop "
                    f"it, {hint}"
                )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{component.name}.log"
        log_file = log_path.open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEDNA_")}
        process = subprocess.Popen(
            component_command(self.plan, component),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the supervisor, which stops children in order
        )
        return RunningComponent(component, process, log_path, log_file, started_at=time.monotonic())

    def start(self, on_ready: Callable[[ComponentPlan], None] = lambda _: None) -> None:
        """Start the GlobalManager and, once it is healthy, every LocalController at once;
        ``on_ready(component)`` as each one turns healthy (in plan order).

        The LocalControllers start together: each spends its first seconds importing and
        opening its state, so on several cores (or while one waits for disk) they overlap
        instead of queueing. Each has ``start_timeout`` seconds from its own start.
        """
        gm = [c for c in self.plan.components if c.role == "gm"]
        rest = [c for c in self.plan.components if c.role != "gm"]
        try:
            for batch in (gm, rest):
                started = []
                for component in batch:
                    running = self._spawn(component)
                    self.running[component.name] = running
                    started.append(running)
                for running in started:
                    wait_healthy(
                        running.plan.address,
                        running.started_at + self.start_timeout,
                        alive=lambda r=running: r.process.poll() is None,  # type: ignore[misc]
                    )
                    on_ready(running.plan)
        except StackError as exc:
            self.stop()
            raise StackError(f"{exc} (see the logs in {self.log_dir})") from None

    def check_and_restart(self, on_restart: Callable[[RunningComponent, int], None]) -> None:
        """Restart any child that exited (crash, kill -9); ``on_restart(child, exit_code)``."""
        for name, running in list(self.running.items()):
            code = running.process.poll()
            if code is None:
                continue
            running.log_file.close()
            replacement = self._spawn(running.plan)
            replacement.restarts = running.restarts + 1
            self.running[name] = replacement
            on_restart(replacement, code)

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM every child (LCs first, then the GM), wait ``grace`` seconds, then SIGKILL."""
        order = [c for c in self.running.values() if c.plan.role == "lc"] + [
            c for c in self.running.values() if c.plan.role == "gm"
        ]
        for running in order:
            if running.process.poll() is None:
                running.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for running in order:
            try:
                running.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(running.process.pid, signal.SIGKILL)
                running.process.wait()
            running.log_file.close()
        self.running.clear()
