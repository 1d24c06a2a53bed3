"""Client selection for federated learning (upstream ``sedna.algorithms.client_choose``)."""

from sedna.algorithms.client_choose.client_choose import (
    AbstractClientChoose,
    FractionClientChoose,
    SimpleClientChoose,
)

__all__ = ["AbstractClientChoose", "FractionClientChoose", "SimpleClientChoose"]
