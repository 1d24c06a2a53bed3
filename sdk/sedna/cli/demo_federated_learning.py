"""``sedna demo federated-learning``: the federated-learning example, end to end, on this machine.

Steps, each with a deadline and a progress line:

1. ``examples/federated_learning/prepare.py`` writes three non-IID splits of scikit-learn's
   digits (one per edge node), the held-out test set, the initial model and the manifests
   into ``<data-dir>/example``, and trains each node's model *alone* on its own split with the
   job's whole epoch budget (the baselines);
2. the embedded stack starts as ``sedna up`` starts it (a GlobalManager and the
   LocalControllers ``cloud``, ``edge-1``, ``edge-2``, ``edge-3``; state in
   ``<data-dir>/stack``);
3. the manifests are applied; the FederatedLearningJob controller has the LocalControllers
   start the aggregation worker (``sedna-aggregator``) on ``cloud`` and a trainer on each
   edge node;
4. the rounds are followed on the aggregator (``GetSessionStatus``) and the job's status
   until the job succeeds;
5. ``evaluate.py`` scores the global model of every round on the held-out test set;
6. the table and the verdict (the federated model must beat every node's model trained alone)
   are printed and the stack is stopped (``--keep-running`` leaves it up until Ctrl-C).

Any failure stops the stack and exits 1 with the reason, naming the worker at fault and
showing the end of its log.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
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
from rich.table import Table

from sedna.api.aggregator.v1 import aggregation_service_pb2 as apb
from sedna.api.aggregator.v1 import aggregation_service_pb2_grpc as apb_grpc
from sedna.cli.demo_cluster import (
    WorkerState,
    condition,
    find_workers,
    service_object,
)
from sedna.cli.demo_common import (
    Deadline,
    DemoError,
    DemoInterruptedError,
    DemoStack,
    claim_data_dir,
    find_example_dir,
    install_signals,
    pick_port,
    print_error,
    say,
)
from sedna.cli.demo_paths import FEDERATED_LEARNING_DATA_DIR

__all__ = [
    "DEFAULT_DATA_DIR",
    "FederatedOptions",
    "FederatedSummary",
    "check",
    "run_demo",
    "summary_table",
    "worker_problem",
]

DEFAULT_DATA_DIR = FEDERATED_LEARNING_DATA_DIR
EXAMPLE_FOLDER = "federated_learning"
NODES = ("cloud", "edge-1", "edge-2", "edge-3")
KIND = "FederatedLearningJob"
POLL_SECONDS = 0.25
AGG_PORT_RANGE = (25000, 27000)
"""Where the aggregator's port is picked (apart from the joint-inference demo's range)."""


@dataclass(frozen=True)
class FederatedOptions:
    """The command's options (see ``sedna demo federated-learning --help``)."""

    data_dir: Path = DEFAULT_DATA_DIR
    rounds: int = 5
    epochs: int = 2
    round_timeout: float = 60.0
    timeout: float = 300.0
    keep_running: bool = False
    example_dir: Path | None = None
    seed: int = 0
    report: Path | None = None


