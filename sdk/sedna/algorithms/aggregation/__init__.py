"""Federated-learning aggregation algorithms, registered under ``ClassType.FL_AGG``.

Upstream-compatible: ``from sedna.algorithms.aggregation import FedAvg, AggClient`` and
``ClassFactory.get_cls(ClassType.FL_AGG, "FedAvg")`` both work once this package is imported.
Registered names: ``FedAvg``, ``FedAvgM``, ``FedAdagrad``, ``FedAdam``, ``FedYogi``,
``FedMedian``, ``FedTrimmedAvg``, ``Krum``, ``MistNet``, ``FedAvgV2``.
"""

from sedna.algorithms.aggregation.aggregation import (
    AggClient,
    AggregationError,
    BaseAggregation,
    BufferedAggregation,
    FedAvg,
    FedAvgV2,
    MistNet,
    RoundStateError,
    StreamingAggregation,
)
from sedna.algorithms.aggregation.fedopt import FedAdagrad, FedAdam, FedAvgM, FedOpt, FedYogi
from sedna.algorithms.aggregation.robust import FedMedian, FedTrimmedAvg, Krum

__all__ = [
    "AggClient",
    "AggregationError",
    "BaseAggregation",
    "BufferedAggregation",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedAvgV2",
    "FedMedian",
    "FedOpt",
    "FedTrimmedAvg",
    "FedYogi",
    "Krum",
    "MistNet",
    "RoundStateError",
    "StreamingAggregation",
]
