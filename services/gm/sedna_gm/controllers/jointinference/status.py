"""A JointInferenceService's phase and conditions from what its workers do (pure logic).

Conditions (one per type, Kubernetes style; ``sedna describe ji`` shows them):

- ``Valid``: the spec validates and its templates can be built (reason ``InvalidSpec``);
- ``ModelsReady``: both Models exist and their credentials resolve (``ModelNotFound``,
  ``InvalidModel``, ``SecretNotFound``, ``InvalidSecret``, ``SecretUnreadable``; the message
  names the Model and the field that refers to it);
- ``CloudReady`` / ``EdgeReady``: the worker runs (``WorkerRunning``) or why not:
  ``WorkerPending``, ``WorkerRolling``, ``Unschedulable``, ``NodeNotFound``,
  ``WorkerRestarting``, ``WaitingForCloud`` (the edge worker waits for the cloud worker's
  address); failed: ``WorkerFailed``, ``CrashLoopBackOff``, ``WorkerExited``;
- ``Ready``: the summary; True (``Running``) when both workers run, else the first blocker:
  ``InvalidSpec``, a ModelsReady reason, ``WorkerFailed``, ``NodeNotFound`` (a worker's
  node never registered), ``CloudNotReady`` or ``EdgeNotReady``.

Phase: ``Failed`` for an invalid spec or a failed worker, ``Running`` when both run, else
``Pending``. It is recomputed on every reconcile, so unlike upstream ``Failed`` is not
terminal: a worker that runs again brings the service back to ``Running``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from sedna.resources.worker import WorkerPhaseName
from sedna_gm.controllers.common import ConditionUpdate
from sedna_gm.controllers.conditions import ConditionStatus
from sedna_gm.workloads.port import WorkerStatus

__all__ = [
    "CONDITION_CLOUD_READY",
    "CONDITION_EDGE_READY",
    "CONDITION_MODELS_READY",
    "CONDITION_READY",
    "CONDITION_VALID",
    "ModelProblem",
    "RoleState",
    "ServiceStatus",
    "State",
    "classify",
    "invalid_status",
    "models_status",
    "service_status",
]

CONDITION_VALID = "Valid"
CONDITION_MODELS_READY = "ModelsReady"
CONDITION_CLOUD_READY = "CloudReady"
CONDITION_EDGE_READY = "EdgeReady"
CONDITION_READY = "Ready"
_ROLE_CONDITIONS = {"cloud": CONDITION_CLOUD_READY, "edge": CONDITION_EDGE_READY}


class State(StrEnum):
    """Where one worker stands."""

    PENDING = "Pending"
    RUNNING = "Running"
    FAILED = "Failed"


@dataclass(frozen=True)
class RoleState:
    """One worker's state with the reason and message for its condition."""

    role: str
    name: str
    state: State
    reason: str
    message: str

    @property
    def summary(self) -> str:
        """``cloud worker NAME: message``."""
        return f"{self.role} worker {self.name}: {self.message}"


@dataclass(frozen=True)
class ModelProblem:
    """Why a worker's Model cannot be used (``reason`` is a ModelsReady reason)."""

    role: str
    reason: str
    message: str


@dataclass(frozen=True)
class ServiceStatus:
    """What to write: phase, conditions and (when known) the worker counts."""

    phase: str
    conditions: tuple[ConditionUpdate, ...]
    active: int | None = None
    failed: int | None = None


def _why(status: WorkerStatus, default: str) -> str:
    if status.message:
        return status.message
    if status.exit_code is not None:
        return f"exited with code {status.exit_code}"
    return default


