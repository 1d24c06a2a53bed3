"""``sedna demo``: runnable feature demos on the embedded stack (``sedna demo --help``)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

# The demos' modules (the embedded stack, torch and scikit-learn helpers) are imported when a
# demo runs, not with the CLI: they took most of a second of every `sedna` command's start.
from sedna.cli.demo_paths import FEDERATED_LEARNING_DATA_DIR, JOINT_INFERENCE_DATA_DIR

__all__ = ["CloudWorker", "demo_app"]

demo_app = typer.Typer(
    name="demo",
    help="Run a Sedna feature end to end on this machine, with its example's models and data.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


class CloudWorker(StrEnum):
    """What serves the big model in the demo."""

    INFERENCE_SERVER = "inference-server"
    SCRIPT = "script"


@demo_app.command(
    "joint-inference",
    help=(
        "Train a little (edge) and a big (cloud) model on scikit-learn's digits, start the "
        "embedded stack (as `sedna up`), apply examples/joint_inference, let the edge worker "
        "infer every held-out sample, and print edge-only, joint and cloud-only accuracy, the "
        "offload ratio and latency percentiles. Exits 1 unless joint inference beats the edge "
        "alone while offloading less than half of the samples."
    ),
)
def joint_inference_command(  # noqa: PLR0917 - typer passes every option by keyword
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            help="Where the demo keeps the trained models, the dataset, the worker output and "
            "the stack's state and logs. Models are reused on the next run with the same "
            "--seed; the stack state starts empty every run.",
        ),
    ] = JOINT_INFERENCE_DATA_DIR,
    samples: Annotated[
        int,
        typer.Option(
            "--samples",
            min=0,
            help="Test samples the edge worker infers (the first N of the 450 held out); "
            "0 for all.",
        ),
    ] = 0,
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold",
            min=0.0,
            max=1.0,
            help="Hard example mining (CrossEntropy): a sample goes to the cloud when the "
            "little model's normalised confidence 1 + sum(p ln p) / ln 10 is below this. "
            "Higher offloads more.",
        ),
    ] = 0.4,
    cloud_worker: Annotated[
        CloudWorker,
        typer.Option(
            "--cloud-worker",
            help="What serves the big model: 'inference-server' (sedna-inference, the "
            "example's manifest) or 'script' (the upstream-style BigModelService script "
            "cloud_worker.py).",
        ),
    ] = CloudWorker.INFERENCE_SERVER,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=10.0,
            help="Seconds the whole demo may take, training included, before it gives up "
            "(naming the step and the worker at fault).",
        ),
    ] = 300.0,
    keep_running: Annotated[
        bool,
        typer.Option(
            "--keep-running",
            help="Leave the stack and the workers running after the table, to look around "
            "with `sedna get ji`, `sedna describe`, `sedna logs`; Ctrl-C stops it.",
        ),
    ] = False,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the data split and of the training.")
    ] = 0,
    retrain: Annotated[
        bool, typer.Option("--retrain", help="Train the models again even if cached.")
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            dir_okay=False,
            help="Also write the measured numbers and the verdict to this JSON file.",
        ),
    ] = None,
    example_dir: Annotated[
        Path | None,
        typer.Option(
            "--example-dir",
            file_okay=False,
            help="The examples/joint_inference folder (default: found next to the installed "
            "Sedna checkout, or under the current directory).",
        ),
    ] = None,
) -> None:
    """Run the joint-inference example end to end and print the result table."""
    from sedna.cli.demo_joint_inference import DemoOptions, run_demo  # noqa: PLC0415 - see top

    options = DemoOptions(
        data_dir=data_dir,
        samples=samples,
        threshold=threshold,
        cloud_worker=cloud_worker.value,
        timeout=timeout,
        keep_running=keep_running,
        example_dir=example_dir,
        retrain=retrain,
        seed=seed,
        report=report,
    )
    code = run_demo(options)
    if code:
        raise typer.Exit(code)


@demo_app.command(
    "federated-learning",
    help=(
        "Split scikit-learn's digits over three edge nodes (non-IID: each holds mostly a few "
        "classes), train each node's model alone as a baseline, start the embedded stack (as "
        "`sedna up`, nodes cloud, edge-1, edge-2, edge-3), apply examples/federated_learning "
        "(sedna-aggregator on cloud, a FederatedLearning trainer per edge node), follow the "
        "rounds, and print the test accuracy of every round's global model and of the "
        "federated model against each node's model trained alone. Exits 1 unless the "
        "federated model beats every one of them."
    ),
)
def federated_learning_command(  # noqa: PLR0917 - typer passes every option by keyword
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            help="Where the demo keeps the data splits, the models, the trainers' output and "
            "the stack's state and logs; the stack state and the job's output start empty "
            "every run.",
        ),
    ] = FEDERATED_LEARNING_DATA_DIR,
    rounds: Annotated[
        int,
        typer.Option(
            "--rounds",
            min=1,
            max=100,
            help="Federated rounds (the aggregator's exit_round).",
        ),
    ] = 5,
    epochs: Annotated[
        int,
        typer.Option(
            "--epochs",
            min=1,
            max=100,
            help="Local epochs per round on each trainer. Each baseline (a node alone) trains "
            "for rounds x epochs epochs: the same budget.",
        ),
    ] = 2,
    round_timeout: Annotated[
        float,
        typer.Option(
            "--round-timeout",
            min=1.0,
            help="Seconds a round waits for a silent trainer before closing with the others "
            "(the aggregator's round_timeout_seconds; at least 2 of the 3 must report).",
        ),
    ] = 60.0,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=10.0,
            help="Seconds the whole demo may take before it gives up (naming the step and "
            "the worker at fault).",
        ),
    ] = 300.0,
    keep_running: Annotated[
        bool,
        typer.Option(
            "--keep-running",
            help="Leave the stack running after the table, to look around with "
            "`sedna get fl`, `sedna describe`, `sedna logs`; Ctrl-C stops it.",
        ),
    ] = False,
    seed: Annotated[
        int,
        typer.Option("--seed", help="Seed of the data split, the initial model and training."),
    ] = 0,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            dir_okay=False,
            help="Also write the measured numbers and the verdict to this JSON file.",
        ),
    ] = None,
    example_dir: Annotated[
        Path | None,
        typer.Option(
            "--example-dir",
            file_okay=False,
            help="The examples/federated_learning folder (default: found next to the "
            "installed Sedna checkout, or under the current directory).",
        ),
    ] = None,
) -> None:
    """Run the federated-learning example end to end and print the result table."""
    from sedna.cli import demo_federated_learning as fl_demo  # noqa: PLC0415 - see top

    options = fl_demo.FederatedOptions(
        data_dir=data_dir,
        rounds=rounds,
        epochs=epochs,
        round_timeout=round_timeout,
        timeout=timeout,
        keep_running=keep_running,
        example_dir=example_dir,
        seed=seed,
        report=report,
    )
    code = fl_demo.run_demo(options)
    if code:
        raise typer.Exit(code)
