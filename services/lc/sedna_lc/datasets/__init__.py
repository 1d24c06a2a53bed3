"""The LocalController's dataset monitor: sample counts of the node's Datasets."""

from sedna_lc.datasets.monitor import DEFAULT_INTERVAL, DatasetMonitor
from sedna_lc.datasets.source import (
    FORMATS,
    DatasetError,
    DatasetSource,
    S3Credentials,
    count_samples,
    parse_source,
)

__all__ = [
    "DEFAULT_INTERVAL",
    "FORMATS",
    "DatasetError",
    "DatasetMonitor",
    "DatasetSource",
    "S3Credentials",
    "count_samples",
    "parse_source",
]
