"""The training worker of the federated-learning example (upstream's ``train.py`` shape).

Run by the LocalController of the node that holds the worker's Dataset, with the
FederatedLearningJob's environment: ``TRAIN_DATASET_URL`` (this node's CSV split),
``PRETRAINED_MODEL_URL`` (the initial model every trainer starts from), ``AGG_IP``/``AGG_PORT``,
``MODEL_URL`` (where the final model is saved), and the template's ``epochs``,
``batch_size``, ``learning_rate``, ``output_url``.

Besides training, each trainer keeps the global model of every round as
``<output_url>/<WORKER_NAME>/round-<r>.npz`` so that ``evaluate.py`` can score the rounds on
the held-out test set (the trainers never see it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from digits_fl import build_model, load_weights, read_csv, save_weights, train_epochs

from sedna.common.config import BaseConfig, Context
from sedna.core.federated_learning import FederatedLearning


class Estimator:
    """The MLP of ``digits_fl`` with the methods FederatedLearning needs.

    ``round_of`` tells which round is being trained (set by :func:`main` from the
    FederatedLearning object); at the start of round ``r > 1`` the model holds the global
    weights of round ``r - 1``, which are saved to ``snapshots``.
    """

    def __init__(self, snapshots: Path | None = None) -> None:
        self.model = build_model(0)
        self.snapshots = snapshots
        self.round_of = lambda: 0
        self.seed = 0

    def load(self, model_url: str) -> None:
        """Start from the initial model (``PRETRAINED_MODEL_URL``, an ``.npz`` of arrays)."""
        self.set_weights(load_weights(Path(model_url)))

    def snapshot(self, round_number: int) -> None:
        """Keep the current (global) weights of ``round_number``."""
        if self.snapshots is not None and round_number > 0:
            save_weights(self.snapshots / f"round-{round_number}.npz", self.get_weights())

    def train(
        self,
        train_data: tuple[Any, Any],
        valid_data: Any = None,
        epochs: int = 1,
        batch_size: int = 32,
        learning_rate: float = 0.1,
        **kwargs: Any,
    ) -> dict[str, float]:
        """Train locally for ``epochs`` on this node's data; the loss and training accuracy."""
        round_number = self.round_of()
        self.snapshot(round_number - 1)
        x, y = train_data
        return train_epochs(
            self.model,
            x,
            y,
            epochs=int(epochs),
            batch_size=int(batch_size),
            learning_rate=float(learning_rate),
            seed=self.seed * 1000 + round_number,
        )

    def get_weights(self) -> list[np.ndarray[Any, Any]]:
        """The state dict's arrays, in order."""
        return [t.detach().cpu().numpy().copy() for t in self.model.state_dict().values()]

    def set_weights(self, weights: list[np.ndarray[Any, Any]]) -> None:
        """Load arrays in state-dict order."""
        keys = list(self.model.state_dict())
        if len(keys) != len(weights):
            raise ValueError(f"expected {len(keys)} weight arrays, got {len(weights)}")
        self.model.load_state_dict(
            {k: torch.as_tensor(np.asarray(w)) for k, w in zip(keys, weights, strict=True)}
        )

    def save(self, model_path: str) -> str:
        """Save the final model to ``model_path`` as an ``.npz`` of arrays (atomically: every
        trainer saves the same global model there)."""
        save_weights(Path(model_path), self.get_weights())
        return model_path


def main() -> None:
    """Train this node's share of the federated job."""
    train_data = read_csv(BaseConfig.train_dataset_url or os.environ["TRAIN_DATASET_URL"])
    epochs = int(Context.get_parameters("epochs", 1))
    batch_size = int(Context.get_parameters("batch_size", 32))
    learning_rate = float(Context.get_parameters("learning_rate", 0.1))
    aggregation = str(Context.get_parameters("aggregation_algorithm", "FedAvg"))
    output = Context.get_parameters("output_url", "")
    worker = str(Context.get_parameters("WORKER_NAME", "trainer"))

    estimator = Estimator(Path(output) / worker if output else None)
    estimator.seed = int(Context.get_parameters("seed", 0))
    pretrained = BaseConfig.pretrained_model_url
    if pretrained and Path(pretrained).is_file():
        estimator.load(pretrained)
    fl_model = FederatedLearning(estimator=estimator, aggregation=aggregation)
    estimator.round_of = lambda: fl_model.current_round
    result = fl_model.train(
        train_data=train_data,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
    )
    # The model now holds the last round's global weights.
    estimator.snapshot(fl_model.current_round)
    print(f"federated training done after round {fl_model.current_round}: {result}", flush=True)
    fl_model.close()


if __name__ == "__main__":
    main()
