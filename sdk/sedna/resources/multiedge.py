"""The multi-edge inference kinds: object search/tracking, re-identification, video analytics
and feature extraction (the pedestrian tracking pipeline)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from sedna.resources._base import SednaObject, SpecModel, StatusModel
from sedna.resources._meta import (
    ResourceKind,
    active_column,
    failed_column,
    phase_column,
    succeeded_column,
)
from sedna.resources.common import (
    Condition,
    DeploymentSpec,
    JobSpec,
    Metric,
    ModelReference,
    PodTemplateSpec,
    WorkloadPhase,
)

__all__ = [
    "FEATURE_EXTRACTION_KIND",
    "OBJECT_SEARCH_KIND",
    "OBJECT_TRACKING_KIND",
    "REID_KIND",
    "VIDEO_ANALYTICS_KIND",
    "FeatureExtractionService",
    "FeatureExtractionServiceSpec",
    "FeatureExtractionServiceStatus",
    "ObjectSearchService",
    "ObjectSearchServiceSpec",
    "ObjectSearchServiceStatus",
    "ObjectTrackingService",
    "ObjectTrackingServiceSpec",
    "ObjectTrackingServiceStatus",
    "ReidJob",
    "ReidJobSpec",
    "ReidJobStatus",
    "ReidWorkers",
    "TrackingWorker",
    "UserWorker",
    "VideoAnalyticsJob",
    "VideoAnalyticsJobSpec",
    "VideoAnalyticsJobStatus",
]


# --- object search and tracking ---------------------------------------------------------------


class UserWorker(SpecModel):
    """The worker users send search queries to."""

    template: PodTemplateSpec
    """Pod template of the user worker."""


class TrackingWorker(SpecModel):
    """A worker that tracks objects in one video stream."""

    template: PodTemplateSpec
    """Pod template of the tracking worker (set nodeName to pick its node)."""


class ReidWorkers(DeploymentSpec):
    """The re-identification workers, run as one Deployment (an apps/v1 DeploymentSpec)."""


class _ServiceStatus(StatusModel):
    phase: WorkloadPhase | None = None
    """Pending, Running or Failed."""
    conditions: list[Condition] | None = None
    """Observations (types Pending, Running, Failed); the last one is current."""
    start_time: datetime | None = None
    """When the controller first acted on the service."""
    active: int | None = Field(default=None, ge=0)
    """Number of workers running."""
    failed: int | None = Field(default=None, ge=0)
    """Number of workers that failed."""
    observed_generation: int | None = Field(default=None, ge=0)
    """metadata.generation the status was computed from."""


class ObjectSearchServiceSpec(SpecModel):
    """The workers of an object search service."""

    user_worker: UserWorker
    """The user-facing worker."""
    tracking_workers: list[TrackingWorker] = Field(min_length=1)
    """The tracking workers, one per video stream."""
    reid_workers: ReidWorkers
    """The re-identification workers."""


class ObjectSearchServiceStatus(_ServiceStatus):
    """Observed state of the service."""


class ObjectSearchService(SednaObject[ObjectSearchServiceSpec, ObjectSearchServiceStatus]):
    """An ObjectSearchService object."""

    KIND = "ObjectSearchService"


class ObjectTrackingServiceSpec(SpecModel):
    """The workers of an object tracking service."""

    tracking_workers: list[TrackingWorker] = Field(min_length=1)
    """The tracking workers, one per video stream."""
    reid_workers: ReidWorkers
    """The re-identification workers."""


class ObjectTrackingServiceStatus(_ServiceStatus):
    """Observed state of the service."""


class ObjectTrackingService(SednaObject[ObjectTrackingServiceSpec, ObjectTrackingServiceStatus]):
    """An ObjectTrackingService object."""

    KIND = "ObjectTrackingService"


# --- pedestrian tracking pipeline: video analytics -> feature extraction -> reid -------------


class _JobStatus(StatusModel):
    phase: WorkloadPhase | None = None
    """Pending, Running, Succeeded or Failed."""
    conditions: list[Condition] | None = None
    """Observations; the last one is current."""
    start_time: datetime | None = None
    """When the controller first acted on the job."""
    completion_time: datetime | None = None
    """When the job finished."""
    active: int | None = Field(default=None, ge=0)
    """Number of pods running."""
    succeeded: int | None = Field(default=None, ge=0)
    """Number of pods that succeeded."""
    failed: int | None = Field(default=None, ge=0)
    """Number of pods that failed."""
    observed_generation: int | None = Field(default=None, ge=0)
    """metadata.generation the status was computed from."""


class ReidJobSpec(JobSpec):
    """A re-identification job: a batch/v1 JobSpec plus the Kafka switch."""

    kafka_support: bool | None = None
    """Read features from Kafka instead of over REST."""


class ReidJobStatus(_JobStatus):
    """Observed state of the job."""


class ReidJob(SednaObject[ReidJobSpec, ReidJobStatus]):
    """A ReidJob object."""

    KIND = "ReidJob"


class VideoAnalyticsJobSpec(JobSpec):
    """A video analytics (detection) job: a batch/v1 JobSpec plus the model and Kafka switch."""

    kafka_support: bool | None = None
    """Send detections to Kafka instead of over REST."""
    model: ModelReference
    """The detection model."""


class VideoAnalyticsJobStatus(_JobStatus):
    """Observed state of the job."""


class VideoAnalyticsJob(SednaObject[VideoAnalyticsJobSpec, VideoAnalyticsJobStatus]):
    """A VideoAnalyticsJob object."""

    KIND = "VideoAnalyticsJob"


class FeatureExtractionServiceSpec(DeploymentSpec):
    """A feature extraction service: an apps/v1 DeploymentSpec plus the model and Kafka switch."""

    kafka_support: bool | None = None
    """Exchange data through Kafka instead of over REST."""
    model: ModelReference
    """The feature extraction model."""


class FeatureExtractionServiceStatus(_ServiceStatus):
    """Observed state of the service."""

    metrics: list[Metric] | None = None
    """Counters reported by the workers."""


class FeatureExtractionService(
    SednaObject[FeatureExtractionServiceSpec, FeatureExtractionServiceStatus]
):
    """A FeatureExtractionService object."""

    KIND = "FeatureExtractionService"


_SERVICE_COLUMNS = (phase_column(), active_column(), failed_column())
_JOB_COLUMNS = (phase_column(), active_column("pods"), succeeded_column(), failed_column("pods"))

OBJECT_SEARCH_KIND = ResourceKind(
    kind="ObjectSearchService",
    plural="objectsearchservices",
    singular="objectsearchservice",
    short_names=("objs",),
    categories=("sedna",),
    model=ObjectSearchService,
    spec_model=ObjectSearchServiceSpec,
    status_model=ObjectSearchServiceStatus,
    printer_columns=_SERVICE_COLUMNS,
    description=(
        "ObjectSearchService finds a target object in several video streams: tracking "
        "workers follow objects, re-identification workers match them against the query."
    ),
)

OBJECT_TRACKING_KIND = ResourceKind(
    kind="ObjectTrackingService",
    plural="objecttrackingservices",
    singular="objecttrackingservice",
    short_names=("objt",),
    categories=("sedna",),
    model=ObjectTrackingService,
    spec_model=ObjectTrackingServiceSpec,
    status_model=ObjectTrackingServiceStatus,
    printer_columns=_SERVICE_COLUMNS,
    description=(
        "ObjectTrackingService tracks objects across several video streams with tracking "
        "and re-identification workers."
    ),
)

REID_KIND = ResourceKind(
    kind="ReidJob",
    plural="reidjobs",
    singular="reidjob",
    short_names=("reid",),
    categories=("sedna",),
    model=ReidJob,
    spec_model=ReidJobSpec,
    status_model=ReidJobStatus,
    printer_columns=_JOB_COLUMNS,
    description=(
        "ReidJob re-identifies people: it matches extracted features against query images."
    ),
)

VIDEO_ANALYTICS_KIND = ResourceKind(
    kind="VideoAnalyticsJob",
    plural="videoanalyticsjobs",
    singular="videoanalyticsjob",
    short_names=("va",),
    categories=("sedna",),
    model=VideoAnalyticsJob,
    spec_model=VideoAnalyticsJobSpec,
    status_model=VideoAnalyticsJobStatus,
    printer_columns=_JOB_COLUMNS,
    description="VideoAnalyticsJob detects objects (pedestrians) in a video stream.",
)

FEATURE_EXTRACTION_KIND = ResourceKind(
    kind="FeatureExtractionService",
    plural="featureextractionservices",
    singular="featureextractionservice",
    short_names=("fe",),
    categories=("sedna",),
    model=FeatureExtractionService,
    spec_model=FeatureExtractionServiceSpec,
    status_model=FeatureExtractionServiceStatus,
    printer_columns=_SERVICE_COLUMNS,
    description=(
        "FeatureExtractionService extracts re-identification features from the detections "
        "of a VideoAnalyticsJob."
    ),
)
