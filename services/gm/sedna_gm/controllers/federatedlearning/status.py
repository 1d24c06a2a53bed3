"""A FederatedLearningJob's phase and conditions from what its workers do (pure logic).

Conditions (one per type; ``sedna describe fl`` shows them):

- ``Valid``: the spec validates and its templates can be built (reason ``InvalidSpec``);
- ``ResourcesReady``: the Models, Datasets and Secrets it names exist (``ModelNotFound``,
  ``DatasetNotFound``, ``InvalidModel``, ``InvalidDataset``, ``SecretNotFound``...; the
  message names the object and the field that refers to it);
- ``Training``: True while the aggregator runs (``Running``, ``WorkersPending``,
  ``AggregatorFinished`` while trainers still exit; reports add the current round and the
  trainers' sample counts to the message), else why not (``AggregatorPending``,
  ``WaitingForResources``, ``Completed``, ``Failed``, ``InvalidSpec``);
- ``Complete``: True (``Completed``) once the aggregator exited 0 and no trainer is active;
- ``Failed``: True when a worker failed for good (``AggregatorFailed``/``TrainerFailed``,
  the message says which worker, where and why) or the spec is invalid (``InvalidSpec``).

Phase (upstream's rules, the aggregator deciding success): ``Failed`` when any worker failed
for good (after the lifecycle's recreations), ``Succeeded`` when the aggregator succeeded and
no trainer is active, ``Running`` while the aggregator runs or has finished, else ``Pending``.
``Complete`` and ``Failed`` are terminal for the generation they were computed from: a new
spec (``metadata.generation``) starts the job again.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from sedna.resources.worker import WorkerPhaseName
from sedna_gm.controllers.common import ConditionUpdate
from sedna_gm.controllers.conditions import find_condition
from sedna_gm.workloads.lifecycle import WorkersSummary

__all__ = [
    "CONDITION_COMPLETE",
    "CONDITION_FAILED",
    "CONDITION_RESOURCES_READY",
    "CONDITION_TRAINING",
    "CONDITION_VALID",
    "JobStatus",
    "invalid_status",
    "is_finished",
    "job_status",
    "merge_summaries",
    "resources_status",
]

CONDITION_VALID = "Valid"
CONDITION_RESOURCES_READY = "ResourcesReady"
CONDITION_TRAINING = "Training"
CONDITION_COMPLETE = "Complete"
CONDITION_FAILED = "Failed"


@dataclass(frozen=True)
class JobStatus:
    """What to write: phase, conditions, the worker counts and whether the job finished."""

    phase: str
    conditions: tuple[ConditionUpdate, ...]
    active: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    finished: bool = False


def is_finished(status: MutableMapping[str, Any], generation: int) -> bool:
    """Whether ``Complete`` or ``Failed`` is True for ``generation`` (the job is done)."""
    for type_ in (CONDITION_COMPLETE, CONDITION_FAILED):
        cond = find_condition(status, type_) or {}
        if cond.get("status") == "True" and cond.get("observedGeneration") == generation:
            return True
    return False


def merge_summaries(*summaries: WorkersSummary) -> WorkersSummary:
    """One summary of several plans' workers."""
    return WorkersSummary(
        desired=sum(s.desired for s in summaries),
        active=sum(s.active for s in summaries),
        pending=sum(s.pending for s in summaries),
        running=sum(s.running for s in summaries),
        succeeded=sum(s.succeeded for s in summaries),
        failed=sum(s.failed for s in summaries),
        restarting=sum(s.restarting for s in summaries),
        messages=tuple(m for s in summaries for m in s.messages),
        workers={k: v for s in summaries for k, v in s.workers.items()},
    )


