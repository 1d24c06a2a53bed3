"""The FederatedLearningJob controller: aggregation worker, its Service, trainers, status.

- :mod:`.workers`: the aggregator, the training workers and their environment contract;
- :mod:`.resources`: the Models, Datasets and Secrets a job refers to;
- :mod:`.status`: phase and conditions from the workers' states;
- :mod:`.controller`: the reconciler, the report handler and its setup.
"""

from sedna_gm.controllers.federatedlearning.controller import (
    CONTROLLER_NAME,
    KIND,
    FederatedLearningController,
    setup_federated_learning_controller,
)

__all__ = [
    "CONTROLLER_NAME",
    "KIND",
    "FederatedLearningController",
    "setup_federated_learning_controller",
]
