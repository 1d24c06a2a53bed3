"""``sedna demo joint-inference``: the joint-inference example, end to end, on this machine.

Steps, each with a deadline and a progress line:

1. ``examples/joint_inference/prepare.py`` trains the little and big digits models, exports
   them and writes the test dataset and the manifests into ``<data-dir>/example``;
2. the embedded stack starts as ``sedna up`` starts it (:class:`~sedna.cli.stack.Stack`:
   a GlobalManager and the LocalControllers ``cloud`` and ``edge-1``, state in
   ``<data-dir>/stack``);
3. the manifests are applied through the GlobalManager, whose JointInferenceService
   controller has the LocalControllers start the cloud and edge workers;
4. the edge worker infers every test sample; progress is read from its output file;
5. the big model is asked directly (OIP) about every sample, for the cloud-only accuracy;
6. the table (:mod:`sedna.cli.demo_metrics`) and the verdict are printed, and the stack is
   stopped (``--keep-running`` leaves it up until Ctrl-C).

Any failure stops the stack and exits 1 with the reason, naming the worker at fault and
showing the end of its log.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

import sedna
from sedna.api.gm.v1 import resource_service_pb2 as rpb
from sedna.cli.client import Connection, describe_rpc_error
from sedna.cli.demo_cluster import (
    WorkerState,
    condition,
    find_workers,
    log_tail,
    metric_values,
    service_object,
    worker_problem,
)
from sedna.cli.demo_metrics import (
    JointInferenceSummary,
    check,
    read_results,
    summarize,
    summary_table,
)
from sedna.cli.manifests import read_documents
from sedna.cli.stack import RunningComponent, Stack, StackError, plan_stack

__all__ = [
    "DEFAULT_DATA_DIR",
    "DemoError",
    "DemoOptions",
    "claim_data_dir",
    "find_example_dir",
    "pick_port",
    "run_demo",
]

DEFAULT_DATA_DIR = Path(".sedna") / "demo" / "joint-inference"
MARKER = ".sedna-demo"
NODES = ("cloud", "edge-1")
KIND = "JointInferenceService"
NAMESPACE = "default"
PORT_RANGE = (20000, 25000)
"""Where the big model's port is picked (below the controller's range and the ephemeral one)."""
POLL_SECONDS = 0.25
METRICS_WAIT_SECONDS = 20.0
"""At most this long for the GM to show the edge's final counters (the example reports every
second, ``LC_PERIOD``); the table does not wait for them otherwise."""
MODELS_GRACE_SECONDS = 10.0
"""How long the service may say its Models are missing (they are applied with it)."""


class DemoError(Exception):
    """The demo cannot go on; ``details`` are (title, text) pairs such as log tails."""

    def __init__(self, message: str, details: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


class _InterruptedError(Exception):
    """SIGTERM or Ctrl-C."""


@dataclass(frozen=True)
class DemoOptions:
    """The command's options (see ``sedna demo joint-inference --help``)."""

    data_dir: Path = DEFAULT_DATA_DIR
    samples: int = 0
    threshold: float = 0.4
    cloud_worker: str = "inference-server"
    timeout: float = 300.0
    keep_running: bool = False
    example_dir: Path | None = None
    retrain: bool = False
    seed: int = 0
    report: Path | None = None


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