def job_status(
    summary: WorkersSummary,
    aggregator: str,
    labels: Mapping[str, str],
    *,
    waiting: str = "",
    resources_message: str = "",
) -> JobStatus:
    """Phase, conditions and counts once every reference resolved and the workers were handled.

    Parameters
    ----------
    summary
        All workers of the job (:func:`merge_summaries`).
    aggregator
        The aggregation worker's name.
    labels
        Worker name -> how conditions name it (``training worker X (Dataset D on node N)``).
    waiting
        Why trainers are not created yet ("" when they are).
    resources_message
        The ``ResourcesReady`` message.
    """
    common: list[ConditionUpdate] = [
        (CONDITION_VALID, "True", "SpecValid", ""),
        (CONDITION_RESOURCES_READY, "True", "Found", resources_message),
    ]
    counts = (summary.active, summary.succeeded, summary.failed)
    not_complete: ConditionUpdate = (CONDITION_COMPLETE, "False", "Training", "")
    not_failed: ConditionUpdate = (CONDITION_FAILED, "False", "NoFailure", "")
    if summary.failed:
        failures = []
        for line in summary.messages:
            name, _, why = line.partition(": ")
            failures.append(f"{labels.get(name, name)} failed: {why}")
        failed_names = {m.partition(": ")[0] for m in summary.messages}
        reason = "AggregatorFailed" if aggregator in failed_names else "TrainerFailed"
        message = "; ".join(failures)
        conditions = (
            *common,
            (CONDITION_TRAINING, "False", "Failed", message),
            (CONDITION_COMPLETE, "False", "Failed", ""),
            (CONDITION_FAILED, "True", reason, message),
        )
        return JobStatus("Failed", conditions, *counts, finished=True)
    agg = summary.workers.get(aggregator)
    agg_phase = agg.phase if agg is not None and not agg.deleting else None
    agg_label = labels.get(aggregator, aggregator)
    active = [
        labels.get(name, name)
        for name, status in summary.workers.items()
        if name != aggregator and status.phase not in _FINISHED
    ]
    missing = summary.desired - len(summary.workers)
    if agg_phase is WorkerPhaseName.SUCCEEDED:
        if not active and not missing and not summary.restarting:
            message = f"{agg_label} exited 0; {summary.succeeded} workers succeeded"
            conditions = (
                *common,
                (CONDITION_TRAINING, "False", "Completed", message),
                (CONDITION_COMPLETE, "True", "Completed", message),
                not_failed,
            )
            return JobStatus("Succeeded", conditions, *counts, finished=True)
        message = f"{agg_label} finished; waiting for {', '.join(active) or 'trainers'} to exit"
        training: ConditionUpdate = (CONDITION_TRAINING, "True", "AggregatorFinished", message)
        return JobStatus("Running", (*common, training, not_complete, not_failed), *counts)
    if agg_phase is WorkerPhaseName.RUNNING:
        pending = [
            labels.get(name, name)
            for name, status in summary.workers.items()
            if status.phase is WorkerPhaseName.PENDING or status.deleting
        ]
        if waiting or pending or missing:
            blockers = waiting or ", ".join(pending) or f"{missing} workers being created"
            training = (CONDITION_TRAINING, "True", "WorkersPending", f"waiting for {blockers}")
        else:
            trainers = summary.desired - 1
            message = f"{agg_label} and {trainers} training workers running"
            training = (CONDITION_TRAINING, "True", "Running", message)
        return JobStatus("Running", (*common, training, not_complete, not_failed), *counts)
    why = waiting or f"{agg_label} is not running yet"
    training = (CONDITION_TRAINING, "False", "AggregatorPending", why)
    return JobStatus("Pending", (*common, training, not_complete, not_failed), *counts)


_FINISHED = (WorkerPhaseName.SUCCEEDED, WorkerPhaseName.FAILED)


def invalid_status(message: str) -> JobStatus:
    """The spec (or a template) is invalid: phase Failed, nothing deployed."""
    return JobStatus(
        "Failed",
        (
            (CONDITION_VALID, "False", "InvalidSpec", message),
            (CONDITION_TRAINING, "False", "InvalidSpec", message),
            (CONDITION_COMPLETE, "False", "InvalidSpec", ""),
            (CONDITION_FAILED, "True", "InvalidSpec", message),
        ),
        finished=True,
    )


def resources_status(problems: Sequence[tuple[str, str]]) -> JobStatus:
    """A referenced object is missing or unusable: Pending until it is fixed.

    ``problems`` are ``(reason, message)`` pairs; the first reason is the condition's.
    """
    message = "; ".join(m for _, m in problems)
    return JobStatus(
        "Pending",
        (
            (CONDITION_VALID, "True", "SpecValid", ""),
            (CONDITION_RESOURCES_READY, "False", problems[0][0], message),
            (CONDITION_TRAINING, "False", "WaitingForResources", message),
        ),
    )
