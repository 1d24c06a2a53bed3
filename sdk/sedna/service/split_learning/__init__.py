"""MistNet split learning, cloud side and wire client (shared by the SDK and any server).

The edge runs the first ``cut_layer`` layers of a model, perturbs the features for local
differential privacy and uploads them with their labels; the cloud trains the remaining
layers and publishes the full model.

* :mod:`~sedna.service.split_learning.session`: :class:`SplitSession`, the transport-agnostic
  round engine (feature checks, round closing, cloud training in a worker thread).
* :mod:`~sedna.service.split_learning.convert`: the only proto ↔ session conversion.
* :mod:`~sedna.service.split_learning.servicer`: thin ``SplitLearningService`` and
  ``AggregationService`` servicers over one session, and
  :func:`add_split_learning_services`.
* :mod:`~sedna.service.split_learning.client`: :class:`SplitLearningClient`, the edge's
  client (upload features, pull the model).
* :mod:`~sedna.service.split_learning.torch_split`: the torch model contract, cutting and
  :class:`TorchSplitModel` (imports torch; not imported here).

``sedna.service.server.AggregationServerV2`` (upstream's name) runs all of it in an
aggregation worker; ``sedna.core.federated_learning.FederatedLearningV2`` is the edge.
"""

from sedna.service.split_learning.client import SplitLearningClient
from sedna.service.split_learning.errors import SplitLearningError
from sedna.service.split_learning.servicer import (
    AGGREGATION_SERVICE_NAME,
    SPLIT_LEARNING_SERVICE_NAME,
    SplitAggregationServicer,
    SplitLearningServicer,
    add_split_learning_services,
)
from sedna.service.split_learning.session import (
    FEATURES,
    LABELS,
    RoundResult,
    ServerModel,
    SplitConfig,
    SplitSession,
    SplitState,
)

__all__ = [
    "AGGREGATION_SERVICE_NAME",
    "FEATURES",
    "LABELS",
    "SPLIT_LEARNING_SERVICE_NAME",
    "RoundResult",
    "ServerModel",
    "SplitAggregationServicer",
    "SplitConfig",
    "SplitLearningClient",
    "SplitLearningError",
    "SplitLearningServicer",
    "SplitSession",
    "SplitState",
    "add_split_learning_services",
]
