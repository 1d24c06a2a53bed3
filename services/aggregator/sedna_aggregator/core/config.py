"""A session's configuration: how it aggregates, selects, times out and stops."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sedna_aggregator.core.errors import SessionConfigError

__all__ = ["BelowMinimum", "SessionConfig", "TargetMode"]


class BelowMinimum(enum.StrEnum):
    """What a round does when its deadline passes with fewer than ``min_participants`` updates.

    ``EXTEND``: the deadline is extended once by ``round_timeout``; if the round is still short
    at the second deadline, it fails (and with it the session). ``FAIL``: fail at once.
    """

    EXTEND = "extend"
    FAIL = "fail"


class TargetMode(enum.StrEnum):
    """Whether the target metric is reached from below (``MAX``, accuracy) or above (``MIN``)."""

    MAX = "max"
    MIN = "min"


def _positive_or_none(value: float | None, name: str) -> None:
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise SessionConfigError(f"{name} must be a finite number of seconds > 0, got {value!r}")


@dataclass(frozen=True)
class SessionConfig:
    """Configuration of one federated-learning session (one FederatedLearningJob).

    Attributes
    ----------
    aggregation : str
        Plug-in registered under ``ClassType.FL_AGG`` (``"FedAvg"``, ``"FedAdam"``...).
    aggregation_parameters : mapping
        Keyword arguments of the plug-in (numbers or strings, as a controller injects them).
    exit_round : int
        The session completes once this many rounds were aggregated (>= 1).
    min_participants : int
        Updates a round needs to be aggregated at its deadline; also the number of joined
        clients needed before a round opens (>= 1).
    expected_clients : int or None
        The job's trainer count (upstream ``PARTICIPANTS_COUNT``). When set, a waiting session
        opens its round as soon as this many have joined, or once ``join_grace`` has passed
        with at least ``min_participants`` joined. None: open as soon as ``min_participants``
        have joined.
    client_fraction : float
        Fraction of the joined clients selected per round, in (0, 1]; at least
        ``min_participants`` are selected (Flower's rule, ``FractionClientChoose``).
    selection_seed : int
        Seed of the client choice (the choice is a function of seed, round and client set).
    round_timeout : float or None
        Seconds a round stays open; None: wait for every selected client (no deadline).
    below_minimum : BelowMinimum
        What a round does at its deadline with fewer than ``min_participants`` updates.
    join_grace : float or None
        With ``expected_clients``: how long a waiting session waits for the missing ones once
        ``min_participants`` have joined; None: ``round_timeout`` (and no grace without one).
    target_metric : str
        Optional early exit: the session completes when the round's sample-weighted average
        of this client metric reaches ``target_metric_value``. Empty: no target.
    target_metric_value : float
        The threshold.
    target_mode : TargetMode
        ``MAX``: reached when the metric is >= the value; ``MIN``: when <= the value.
    proximal_mu : float
        FedProx coefficient handed to the clients (>= 0); the server does not use it.
    """

    aggregation: str = "FedAvg"
    aggregation_parameters: Mapping[str, Any] = field(default_factory=dict)
    exit_round: int = 1
    min_participants: int = 1
    expected_clients: int | None = None
    client_fraction: float = 1.0
    selection_seed: int = 0
    round_timeout: float | None = None
    below_minimum: BelowMinimum = BelowMinimum.EXTEND
    join_grace: float | None = None
    target_metric: str = ""
    target_metric_value: float = 0.0
    target_mode: TargetMode = TargetMode.MAX
    proximal_mu: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.aggregation, str) or not self.aggregation:
            raise SessionConfigError("aggregation must name a registered aggregation plug-in")
        for name in ("exit_round", "min_participants", "selection_seed"):
            value = getattr(self, name)
            low = 0 if name == "selection_seed" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SessionConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.expected_clients is not None and (
            isinstance(self.expected_clients, bool)
            or not isinstance(self.expected_clients, int)
            or self.expected_clients < self.min_participants
        ):
            raise SessionConfigError(
                "expected_clients must be an integer >= min_participants "
                f"({self.min_participants}), got {self.expected_clients!r}"
            )
        if not (0.0 < self.client_fraction <= 1.0):
            raise SessionConfigError(
                f"client_fraction must be in (0, 1], got {self.client_fraction!r}"
            )
        _positive_or_none(self.round_timeout, "round_timeout")
        _positive_or_none(self.join_grace, "join_grace")
        if not math.isfinite(self.target_metric_value):
            raise SessionConfigError("target_metric_value must be finite")
        if not math.isfinite(self.proximal_mu) or self.proximal_mu < 0:
            raise SessionConfigError(f"proximal_mu must be >= 0, got {self.proximal_mu!r}")
        object.__setattr__(self, "below_minimum", BelowMinimum(self.below_minimum))
        object.__setattr__(self, "target_mode", TargetMode(self.target_mode))
        object.__setattr__(self, "aggregation_parameters", dict(self.aggregation_parameters))

    @property
    def effective_join_grace(self) -> float | None:
        """``join_grace``, or ``round_timeout`` when it is unset."""
        return self.join_grace if self.join_grace is not None else self.round_timeout

    def target_reached(self, metrics: Mapping[str, float]) -> bool:
        """Whether a round's metrics reach the target (False without a target or the metric)."""
        if not self.target_metric or self.target_metric not in metrics:
            return False
        value = metrics[self.target_metric]
        if self.target_mode is TargetMode.MAX:
            return value >= self.target_metric_value
        return value <= self.target_metric_value

    def to_json(self) -> dict[str, Any]:
        """The configuration as JSON-ready values (recorded in checkpoints for inspection)."""
        return {
            "aggregation": self.aggregation,
            "aggregation_parameters": dict(self.aggregation_parameters),
            "exit_round": self.exit_round,
            "min_participants": self.min_participants,
            "expected_clients": self.expected_clients,
            "client_fraction": self.client_fraction,
            "selection_seed": self.selection_seed,
            "round_timeout": self.round_timeout,
            "below_minimum": self.below_minimum.value,
            "join_grace": self.join_grace,
            "target_metric": self.target_metric,
            "target_metric_value": self.target_metric_value,
            "target_mode": self.target_mode.value,
            "proximal_mu": self.proximal_mu,
        }
