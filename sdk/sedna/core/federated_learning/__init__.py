"""Federated learning, trainer side (upstream ``sedna.core.federated_learning``).

* :class:`FederatedLearning`: the trainer's job class and its round loop against
  ``sedna-aggregator`` (:class:`~sedna.service.aggregation_client.AggregationClient`).
* :class:`FederatedLearningV2`: a MistNet edge (split learning: upload perturbed features of
  the first ``cut_layer`` layers, pull the model the cloud trained), and
  :func:`perturb_features`, its local-differential-privacy mechanisms.
* :func:`proximal_term`: FedProx's ``mu/2 * ||w - w_global||^2`` for a torch model, to add
  to a training loss.

Importing this package imports no framework; ``torch`` is imported by the torch helpers.
"""

from sedna.core.federated_learning.federated_learning import (
    DEFAULT_ROUND_WAIT_TIMEOUT,
    FederatedLearning,
    sample_count_of,
)
from sedna.core.federated_learning.mistnet import FederatedLearningV2, perturb_features
from sedna.core.federated_learning.proximal import proximal_term, train_torch_module

__all__ = [
    "DEFAULT_ROUND_WAIT_TIMEOUT",
    "FederatedLearning",
    "FederatedLearningV2",
    "perturb_features",
    "proximal_term",
    "sample_count_of",
    "train_torch_module",
]
