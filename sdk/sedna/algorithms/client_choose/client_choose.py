"""Client selection for federated learning, compatible with upstream Sedna.

Upstream's classes only carried ``parameters`` for the Plato framework
(``SimpleClientChoose(per_round=1)`` → ``{"per_round": 1}``); here they also choose:
``chooser.choose(available_clients, round_number)`` returns the clients to train this round.

* :class:`SimpleClientChoose` (``per_round=1``): ``min(per_round, n)`` clients.
* :class:`FractionClientChoose` (``fraction=1.0, min_clients=1, seed=0``):
  ``min(n, max(min_clients, floor(fraction * n)))`` clients (Flower's rule).

The choice is a uniform sample without replacement, drawn from a generator seeded with
``(seed, round_number)``: the same seed, round and set of clients always give the same choice,
whatever the order of ``available_clients``. The chosen ids come back sorted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from sedna.algorithms.aggregation._params import param_float, param_int

__all__ = ["AbstractClientChoose", "FractionClientChoose", "SimpleClientChoose"]


class AbstractClientChoose:
    """Base client choose algorithm (upstream ``AbstractClientChoose``).

    Attributes
    ----------
    parameters : dict
        The algorithm's parameters (upstream passed them to Plato as ``clients.*``).
    """

    def __init__(self) -> None:
        self.parameters: dict[str, Any] = {}

    def count(self, available: int) -> int:
        """How many clients to choose out of ``available``."""
        raise NotImplementedError

    def choose(self, clients: Sequence[str], round_number: int) -> list[str]:
        """The clients to train in round ``round_number``.

        Parameters
        ----------
        clients : sequence of str
            The available client ids (no duplicates).
        round_number : int
            The round, >= 0; part of the seed.

        Returns
        -------
        list of str
            The chosen ids, sorted.

        Raises
        ------
        ValueError
            If a client id is repeated or not a non-empty string, or ``round_number`` < 0.
        """
        pool = sorted(_client_ids(clients))
        round_number = param_int(round_number, "round_number", low=0)
        size = min(len(pool), self.count(len(pool)))
        if size >= len(pool):
            return pool
        rng = np.random.default_rng(self._entropy(round_number))
        picked = rng.choice(len(pool), size=size, replace=False)
        return sorted(pool[int(i)] for i in picked)

    def _entropy(self, round_number: int) -> list[int] | None:
        return None


def _client_ids(clients: Sequence[str]) -> list[str]:
    if isinstance(clients, str):
        raise ValueError("clients must be a sequence of client ids, not a string")
    seen: set[str] = set()
    for client in clients:
        if not isinstance(client, str) or not client:
            raise ValueError(f"client ids must be non-empty strings, got {client!r}")
        if client in seen:
            raise ValueError(f"client {client!r} is listed twice")
        seen.add(client)
    return list(seen)


def _seed(value: object) -> int | None:
    if value is None or value == "":
        return None
    return param_int(value, "seed", low=0)


class SimpleClientChoose(AbstractClientChoose):
    """Choose ``per_round`` clients a round (upstream ``SimpleClientChoose``).

    Parameters
    ----------
    per_round : int or str, default 1
        Clients per round, >= 1.
    seed : int or str, optional
        Seed (>= 0) for a reproducible choice; None draws from fresh OS entropy.
    """

    def __init__(self, per_round: int | str = 1, seed: int | str | None = None) -> None:
        super().__init__()
        self.per_round = param_int(per_round, "per_round", low=1)
        self.seed = _seed(seed)
        self.parameters = {"per_round": self.per_round}

    def count(self, available: int) -> int:
        return min(available, self.per_round)

    def _entropy(self, round_number: int) -> list[int] | None:
        return None if self.seed is None else [self.seed, round_number]


class FractionClientChoose(AbstractClientChoose):
    """Choose a fraction of the available clients, at least ``min_clients``.

    Parameters
    ----------
    fraction : float or str, default 1.0
        Fraction of the available clients, in (0, 1].
    min_clients : int or str, default 1
        Lower bound on the number chosen (all are chosen when fewer are available).
    seed : int or str, default 0
        Seed (>= 0); the choice is a function of ``(seed, round_number, set of clients)``.
    """

    def __init__(
        self,
        fraction: float | str = 1.0,
        min_clients: int | str = 1,
        seed: int | str = 0,
    ) -> None:
        super().__init__()
        self.fraction = param_float(fraction, "fraction", low=0.0, high=1.0, low_open=True)
        self.min_clients = param_int(min_clients, "min_clients", low=0)
        self.seed = param_int(seed, "seed", low=0)
        self.parameters = {
            "fraction": self.fraction,
            "min_clients": self.min_clients,
            "seed": self.seed,
        }

    def count(self, available: int) -> int:
        return min(available, max(self.min_clients, math.floor(self.fraction * available)))

    def _entropy(self, round_number: int) -> list[int] | None:
        return [self.seed, round_number]