def classify(
    role: str,
    name: str,
    status: WorkerStatus | None,
    *,
    gave_up: bool = False,
    crash_loop_restarts: int = 3,
    node_known: Callable[[str], bool] | None = None,
    template_node: str = "",
    waiting: str = "",
) -> RoleState:
    """The state of ``role``'s worker from its observed ``status``.

    Parameters
    ----------
    role, name
        ``cloud``/``edge`` and the worker's name.
    status
        What the runtime reports (None: the worker does not exist yet).
    gave_up
        The lifecycle stopped recreating the failed worker (restart policy or limit).
    crash_loop_restarts
        A worker that is not running after this many restarts counts as failed
        (``CrashLoopBackOff``) until it runs again.
    node_known
        Whether a node has registered (local mode; None: not checked).
    template_node
        The template's ``nodeName`` (checked with ``node_known``).
    waiting
        Set when the worker is deliberately not created yet: the message saying why.
    """

    def made(state: State, reason: str, message: str) -> RoleState:
        return RoleState(role, name, state, reason, message)

    if waiting and status is None:
        return made(State.PENDING, "WaitingForCloud", waiting)
    if status is not None and status.phase is WorkerPhaseName.RUNNING and not status.deleting:
        where = f" on node {', '.join(status.nodes)}" if status.nodes else ""
        return made(State.RUNNING, "WorkerRunning", f"running{where}")
    node = (status.node_name if status is not None else "") or template_node
    if node and node_known is not None and not node_known(node):
        return made(
            State.PENDING,
            "NodeNotFound",
            f"node {node!r} has not registered with the GlobalManager; the worker starts "
            "when it connects",
        )
    if status is None:
        return made(State.PENDING, "WorkerPending", "being created")
    if status.deleting:
        return made(State.PENDING, "WorkerRolling", "waiting for the previous worker to stop")
    if status.phase is WorkerPhaseName.FAILED:
        if gave_up:
            return made(State.FAILED, "WorkerFailed", _why(status, "failed"))
        return made(State.PENDING, "WorkerRestarting", f"{_why(status, 'failed')}; recreating it")
    if status.phase is WorkerPhaseName.SUCCEEDED:
        return made(
            State.FAILED,
            "WorkerExited",
            f"{_why(status, 'exited')}; a service worker must keep running",
        )
    if status.restart_count >= crash_loop_restarts > 0:
        return made(
            State.FAILED,
            "CrashLoopBackOff",
            f"restarted {status.restart_count} times: {_why(status, 'not running')}",
        )
    if node_known is not None and not node:
        return made(State.PENDING, "Unschedulable", _why(status, "no node fits"))
    return made(State.PENDING, "WorkerPending", _why(status, "starting"))


def _role_condition(role: RoleState) -> ConditionUpdate:
    status: ConditionStatus = "True" if role.state is State.RUNNING else "False"
    return (_ROLE_CONDITIONS[role.role], status, role.reason, role.summary)


def service_status(cloud: RoleState, edge: RoleState, *, models_message: str = "") -> ServiceStatus:
    """Phase, conditions and counts once both Models resolved and the workers were handled."""
    roles = (cloud, edge)
    failed = [r for r in roles if r.state is State.FAILED]
    models: ConditionUpdate = (CONDITION_MODELS_READY, "True", "ModelsFound", models_message)
    common = [
        (CONDITION_VALID, "True", "SpecValid", ""),
        models,
        _role_condition(cloud),
        _role_condition(edge),
    ]
    if failed:
        ready: ConditionUpdate = (
            CONDITION_READY,
            "False",
            "WorkerFailed",
            "; ".join(r.summary for r in failed),
        )
        phase = "Failed"
    elif all(r.state is State.RUNNING for r in roles):
        ready = (
            CONDITION_READY,
            "True",
            "Running",
            f"cloud worker {cloud.name} and edge worker {edge.name} are running",
        )
        phase = "Running"
    else:
        # A missing node is the actionable blocker; else the cloud worker's, then the edge's.
        missing = [r for r in roles if r.reason == "NodeNotFound"]
        if missing:
            blocker, reason = missing[0], "NodeNotFound"
        elif cloud.state is not State.RUNNING:
            blocker, reason = cloud, "CloudNotReady"
        else:
            blocker, reason = edge, "EdgeNotReady"
        ready = (CONDITION_READY, "False", reason, blocker.summary)
        phase = "Pending"
    return ServiceStatus(
        phase,
        (*common, ready),
        active=len(roles) - len(failed),
        failed=len(failed),
    )


def _unknown_roles(reason: str, message: str) -> list[ConditionUpdate]:
    return [
        (CONDITION_CLOUD_READY, "Unknown", reason, message),
        (CONDITION_EDGE_READY, "Unknown", reason, message),
    ]


def invalid_status(message: str) -> ServiceStatus:
    """The spec (or a template) is invalid: phase Failed, nothing deployed or changed."""
    return ServiceStatus(
        "Failed",
        (
            (CONDITION_VALID, "False", "InvalidSpec", message),
            *_unknown_roles("InvalidSpec", "the spec is invalid"),
            (CONDITION_READY, "False", "InvalidSpec", message),
        ),
    )


def models_status(problems: Sequence[ModelProblem]) -> ServiceStatus:
    """A Model is missing or unusable: phase Pending until it is fixed (workers unchanged)."""
    message = "; ".join(p.message for p in problems)
    reason = problems[0].reason
    return ServiceStatus(
        "Pending",
        (
            (CONDITION_VALID, "True", "SpecValid", ""),
            (CONDITION_MODELS_READY, "False", reason, message),
            *_unknown_roles("WaitingForModels", "waiting for the Models"),
            (CONDITION_READY, "False", reason, message),
        ),
    )
