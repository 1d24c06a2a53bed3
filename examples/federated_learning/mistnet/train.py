"""A training worker (edge) of the MistNet example (upstream's ``train.py`` shape, ``-i N``).

Runs the first ``cut_layer`` layers of the CNN on this edge's split, perturbs the features
(Laplace mechanism, ``epsilon``, ``clip_bound``) and uploads them; the aggregation worker
trains the rest. The edge never sends its images, and never trains.

Environment: ``cut_layer``, ``epsilon``, ``clip_bound``; ``AGG_IP`` / ``AGG_PORT``;
``NAMESPACE``, ``JOB_NAME``, ``WORKER_NAME`` (set by the controller, or ``run_local.py``).
"""

from __future__ import annotations

import argparse
import json

from mistnet_digits import CLIP_BOUND, CUT_LAYER, accuracy, build_model, edge_split, test_split

from sedna.algorithms.aggregation import MistNet
from sedna.common.config import Context
from sedna.core.federated_learning import FederatedLearningV2


def main() -> None:
    """Train with the cloud, then print this edge's view of the final model as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-i", "--index", type=int, default=1, help="edge number (1-based)")
    args = parser.parse_args()
    mistnet = MistNet(
        cut_layer=Context.get_parameters("cut_layer", CUT_LAYER),
        epsilon=Context.get_parameters("epsilon", 100),
    )
    model = build_model()
    job = FederatedLearningV2(
        data=edge_split(args.index),
        estimator=model,
        aggregation=mistnet,
        clip_bound=float(Context.get_parameters("clip_bound", CLIP_BOUND)),
    )
    try:
        result = job.train()
    finally:
        job.close()
    x_test, y_test = test_split()
    print(
        json.dumps(
            {
                "edge": args.index,
                "round": result["round"],
                "accuracy": accuracy(model, x_test, y_test),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
