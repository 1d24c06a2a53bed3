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

import csv
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from sedna.cli import demo_common
from sedna.cli.client import Connection
from sedna.cli.demo_cluster import (
    WorkerState,
    condition,
    find_workers,
    metric_values,
    service_object,
    worker_problem,
)
from sedna.cli.demo_common import (
    MARKER,
    PORT_RANGE,
    Deadline,
    DemoError,
    DemoInterruptedError,
    DemoStack,
    install_signals,
    print_error,
)
from sedna.cli.demo_metrics import (
    JointInferenceSummary,
    check,
    read_results,
    summarize,
    summary_table,
)
from sedna.cli.demo_paths import JOINT_INFERENCE_DATA_DIR
from sedna.cli.stack import Stack

__all__ = [
    "DEFAULT_DATA_DIR",
    "MARKER",
    "Deadline",
    "DemoError",
    "DemoOptions",
    "claim_data_dir",
    "find_example_dir",
    "pick_port",
    "run_demo",
]

DEFAULT_DATA_DIR = JOINT_INFERENCE_DATA_DIR
NODES = ("cloud", "edge-1")
KIND = "JointInferenceService"
NAMESPACE = "default"
POLL_SECONDS = 0.25
METRICS_WAIT_SECONDS = 20.0
"""At most this long for the GM to show the edge's final counters (the example reports every
second, ``LC_PERIOD``); the table does not wait for them otherwise."""
MODELS_GRACE_SECONDS = 10.0
"""How long the service may say its Models are missing (they are applied with it)."""


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


def find_example_dir(explicit: Path | None = None) -> Path:
    """The ``examples/joint_inference`` folder (see :func:`demo_common.find_example_dir`).

    Raises
    ------
    DemoError
        No such folder with a ``prepare.py``.
    """
    return demo_common.find_example_dir("joint_inference", explicit)


def claim_data_dir(data_dir: Path) -> None:
    """Make ``data_dir`` this demo's (see :func:`demo_common.claim_data_dir`).

    Raises
    ------
    DemoError
        ``data_dir`` is a file, a foreign non-empty folder, or a running demo's.
    """
    demo_common.claim_data_dir(data_dir, "sedna demo joint-inference")


def pick_port(seed: str, port_range: tuple[int, int] = PORT_RANGE) -> int:
    """A free port for the big model (see :func:`demo_common.pick_port`).

    Raises
    ------
    DemoError
        Every port of the range is busy.
    """
    return demo_common.pick_port(seed, port_range, what="the big model")


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
    cluster: DemoStack = field(init=False)
    service: str = ""
    cloud_port: int = 0

    def __post_init__(self) -> None:
        self.cluster = DemoStack(self.options.data_dir, NODES)

    # ------------------------------------------------------------------ helpers

    @property
    def stack(self) -> Stack | None:
        return self.cluster.stack

    @property
    def conn(self) -> Connection | None:
        return self.cluster.conn

    @property
    def agents(self) -> dict[str, str]:
        return self.cluster.agents

    @property
    def notes(self) -> list[str]:
        return self.cluster.notes

    def say(self, progress: Progress, text: str) -> None:
        progress.console.print(text, highlight=False)

    def supervise(self) -> None:
        """Restart a crashed GM/LC as ``sedna up`` does, and note it."""
        self.cluster.supervise()

    def workers(self) -> list[WorkerState]:
        assert self.conn is not None
        return find_workers(self.conn, self.agents, KIND, self.service)

    def fail_with_logs(self, message: str, workers: list[WorkerState]) -> DemoError:
        """A :class:`DemoError` with the end of each worker's log (the GM's when none)."""
        return self.cluster.fail_with_logs(message, workers)

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
        self.cluster.start(progress, self.deadline)

    def apply(self, progress: Progress) -> None:
        self.cluster.apply(progress, Path(self.example["manifest"]))

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


def _hold(run: _Run, console: Console) -> None:
    plan_gm = run.cluster.gm_address
    run.cluster.hold(
        console,
        f"[bold]sedna get ji --server {plan_gm}[/bold], "
        f"[bold]sedna logs <worker> --node edge-1 --server {plan_gm}[/bold]",
    )


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
    run.cluster.stop(run.console)


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
    restore = install_signals()
    code = 130
    try:
        code = _measure(run)
        if options.keep_running:
            _hold(run, run.console)
    except DemoError as exc:
        print_error(run.console, exc)
        code = 1
    except DemoInterruptedError as exc:
        run.console.print(f"Interrupted ({exc}).")
    finally:
        try:
            _stop(run)
        finally:
            restore()
    return code