@dataclass(frozen=True)
class FederatedSummary:
    """What the demo measured: the numbers of the table."""

    job: str
    rounds: int
    epochs: int
    test_samples: int
    initial_accuracy: float
    round_accuracy: dict[int, float]
    round_metrics: dict[int, dict[str, float]]
    alone_accuracy: dict[str, float]
    nodes: dict[str, dict[str, Any]]
    consistent: bool

    @property
    def final_round(self) -> int:
        """The last aggregated round."""
        return max(self.round_accuracy)

    @property
    def federated_accuracy(self) -> float:
        """The test accuracy of the final global model."""
        return self.round_accuracy[self.final_round]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``--report``)."""
        return {
            "job": self.job,
            "rounds": self.rounds,
            "epochs": self.epochs,
            "test_samples": self.test_samples,
            "initial_accuracy": self.initial_accuracy,
            "round_accuracy": {str(k): v for k, v in sorted(self.round_accuracy.items())},
            "round_metrics": {str(k): v for k, v in sorted(self.round_metrics.items())},
            "final_round": self.final_round,
            "federated_accuracy": self.federated_accuracy,
            "alone_accuracy": dict(self.alone_accuracy),
            "nodes": self.nodes,
            "consistent": self.consistent,
        }


def worker_problem(worker: WorkerState) -> str | None:
    """Why a worker of the job is failing (None while it starts, runs or has finished well).

    Unlike a serving worker, a trainer or the aggregator exiting 0 is how the job ends. In the
    demo nothing should crash, so the first crash is reported (the LocalController would
    restart the worker, ``restartPolicy: OnFailure``, and a crashing script would only crash
    again).
    """
    if worker.phase == "Failed":
        return f"worker {worker.name} on node {worker.node} failed (exit code {worker.exit_code})"
    if worker.restart_count >= 1:
        if worker.last_termination_reason:
            why = worker.last_termination_reason
        else:
            last = worker.last_exit_code or worker.exit_code
            why = f"exit code {last}" if last else "exited"
        times = "once" if worker.restart_count == 1 else f"{worker.restart_count} times"
        return f"worker {worker.name} on node {worker.node} crashed ({why}; restarted {times})"
    return None


def check(summary: FederatedSummary) -> list[str]:
    """What is wrong with the result (empty: the federated model beats every node alone)."""
    problems: list[str] = []
    if summary.final_round < summary.rounds:
        problems.append(f"the job ended after round {summary.final_round}, not {summary.rounds}")
    for node, alone in sorted(summary.alone_accuracy.items()):
        if summary.federated_accuracy <= alone:
            problems.append(
                f"the federated model ({summary.federated_accuracy:.1%}) does not beat {node}'s "
                f"model trained alone ({alone:.1%})"
            )
    if not summary.consistent:
        problems.append("the trainers ended with different global models")
    return problems


def _classes(node: dict[str, Any]) -> str:
    classes = [int(c) for c in node.get("dominant_classes", [])]
    if classes and classes == list(range(classes[0], classes[-1] + 1)):
        return f"{classes[0]}-{classes[-1]}"
    return ",".join(str(c) for c in classes)


def summary_table(summary: FederatedSummary, title: str) -> Table:
    """The result table: accuracy per round, then the federated model against each node."""
    table = Table(title=title, title_justify="left")
    table.add_column("model")
    table.add_column("test accuracy", justify="right")
    table.add_column("detail")
    table.add_row("initial model", f"{summary.initial_accuracy:.1%}", "every trainer starts here")
    for number in sorted(summary.round_accuracy):
        metrics = summary.round_metrics.get(number, {})
        detail = ", ".join(f"train {k} {v:.3f}" for k, v in sorted(metrics.items()))
        table.add_row(
            f"global model, round {number}", f"{summary.round_accuracy[number]:.1%}", detail
        )
    table.add_section()
    budget = summary.rounds * summary.epochs
    table.add_row(
        "federated",
        f"{summary.federated_accuracy:.1%}",
        f"round {summary.final_round}, {len(summary.alone_accuracy)} nodes, "
        f"{summary.rounds} x {summary.epochs} epochs",
    )
    for node, alone in sorted(summary.alone_accuracy.items()):
        info = summary.nodes.get(node, {})
        table.add_row(
            f"{node} alone",
            f"{alone:.1%}",
            f"{info.get('samples', '?')} samples, mostly classes {_classes(info)}, {budget} epochs",
        )
    return table


def _run_script(command: list[str], deadline: Deadline, what: str) -> dict[str, Any]:
    """Run an example script; its last output line parsed as JSON."""
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=max(1.0, deadline.remaining()),
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise DemoError(
            f"timed out after {deadline.seconds:g}s {what} ({command[1]}); raise --timeout on "
            "a slow machine"
        ) from None
    lines = (done.stdout or "").strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join(((done.stdout or "") + (done.stderr or "")).splitlines()[-20:])
        raise DemoError(
            f"{what} failed (exit code {done.returncode}): {' '.join(command)}",
            [(f"{Path(command[1]).name} output (last lines)", tail or "(no output)")],
        )
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except ValueError:
        raise DemoError(f"{Path(command[1]).name} did not print its result as JSON") from None
    return result


@dataclass
class _Run:
    """State of one demo run."""

    options: FederatedOptions
    console: Console
    deadline: Deadline
    cluster: DemoStack
    example_dir: Path = Path()
    example: dict[str, Any] = field(default_factory=dict)
    agg_port: int = 0
    round_metrics: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        return (self.options.data_dir / "example").resolve()

    @property
    def job(self) -> str:
        return str(self.example["job"])

    @property
    def session_id(self) -> str:
        return f"{self.example['namespace']}/{self.job}"

    def workers(self) -> list[WorkerState]:
        assert self.cluster.conn is not None
        return find_workers(self.cluster.conn, self.cluster.agents, KIND, self.job)

    def check_workers(self) -> list[WorkerState]:
        """The job's workers; raises, with the worker's log, when one of them is failing."""
        workers = self.workers()
        for worker in workers:
            problem = worker_problem(worker)
            if problem:
                raise self.cluster.fail_with_logs(problem, [worker])
        return workers

    def job_status(self) -> dict[str, Any]:
        assert self.cluster.conn is not None
        obj = service_object(self.cluster.conn, KIND, str(self.example["namespace"]), self.job)
        return obj or {}

    # ------------------------------------------------------------------ steps

    def prepare(self, progress: Progress) -> None:
        task = progress.add_task("Split the data, train each node alone", total=None)
        self.agg_port = pick_port(
            str(self.options.data_dir.resolve()), AGG_PORT_RANGE, what="the aggregator"
        )
        began = time.monotonic()
        self.example = _run_script(
            [
                sys.executable,
                str(self.example_dir / "prepare.py"),
                "--out",
                str(self.out),
                "--seed",
                str(self.options.seed),
                "--rounds",
                str(self.options.rounds),
                "--epochs",
                str(self.options.epochs),
                "--agg-port",
                str(self.agg_port),
                "--round-timeout",
                f"{self.options.round_timeout:g}",
            ],
            self.deadline,
            "preparing the example",
        )
        progress.update(task, total=1, completed=1)
        alone = ", ".join(f"{n} {a:.1%}" for n, a in self.example["alone_accuracy"].items())
        say(
            progress,
            f"[green]✓[/green] data and baselines ready in {time.monotonic() - began:.1f}s: "
            f"each node alone ({self.options.rounds * self.options.epochs} epochs) {alone} on "
            f"{self.example['test_samples']} held-out samples ({self.out})",
        )

    def session_status(
        self, stub: apb_grpc.AggregationServiceStub
    ) -> apb.GetSessionStatusResponse | None:
        try:
            reply: apb.GetSessionStatusResponse = stub.GetSessionStatus(
                apb.GetSessionStatusRequest(session_id=self.session_id), timeout=2.0
            )
        except grpc.RpcError:
            return None  # the aggregator is starting, or no trainer joined yet
        return reply

    def announce_rounds(
        self,
        progress: Progress,
        seen: int,
        done: int,
        metrics: dict[str, float],
        began: float,
    ) -> None:
        """Print that rounds ``seen + 1`` .. ``done`` were aggregated."""
        self.round_metrics[done] = metrics
        shown = ", ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items()))
        label = f"round {done}" if done == seen + 1 else f"rounds {seen + 1}-{done}"
        say(
            progress,
            f"[green]✓[/green] {label} aggregated at {time.monotonic() - began:.1f}s"
            + (f" (trainers' {shown})" if shown else ""),
        )

    def follow_rounds(self, progress: Progress) -> None:
        """Follow the rounds until the job succeeded (raises on failures and the deadline)."""
        rounds = int(self.example["rounds"])
        task = progress.add_task("Federated rounds", total=rounds)
        began = time.monotonic()
        seen = 0
        with grpc.insecure_channel(f"127.0.0.1:{self.agg_port}") as channel:
            stub = apb_grpc.AggregationServiceStub(channel)
            while True:
                self.cluster.supervise()
                workers = self.check_workers()
                reply = self.session_status(stub)
                if reply is not None:
                    state = apb.SessionState.Name(reply.state).removeprefix("SESSION_STATE_")
                    done = reply.current_round if state == "COMPLETED" else reply.current_round - 1
                    if done > seen:
                        metrics = {k: float(v) for k, v in reply.metrics.items()}
                        self.announce_rounds(progress, seen, done, metrics, began)
                        seen = done
                    description = (
                        f"Federated rounds ({state.lower().replace('_', ' ')}, "
                        f"{len(reply.clients)} trainers joined)"
                    )
                    progress.update(task, completed=min(seen, rounds), description=description)
                else:
                    state_text = ", ".join(f"{w.name} {w.phase}" for w in workers) or "none yet"
                    progress.update(task, description=f"Start the workers ({state_text})")
                status = self.job_status()
                phase = (status.get("status") or {}).get("phase")
                if phase == "Failed":
                    failed = condition(status, "Failed") or {}
                    bad = [w for w in workers if w.phase == "Failed"] or workers
                    raise self.cluster.fail_with_logs(
                        f"{KIND} {self.job} failed: {failed.get('message', '')}", bad
                    )
                if phase == "Succeeded":
                    # The last round can complete (and the aggregator exit) between two polls:
                    # ask once more, then take the round the trainers reported to the job.
                    reply = self.session_status(stub)
                    final = int((status.get("status") or {}).get("currentRound") or 0)
                    if reply is not None and reply.state == apb.SESSION_STATE_COMPLETED:
                        final = max(final, reply.current_round)
                    final = min(final, rounds)
                    if final > seen:
                        metrics = {k: float(v) for k, v in reply.metrics.items()} if reply else {}
                        self.announce_rounds(progress, seen, final, metrics, began)
                        seen = final
                    break
                if self.deadline.remaining() <= 0:
                    raise self.cluster.fail_with_logs(
                        f"timed out after {self.deadline.seconds:g}s with {seen} of {rounds} "
                        f"rounds aggregated ({self._waiting_reason(status)}); raise --timeout "
                        "on a slow machine",
                        workers,
                    )
                time.sleep(POLL_SECONDS)
        progress.update(task, completed=rounds, description="Federated rounds")
        say(
            progress,
            f"[green]✓[/green] {KIND} {self.job} succeeded in {time.monotonic() - began:.1f}s",
        )

    @staticmethod
    def _waiting_reason(status: dict[str, Any]) -> str:
        training = condition(status, "Training")
        if training:
            text = f"{training.get('reason', '')}: {training.get('message', '')}"
            return text.strip(": ")
        phase = (status.get("status") or {}).get("phase")
        return f"phase {phase}" if phase else "the controller has not reported yet"

    def evaluate(self, progress: Progress) -> dict[str, Any]:
        task = progress.add_task("Score every round's global model", total=None)
        result = _run_script(
            [sys.executable, str(self.example_dir / "evaluate.py"), "--out", str(self.out)],
            self.deadline,
            "scoring the global models",
        )
        progress.update(task, total=1, completed=1)
        return result


def _summary(run: _Run, evaluation: dict[str, Any]) -> FederatedSummary:
    example = run.example
    return FederatedSummary(
        job=run.job,
        rounds=int(example["rounds"]),
        epochs=int(example["epochs"]),
        test_samples=int(example["test_samples"]),
        initial_accuracy=float(example["initial_accuracy"]),
        round_accuracy={int(k): float(v) for k, v in evaluation["rounds"].items()},
        round_metrics=dict(run.round_metrics),
        alone_accuracy={str(k): float(v) for k, v in example["alone_accuracy"].items()},
        nodes=dict(example["nodes"]),
        consistent=bool(evaluation["consistent"]),
    )


def _conclude(run: _Run, summary: FederatedSummary) -> int:
    """Print the table and the verdict; the exit code."""
    console = run.console
    title = (
        f"Federated learning: {summary.job} (FedAvg, {len(summary.alone_accuracy)} non-IID "
        f"nodes, {summary.test_samples} held-out test samples)"
    )
    console.print(summary_table(summary, title))
    for note in run.cluster.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    problems = check(summary)
    if run.options.report:
        report = {"summary": summary.to_dict(), "problems": problems, "example": run.example}
        run.options.report.parent.mkdir(parents=True, exist_ok=True)
        run.options.report.write_text(json.dumps(report, indent=2) + "\n")
    for problem in problems:
        console.print(f"[red]error:[/red] {escape(problem)}")
    if problems:
        return 1
    best_node, best = max(summary.alone_accuracy.items(), key=lambda item: item[1])
    console.print(
        f"[green]The federated model beats every node alone:[/green] "
        f"{summary.federated_accuracy:.1%} vs at best {best:.1%} ({best_node})."
    )
    return 0


def _measure(run: _Run) -> int:
    """Every step up to the verdict; the exit code."""
    run.example_dir = find_example_dir(EXAMPLE_FOLDER, run.options.example_dir)
    claim_data_dir(run.options.data_dir, "sedna demo federated-learning")
    columns = (
        SpinnerColumn(finished_text="[green]✓[/green]"),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=run.console, transient=False) as progress:
        run.prepare(progress)
        run.cluster.start(progress, run.deadline)
        run.cluster.apply(progress, Path(run.example["manifest"]))
        run.follow_rounds(progress)
        evaluation = run.evaluate(progress)
    return _conclude(run, _summary(run, evaluation))


def run_demo(options: FederatedOptions, console: Console | None = None) -> int:
    """Run the demo; returns the exit code (0: the federated model beat every node alone).

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
        cluster=DemoStack(options.data_dir, NODES),
    )
    restore = install_signals()
    code = 130
    try:
        code = _measure(run)
        if options.keep_running:
            gm = run.cluster.gm_address
            run.cluster.hold(
                run.console,
                f"[bold]sedna get fl --server {gm}[/bold], "
                f"[bold]sedna logs <worker> --node edge-1 --server {gm}[/bold]",
            )
    except DemoError as exc:
        print_error(run.console, exc)
        code = 1
    except DemoInterruptedError as exc:
        run.console.print(f"Interrupted ({exc}).")
    finally:
        try:
            run.cluster.stop(run.console)
        finally:
            restore()
    return code
