"""Worker lifecycle decisions shared by the feature controllers (pure logic).

A controller builds the desired workers of a resource (name -> :class:`DesiredWorker`), lists
the observed ones (:meth:`WorkloadRuntime.list_workers`) and calls :func:`plan_workers`:

- a desired worker that is missing is **created**;
- one whose spec hash differs from the observed one is **rolled** (``ensure_worker`` replaces
  the Pod / the Deployment template / the process);
- an observed worker nobody wants any more is **deleted**;
- a ``Failed`` worker whose restart policy is ``OnFailure`` or ``Always`` is **recreated** up
  to :attr:`RestartRules.limit` times with exponential backoff (:class:`RestartTracker` keeps
  the attempts); with ``Never``, or once the limit is spent, it counts as failed.

The :class:`WorkersSummary` counts ``active``/``succeeded``/``failed`` the way upstream's job
controllers do; controllers turn it into status phase and conditions. :func:`apply_plan`
executes the actions on a runtime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sedna.resources.worker import RestartPolicy, WorkerPhaseName, WorkerSpec
from sedna_gm.workloads.port import WorkerStatus, WorkloadRuntime, spec_hash

__all__ = [
    "ActionKind",
    "DesiredWorker",
    "RestartRules",
    "RestartTracker",
    "WorkerAction",
    "WorkerPlan",
    "WorkersSummary",
    "apply_plan",
    "plan_workers",
]


@dataclass(frozen=True)
class DesiredWorker:
    """One worker a resource wants.

    Attributes
    ----------
    spec
        What to run.
    replicas
        None for a job worker (Pod), a count for a service worker (Deployment).
    credentials
        Secret env for the local runtime (``BuiltWorker.credentials``).
    autoscaler
        Service workers: the ``hpa`` that scales the Deployment (None: none); ``replicas``
        is then only the count it starts with.
    """

    spec: WorkerSpec
    replicas: int | None = None
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False)
    autoscaler: Mapping[str, Any] | None = None

    @property
    def spec_hash(self) -> str:
        """The hash stored on the worker to detect changes."""
        return spec_hash(self.spec, self.replicas, self.autoscaler)


class ActionKind(StrEnum):
    """What :func:`apply_plan` does for one worker."""

    CREATE = "create"
    ROLL = "roll"
    RECREATE = "recreate"
    DELETE = "delete"


@dataclass(frozen=True)
class WorkerAction:
    """One decision; ``desired`` is None for DELETE."""

    kind: ActionKind
    namespace: str
    name: str
    desired: DesiredWorker | None
    reason: str


@dataclass(frozen=True)
class RestartRules:
    """How often a failed worker is recreated.

    Attributes
    ----------
    limit
        Recreations per worker before it counts as failed for good.
    base_delay_s, max_delay_s
        Backoff: the n-th recreation waits ``min(base * 2**(n-1), max)`` after the previous.
    """

    limit: int = 3
    base_delay_s: float = 10.0
    max_delay_s: float = 300.0

    def delay(self, attempt: int) -> float:
        """The wait before recreation number ``attempt`` (1-based; the first is immediate)."""
        if attempt <= 1:
            return 0.0
        return float(min(self.base_delay_s * 2 ** (attempt - 2), self.max_delay_s))


@dataclass
class _Attempts:
    count: int
    last: float
    spec_hash: str


class RestartTracker:
    """Recreation attempts per worker (kept by a controller, in memory, across reconciles)."""

    def __init__(self) -> None:
        self._attempts: dict[tuple[str, str], _Attempts] = {}

    def attempts(self, namespace: str, name: str) -> int:
        """Recreations done so far for the worker."""
        record = self._attempts.get((namespace, name))
        return record.count if record else 0

    def forget(self, namespace: str, name: str) -> None:
        """Drop the record (the worker's resource went away)."""
        self._attempts.pop((namespace, name), None)

    def _get(self, namespace: str, name: str, hash_: str) -> _Attempts | None:
        record = self._attempts.get((namespace, name))
        if record is not None and record.spec_hash != hash_:
            # A new spec starts a new budget: the change may be the fix.
            del self._attempts[(namespace, name)]
            return None
        return record

    def _record(self, namespace: str, name: str, hash_: str, now: float) -> None:
        record = self._attempts.get((namespace, name))
        count = record.count + 1 if record and record.spec_hash == hash_ else 1
        self._attempts[(namespace, name)] = _Attempts(count, now, hash_)


@dataclass(frozen=True)
class WorkersSummary:
    """Aggregate state of a resource's workers.

    Attributes
    ----------
    desired
        Number of desired workers.
    active
        Desired workers not finished: pending, running, about to be (re)created or rolled.
    pending, running
        The active ones split by observed phase (missing ones count as pending).
    succeeded
        Desired workers in ``Succeeded``.
    failed
        Desired workers in ``Failed`` that will not be recreated (``Never``, or limit spent).
    restarting
        Failed workers being recreated (included in ``active``).
    messages
        ``name: message`` for every failed worker, for conditions.
    workers
        Observed status per desired worker name (absent when missing).
    """

    desired: int
    active: int
    pending: int
    running: int
    succeeded: int
    failed: int
    restarting: int
    messages: tuple[str, ...] = ()
    workers: Mapping[str, WorkerStatus] = field(default_factory=dict)

    @property
    def any_failed(self) -> bool:
        """True when some worker failed for good."""
        return self.failed > 0

    @property
    def all_succeeded(self) -> bool:
        """True when every desired worker succeeded (a job is complete)."""
        return self.desired > 0 and self.succeeded == self.desired

    @property
    def all_running(self) -> bool:
        """True when every desired worker is running (a service is up)."""
        return self.desired > 0 and self.running == self.desired


@dataclass(frozen=True)
class WorkerPlan:
    """Actions to take, the summary, and when to look again (None: on the next event)."""

    actions: tuple[WorkerAction, ...]
    summary: WorkersSummary
    requeue_after_s: float | None = None


@dataclass
class _Counter:
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    restarting: int = 0
    messages: list[str] = field(default_factory=list)
    requeue: list[float] = field(default_factory=list)


def plan_workers(
    namespace: str,
    desired: Mapping[str, DesiredWorker],
    observed: Sequence[WorkerStatus],
    *,
    now: float,
    tracker: RestartTracker | None = None,
    rules: RestartRules | None = None,
) -> WorkerPlan:
    """Decide what to do with a resource's workers (see the module docstring).

    Parameters
    ----------
    namespace
        The resource's namespace.
    desired
        Worker name -> desired worker.
    observed
        What the runtime reports for the resource.
    now
        The current monotonic time (seconds), for the restart backoff.
    tracker
        Restart attempts; None disables recreation (failed workers count as failed).
    rules
        Restart limit and backoff.
    """
    rules = rules or RestartRules()
    seen = {status.name: status for status in observed}
    actions: list[WorkerAction] = []
    c = _Counter()
    for name, want in desired.items():
        status = seen.get(name)
        hash_ = want.spec_hash
        if status is None:
            actions.append(WorkerAction(ActionKind.CREATE, namespace, name, want, "missing"))
            c.pending += 1
        elif status.deleting:
            c.pending += 1  # the old one is going; create it once it is gone
            c.requeue.append(1.0)
        elif status.spec_hash != hash_:
            actions.append(WorkerAction(ActionKind.ROLL, namespace, name, want, "spec changed"))
            c.pending += 1
        elif status.phase is WorkerPhaseName.FAILED:
            _plan_failed(
                namespace,
                name,
                want,
                status,
                now=now,
                tracker=tracker,
                rules=rules,
                actions=actions,
                c=c,
            )
        elif status.phase is WorkerPhaseName.SUCCEEDED:
            c.succeeded += 1
        elif status.phase is WorkerPhaseName.RUNNING:
            c.running += 1
        else:
            c.pending += 1
    for name, status in seen.items():
        if name not in desired and not status.deleting:
            actions.append(WorkerAction(ActionKind.DELETE, namespace, name, None, "not desired"))
    summary = WorkersSummary(
        desired=len(desired),
        active=c.pending + c.running + c.restarting,
        pending=c.pending,
        running=c.running,
        succeeded=c.succeeded,
        failed=c.failed,
        restarting=c.restarting,
        messages=tuple(c.messages),
        workers={name: seen[name] for name in desired if name in seen},
    )
    return WorkerPlan(tuple(actions), summary, min(c.requeue) if c.requeue else None)


def _plan_failed(
    namespace: str,
    name: str,
    want: DesiredWorker,
    status: WorkerStatus,
    *,
    now: float,
    tracker: RestartTracker | None,
    rules: RestartRules,
    actions: list[WorkerAction],
    c: _Counter,
) -> None:
    why = status.message or (
        f"exit code {status.exit_code}" if status.exit_code is not None else "failed"
    )
    if tracker is None or want.spec.restart_policy is RestartPolicy.NEVER:
        c.failed += 1
        c.messages.append(f"{name}: {why}")
        return
    record = tracker._get(namespace, name, want.spec_hash)
    attempt = (record.count if record else 0) + 1
    if attempt > rules.limit:
        c.failed += 1
        c.messages.append(f"{name}: {why} (recreated {rules.limit} times, giving up)")
        return
    c.restarting += 1
    wait = rules.delay(attempt) - (now - record.last if record else 0.0)
    if wait > 0:
        c.requeue.append(wait)
        return
    tracker._record(namespace, name, want.spec_hash, now)
    actions.append(
        WorkerAction(
            ActionKind.RECREATE,
            namespace,
            name,
            want,
            f"failed ({why}); recreation {attempt} of {rules.limit}",
        )
    )


async def apply_plan(runtime: WorkloadRuntime, plan: WorkerPlan) -> list[WorkerStatus]:
    """Execute the plan's actions in order; return the statuses ``ensure_worker`` gave.

    A RECREATE deletes the worker and creates it again (on Kubernetes the create may find the
    old Pod still terminating: ``ensure_worker`` then reports it pending, and the next
    reconcile creates it).
    """
    results: list[WorkerStatus] = []
    for action in plan.actions:
        if action.kind is ActionKind.DELETE or action.kind is ActionKind.RECREATE:
            await runtime.delete_worker(action.namespace, action.name)
        if action.desired is not None:
            want = action.desired
            results.append(
                await runtime.ensure_worker(
                    action.name,
                    want.spec,
                    replicas=want.replicas,
                    credentials=want.credentials or None,
                    autoscaler=want.autoscaler,
                )
            )
    return results
