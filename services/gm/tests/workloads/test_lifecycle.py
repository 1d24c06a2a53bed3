"""Lifecycle decisions: create/roll/delete, restart policy with limit and backoff, counts."""

from __future__ import annotations

from sedna.resources.worker import RestartPolicy, WorkerOwner, WorkerPhaseName, WorkerSpec
from sedna_gm.workloads import (
    ActionKind,
    DesiredWorker,
    RestartRules,
    RestartTracker,
    WorkerStatus,
    plan_workers,
)

OWNER = WorkerOwner(
    api_version="sedna.io/v1alpha1", kind="FederatedLearningJob", name="fl", namespace="ns", uid="u"
)


def _want(wt: str = "train", policy: RestartPolicy = RestartPolicy.ON_FAILURE) -> DesiredWorker:
    return DesiredWorker(
        WorkerSpec(owner=OWNER, worker_type=wt, command=["x"], restart_policy=policy)
    )


def _seen(name: str, want: DesiredWorker, phase: WorkerPhaseName, **kw: object) -> WorkerStatus:
    return WorkerStatus(name=name, namespace="ns", phase=phase, spec_hash=want.spec_hash, **kw)  # type: ignore[arg-type]


def test_create_roll_delete_and_counts() -> None:
    a, b, c = _want("agg"), _want(), _want("other")
    changed = DesiredWorker(b.spec.model_copy(update={"args": ["--new"]}))
    plan = plan_workers(
        "ns",
        {"a": a, "b": changed, "c": c, "d": _want("d")},
        [
            _seen("a", a, WorkerPhaseName.RUNNING),
            _seen("b", b, WorkerPhaseName.RUNNING),
            _seen("c", c, WorkerPhaseName.SUCCEEDED),
            _seen("zombie", a, WorkerPhaseName.RUNNING),
        ],
        now=0.0,
    )
    kinds = {(x.kind, x.name) for x in plan.actions}
    assert kinds == {
        (ActionKind.ROLL, "b"),
        (ActionKind.CREATE, "d"),
        (ActionKind.DELETE, "zombie"),
    }
    s = plan.summary
    assert (s.desired, s.active, s.running, s.pending, s.succeeded, s.failed) == (4, 3, 1, 2, 1, 0)
    assert not s.all_succeeded
    assert plan.requeue_after_s is None


def test_never_counts_as_failed() -> None:
    w = _want(policy=RestartPolicy.NEVER)
    plan = plan_workers(
        "ns",
        {"w": w},
        [_seen("w", w, WorkerPhaseName.FAILED, exit_code=2)],
        now=0,
        tracker=RestartTracker(),
    )
    assert plan.actions == ()
    assert plan.summary.failed == 1
    assert plan.summary.any_failed
    assert plan.summary.messages == ("w: exit code 2",)


def test_on_failure_recreated_with_backoff_up_to_limit() -> None:
    w = _want()
    tracker = RestartTracker()
    rules = RestartRules(limit=2, base_delay_s=10, max_delay_s=60)
    failed = [_seen("w", w, WorkerPhaseName.FAILED, message="OOMKilled")]

    first = plan_workers("ns", {"w": w}, failed, now=100.0, tracker=tracker, rules=rules)
    assert [a.kind for a in first.actions] == [ActionKind.RECREATE]
    assert first.summary.restarting == 1
    assert first.summary.active == 1
    assert first.summary.failed == 0

    early = plan_workers("ns", {"w": w}, failed, now=105.0, tracker=tracker, rules=rules)
    assert early.actions == ()
    assert early.requeue_after_s == 5.0

    second = plan_workers("ns", {"w": w}, failed, now=110.0, tracker=tracker, rules=rules)
    assert [a.kind for a in second.actions] == [ActionKind.RECREATE]
    assert tracker.attempts("ns", "w") == 2

    spent = plan_workers("ns", {"w": w}, failed, now=1000.0, tracker=tracker, rules=rules)
    assert spent.actions == ()
    assert spent.summary.failed == 1
    assert "giving up" in spent.summary.messages[0]

    # A new spec gets a new budget (a roll first, then recreations again).
    fixed = DesiredWorker(w.spec.model_copy(update={"args": ["--fixed"]}))
    again = plan_workers(
        "ns",
        {"w": fixed},
        [_seen("w", fixed, WorkerPhaseName.FAILED)],
        now=1001.0,
        tracker=tracker,
        rules=rules,
    )
    assert [a.kind for a in again.actions] == [ActionKind.RECREATE]


def test_deleting_worker_waits_and_all_succeeded() -> None:
    w = _want()
    plan = plan_workers(
        "ns", {"w": w}, [_seen("w", w, WorkerPhaseName.RUNNING, deleting=True)], now=0
    )
    assert plan.actions == ()
    assert plan.requeue_after_s == 1.0
    done = plan_workers("ns", {"w": w}, [_seen("w", w, WorkerPhaseName.SUCCEEDED)], now=0)
    assert done.summary.all_succeeded
    assert done.summary.active == 0