def find_example_dir(explicit: Path | None = None) -> Path:
    """The ``examples/joint_inference`` folder: ``explicit``, else next to the installed SDK
    (an editable install from the repository, as ``make install`` does), else under the
    current directory.

    Raises
    ------
    DemoError
        No such folder with a ``prepare.py``.
    """
    here = Path(sedna.__file__).resolve().parents[2] / "examples" / "joint_inference"
    candidates = [explicit] if explicit else [here, Path.cwd() / "examples" / "joint_inference"]
    for candidate in candidates:
        if candidate is not None and (candidate / "prepare.py").is_file():
            return candidate.resolve()
    where = ", ".join(str(c) for c in candidates if c is not None)
    raise DemoError(
        f"cannot find the joint-inference example (prepare.py) in {where}: run the demo from "
        "a checkout of the Sedna repository installed with `make install`, or pass "
        "--example-dir"
    )


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def claim_data_dir(data_dir: Path) -> None:
    """Make ``data_dir`` the demo's, and clear the previous run's stack state.

    Trained models are kept (they are reused for the same seed); the stack state (resources,
    node state, logs) is removed so every run starts from an empty control plane.

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
    (data_dir / MARKER).write_text("created by `sedna demo joint-inference`\n")
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


def pick_port(seed: str, port_range: tuple[int, int] = PORT_RANGE) -> int:
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
    raise DemoError(f"no free port in {low}-{high - 1} for the big model")


@contextlib.contextmanager
def _venv_first_on_path() -> Iterator[None]:
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


def _read_test_set(path: Path) -> tuple[np.ndarray, np.ndarray]:
    labels: list[int] = []
    images: list[list[float]] = []
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for row in reader:
            labels.append(int(row[0]))
            images.append([float(v) for v in row[1:]])
    return np.asarray(images, dtype=np.float32).reshape(-1, 8, 8), np.asarray(labels)


@dataclass
class _Run:
    """State of one demo run."""

    options: DemoOptions
    console: Console
    deadline: Deadline
    example: dict[str, Any] = field(default_factory=dict)
    stack: Stack | None = None
    conn: Connection | None = None
    agents: dict[str, str] = field(default_factory=dict)
    service: str = ""
    cloud_port: int = 0
    notes: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ helpers

    def say(self, progress: Progress, text: str) -> None:
        progress.console.print(text, highlight=False)

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

    def workers(self) -> list[WorkerState]:
        assert self.conn is not None
        return find_workers(self.conn, self.agents, KIND, self.service)

    def fail_with_logs(self, message: str, workers: list[WorkerState]) -> DemoError:
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
            node_dir = self.options.data_dir / "stack" / "nodes" / worker.node
            full = next(iter(node_dir.rglob(f"{worker.name}.log")), None)
            if full is not None:
                title += f" (whole log: {full})"
            details.append((title, log_tail(self.conn, worker)))
        return DemoError(message, details)

    def check_workers(self) -> list[WorkerState]:
        """The service's workers; raises when one of them is failing."""
        workers = self.workers()
        for worker in workers:
            problem = worker_problem(worker)
            if problem:
                raise self.fail_with_logs(problem, [worker])
        return workers

    def service_status(self) -> dict[str, Any] | None:
        assert self.conn is not None
        return service_object(self.conn, KIND, NAMESPACE, self.service)

    def waiting_reason(self) -> str:
        obj = self.service_status()
        ready = condition(obj, "Ready")
        if ready and ready.get("status") != "True":
            return f"{ready.get('reason', '')}: {ready.get('message', '')}".strip(": ")
        phase = ((obj or {}).get("status") or {}).get("phase")
        return f"phase {phase}" if phase else "the controller has not reported yet"

    # ------------------------------------------------------------------ steps

    def prepare(self, progress: Progress, example_dir: Path) -> None:
        task = progress.add_task("Train and export the models", total=None)
        out = self.options.data_dir / "example"
        self.cloud_port = pick_port(str(self.options.data_dir.resolve()))
        command = [
            sys.executable,
            str(example_dir / "prepare.py"),
            "--out",
            str(out),
            "--seed",
            str(self.options.seed),
            "--samples",
            str(self.options.samples),
            "--threshold",
            f"{self.options.threshold:g}",
            "--cloud-worker",
            self.options.cloud_worker,
            "--cloud-port",
            str(self.cloud_port),
        ]
        if self.options.retrain:
            command.append("--force")
        began = time.monotonic()
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=max(1.0, self.deadline.remaining()),
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise DemoError(
                f"timed out after {self.deadline.seconds:g}s training the models "
                f"({example_dir / 'prepare.py'}); raise --timeout on a slow machine"
            ) from None
        lines = (done.stdout or "").strip().splitlines()
        if done.returncode != 0 or not lines:
            tail = "\n".join(((done.stdout or "") + (done.stderr or "")).splitlines()[-20:])
            raise DemoError(
                f"preparing the example failed (exit code {done.returncode}): {' '.join(command)}",
                [("prepare.py output (last lines)", tail or "(no output)")],
            )
        try:
            self.example = json.loads(lines[-1])
        except ValueError:
            raise DemoError("prepare.py did not print its summary as JSON") from None
        self.service = str(self.example["service"])
        offline = self.example["offline"]
        progress.update(task, total=1, completed=1)
        self.say(
            progress,
            f"[green]✓[/green] models ready in {time.monotonic() - began:.1f}s: little (edge) "
            f"{offline['little_accuracy']:.1%}, big (cloud) {offline['big_accuracy']:.1%} on "
            f"{self.example['samples']} held-out samples ({out})",
        )

    def start_stack(self, progress: Progress) -> None:
        task = progress.add_task("Start the GlobalManager and LocalControllers", total=None)
        began = time.monotonic()
        try:
            plan = plan_stack((self.options.data_dir / "stack").resolve(), list(NODES), 0)
        except StackError as exc:
            raise DemoError(str(exc)) from None
        self.stack = Stack(plan, start_timeout=max(1.0, min(60.0, self.deadline.remaining())))

        def ready(component: Any) -> None:
            progress.update(task, description=f"{component.name} is ready at {component.address}")

        with _venv_first_on_path():
            try:
                self.stack.start(on_ready=ready)
            except StackError as exc:
                raise DemoError(f"the stack did not start: {exc}") from None
        self.conn = Connection(server=plan.gm.address, timeout=10.0)
        self.agents = {c.node: c.address for c in plan.components if c.role == "lc"}
        progress.update(task, total=1, completed=1, description="Start the stack")
        self.say(
            progress,
            f"[green]✓[/green] stack up in {time.monotonic() - began:.1f}s: GlobalManager "
            f"{plan.gm.address}, LocalControllers "
            + ", ".join(f"{n} {a}" for n, a in self.agents.items())
            + f" (logs {self.stack.log_dir})",
        )

    def apply(self, progress: Progress) -> None:
        assert self.conn is not None
        manifest = Path(self.example["manifest"])
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
        self.say(progress, f"[green]✓[/green] applied {', '.join(applied)} ({manifest})")

    def cloud_ready(self) -> bool:
        from sedna.service.oip_client import InferenceClient  # noqa: PLC0415

        try:
            with InferenceClient("127.0.0.1", self.cloud_port, self.service, timeout=1.0) as c:
                return c.ready(timeout=1.0)
        except Exception:
            return False

    def wait_workers(self, progress: Progress) -> None:
        task = progress.add_task("Start the workers", total=None)
        began = time.monotonic()
        models_missing_since: float | None = None
        while True:
            self.supervise()
            workers = self.check_workers()
            running = {w.node for w in workers if w.phase == "Running"}
            status = self.service_status()
            valid, models = condition(status, "Valid"), condition(status, "ModelsReady")
            if valid and valid.get("status") == "False":
                raise DemoError(f"{KIND} {self.service} is invalid: {valid.get('message', '')}")
            if models and models.get("status") == "False":
                # Everything was applied at once: a Model still missing is not coming.
                models_missing_since = models_missing_since or time.monotonic()
                if time.monotonic() - models_missing_since > MODELS_GRACE_SECONDS:
                    raise DemoError(
                        f"{KIND} {self.service}: {models.get('reason', '')}: "
                        f"{models.get('message', '')}"
                    )
            else:
                models_missing_since = None
            if running >= set(NODES) and self.cloud_ready():
                break
            if self.deadline.remaining() <= 0:
                raise self.fail_with_logs(
                    f"timed out after {self.deadline.seconds:g}s waiting for the workers "
                    f"({self.waiting_reason()}); raise --timeout on a slow machine",
                    workers,
                )
            state = ", ".join(f"{w.name} {w.phase}" for w in workers) or "none yet"
            progress.update(task, description=f"Start the workers ({state})")
            time.sleep(POLL_SECONDS)
        progress.update(task, total=1, completed=1, description="Start the workers")
        names = ", ".join(f"{w.name} on {w.node}" for w in workers)
        self.say(
            progress,
            f"[green]✓[/green] workers running in {time.monotonic() - began:.1f}s: {names}; "
            f"big model served on 127.0.0.1:{self.cloud_port}",
        )

    def wait_samples(self, progress: Progress) -> dict[int, Any]:
        total = int(self.example["samples"])
        path = Path(self.example["results"])
        task = progress.add_task("Infer the test samples at the edge", total=total)
        began = time.monotonic()
        while True:
            self.supervise()
            results = read_results(path)
            hard = sum(1 for r in results.values() if r.is_hard)
            progress.update(
                task,
                completed=min(len(results), total),
                description=f"Infer the test samples at the edge ({hard} offloaded)",
            )
            if len(results) >= total:
                break
            workers = self.check_workers()
            if self.deadline.remaining() <= 0:
                raise self.fail_with_logs(
                    f"timed out after {self.deadline.seconds:g}s with {len(results)} of {total} "
                    "samples inferred; raise --timeout on a slow machine",
                    workers,
                )
            time.sleep(POLL_SECONDS)
        self.say(
            progress,
            f"[green]✓[/green] {total} samples inferred in {time.monotonic() - began:.1f}s, "
            f"{hard} offloaded to the cloud ({path})",
        )
        return results

    def cloud_only(self, progress: Progress) -> dict[int, int]:
        from sedna.service.oip_client import InferenceClient  # noqa: PLC0415

        images, _ = _read_test_set(Path(self.example["dataset"]))
        task = progress.add_task("Cloud-only pass (big model, direct OIP)", total=len(images))
        labels: dict[int, int] = {}
        try:
            with InferenceClient("127.0.0.1", self.cloud_port, self.service, timeout=10.0) as c:
                for index, image in enumerate(images):
                    result = np.asarray(c.infer(image), dtype=np.float64).reshape(-1)
                    labels[index] = int(np.argmax(result))
                    progress.update(task, completed=index + 1)
                    self.deadline.check("asking the big model about every sample")
        except DemoError:
            raise
        except Exception as exc:
            raise DemoError(f"the cloud-only pass failed: {exc}") from None
        return labels

    def reported_metrics(self, total: int) -> dict[str, str]:
        """The edge's counters as the GlobalManager shows them (waits a little for them)."""
        end = time.monotonic() + min(METRICS_WAIT_SECONDS, self.deadline.remaining())
        metrics: dict[str, str] = {}
        while True:
            metrics = metric_values(self.service_status())
            try:
                if int(float(metrics.get("inferenceNumber", "0"))) >= total:
                    return metrics
            except ValueError:
                pass
            if time.monotonic() >= end:
                return metrics
            time.sleep(POLL_SECONDS)


