"""The aggregation worker of the MistNet example (upstream's ``aggregate.py`` shape).

Hosts the CNN in the cloud: edges upload the perturbed output of its first ``cut_layer``
layers, this worker trains the other layers on it and publishes the full model. It evaluates
the model on the held-out test set after each round and prints the last round's metrics as
one JSON line, ``{"mistnet": {...}}``, before exiting.

Environment (the FederatedLearningJob's ``aggregationWorker`` env, or ``run_local.py``):
``cut_layer``, ``epsilon``, ``exit_round``, ``epochs``, ``batch_size``, ``learning_rate``,
``participants_count``; ``AGG_BIND_IP`` / ``AGG_BIND_PORT``; ``MODEL_URL`` (optional).
"""

from __future__ import annotations

import json

from mistnet_digits import CUT_LAYER, build_model, test_split

from sedna.algorithms.aggregation import MistNet
from sedna.algorithms.client_choose import SimpleClientChoose
from sedna.common.config import Context
from sedna.service.server import AggregationServerV2


def main() -> None:
    """Serve the job until every edge pulled the final model."""
    mistnet = MistNet(
        cut_layer=Context.get_parameters("cut_layer", CUT_LAYER),
        epsilon=Context.get_parameters("epsilon", 100),
    )
    chooser = SimpleClientChoose(per_round=Context.get_parameters("participants_count", 3))
    server = AggregationServerV2(
        data=test_split(),
        estimator=build_model(),
        aggregation=mistnet,
        chooser=chooser,
    )
    server.start()
    assert server.session is not None
    latest = server.session.latest
    print(
        json.dumps(
            {
                "mistnet": {
                    "round": latest.round,
                    "samples": latest.total_samples,
                    "participants": list(latest.participants),
                    **latest.metrics,
                }
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
