"""The GlobalManager's controllers: a controller-runtime style framework plus resource controllers.

Framework: :class:`WorkQueue` (deduplicating, rate-limited), :class:`Informer` (store mirror
with events), :class:`Controller` / :class:`Manager`, condition, event and status helpers,
:class:`ReportRouter` and :class:`DesiredStateRegistry`. Controllers: Dataset and Model here;
JointInferenceService in :mod:`sedna_gm.controllers.jointinference`.
"""

from __future__ import annotations

from sedna_gm.controllers.common import CLEANUP_FINALIZER, Placement, validate_spec
from sedna_gm.controllers.conditions import (
    find_condition,
    is_condition_true,
    remove_condition,
    rfc3339,
    set_condition,
    utcnow,
)
from sedna_gm.controllers.controller import (
    Controller,
    KeyMapper,
    Reconciler,
    ReconcileResult,
    owner_mapper,
)
from sedna_gm.controllers.dataset import DatasetController, setup_dataset_controller
from sedna_gm.controllers.events import Event, EventRecorder, EventSource, MemoryEventRecorder
from sedna_gm.controllers.informer import EventHandler, Informer
from sedna_gm.controllers.manager import Manager
from sedna_gm.controllers.metrics import ControllerMetrics
from sedna_gm.controllers.model import ModelController, set_model_metrics, setup_model_controller
from sedna_gm.controllers.ratelimit import (
    BucketRateLimiter,
    ExponentialBackoffRateLimiter,
    MaxOfRateLimiter,
    RateLimiter,
    default_controller_rate_limiter,
)
from sedna_gm.controllers.reports import (
    DesiredStateRegistry,
    OwnerReportHandler,
    ReportRouter,
    owner_key,
)
from sedna_gm.controllers.status import update_object, update_status
from sedna_gm.controllers.workqueue import QueueShutDown, WorkQueue

__all__ = [
    "CLEANUP_FINALIZER",
    "BucketRateLimiter",
    "Controller",
    "ControllerMetrics",
    "DatasetController",
    "DesiredStateRegistry",
    "Event",
    "EventHandler",
    "EventRecorder",
    "EventSource",
    "ExponentialBackoffRateLimiter",
    "Informer",
    "KeyMapper",
    "Manager",
    "MaxOfRateLimiter",
    "MemoryEventRecorder",
    "ModelController",
    "OwnerReportHandler",
    "Placement",
    "QueueShutDown",
    "RateLimiter",
    "ReconcileResult",
    "Reconciler",
    "ReportRouter",
    "WorkQueue",
    "default_controller_rate_limiter",
    "find_condition",
    "is_condition_true",
    "owner_key",
    "owner_mapper",
    "remove_condition",
    "rfc3339",
    "set_condition",
    "set_model_metrics",
    "setup_dataset_controller",
    "setup_model_controller",
    "update_object",
    "update_status",
    "utcnow",
    "validate_spec",
]