def _short(value: str) -> str:
    """A reported metric value, with long decimals cut to 3 places."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() else f"{number:.3f}"


def _print_error(console: Console, error: DemoError) -> None:
    console.print(f"[red]error:[/red] {escape(str(error))}")
    for title, text in error.details:
        console.print(Panel(escape(text), title=escape(title), title_align="left", expand=False))


def _hold(run: _Run, console: Console) -> None:
    assert run.stack is not None
    plan = run.stack.plan
    console.print(
        f"The stack keeps running: [bold]sedna get ji --server {plan.gm.address}[/bold], "
        f"[bold]sedna logs <worker> --node edge-1 --server {plan.gm.address}[/bold]; "
        "Ctrl-C stops it."
    )
    while True:
        run.supervise()
        time.sleep(0.5)


def _write_report(
    path: Path,
    summary: JointInferenceSummary,
    run: _Run,
    problems: list[str],
    metrics: dict[str, str],
) -> None:
    report = {
        "summary": summary.to_dict(),
        "problems": problems,
        "offline": run.example.get("offline"),
        "threshold_cross_entropy": run.options.threshold,
        "service": run.service,
        "reported_metrics": metrics,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def _install_signals() -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise _InterruptedError(signal.Signals(signum).name)

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def _conclude(run: _Run, summary: JointInferenceSummary, metrics: dict[str, str]) -> int:
    """Print the table and the verdict; the exit code."""
    console = run.console
    console.print(summary_table(summary, title=f"Joint inference: {run.service}"))
    if metrics:
        shown = ", ".join(f"{k} {_short(v)}" for k, v in sorted(metrics.items()))
        console.print(f"Reported by the edge worker to the GlobalManager: {shown}")
    for note in run.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    problems = check(summary)
    if run.options.report:
        _write_report(run.options.report, summary, run, problems, metrics)
    for problem in problems:
        console.print(f"[red]error:[/red] {escape(problem)}")
    if problems:
        return 1
    cloud = "-" if summary.cloud_accuracy is None else f"{summary.cloud_accuracy:.1%}"
    console.print(
        f"[green]Joint inference beats the edge alone:[/green] {summary.joint_accuracy:.1%} vs "
        f"{summary.edge_accuracy:.1%} accuracy, offloading {summary.offload_ratio:.1%} of the "
        f"samples (big model alone: {cloud})."
    )
    return 0


def _measure(run: _Run) -> int:
    """Every step up to the verdict; the exit code."""
    example_dir = find_example_dir(run.options.example_dir)
    claim_data_dir(run.options.data_dir)
    columns = (
        SpinnerColumn(finished_text="[green]✓[/green]"),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=run.console, transient=False) as progress:
        run.prepare(progress, example_dir)
        run.start_stack(progress)
        run.apply(progress)
        run.wait_workers(progress)
        results = run.wait_samples(progress)
        cloud_labels = run.cloud_only(progress)
    summary = summarize(results.values(), cloud_labels)
    return _conclude(run, summary, run.reported_metrics(summary.samples))


def _stop(run: _Run) -> None:
    """Close the connections and stop the stack (its LocalControllers stop the workers)."""
    # A second Ctrl-C must not cut the stop short (children would be left running).
    with contextlib.suppress(ValueError):  # not the main thread: no signals to mask
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
    if run.conn is not None:
        run.conn.close()
    if run.stack is not None and run.stack.running:
        run.console.print("Stopping the stack...")
        began = time.monotonic()
        run.stack.stop()
        run.console.print(
            f"Stopped in {time.monotonic() - began:.1f}s; models, worker output, state and "
            f"logs kept in {run.options.data_dir}"
        )


def run_demo(options: DemoOptions, console: Console | None = None) -> int:
    """Run the demo; returns the exit code (0: the table shows joint inference winning).

    Parameters
    ----------
    options
        The command's options.
    console
        Where progress, the table and errors go (stdout by default).
    """
    run = _Run(
        options=options,
        console=console or Console(highlight=False),
        deadline=Deadline(options.timeout),
    )
    restore = _install_signals()
    code = 130
    try:
        code = _measure(run)
        if options.keep_running:
            _hold(run, run.console)
    except DemoError as exc:
        _print_error(run.console, exc)
        code = 1
    except _InterruptedError as exc:
        run.console.print(f"Interrupted ({exc}).")
    finally:
        try:
            _stop(run)
        finally:
            restore()
    return code
