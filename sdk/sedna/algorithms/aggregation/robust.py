"""Byzantine-robust aggregations: FedMedian, FedTrimmedAvg, Krum (and multi-Krum).

They need every update of the round at once (``streaming = False``): the round buffers the
updates (not copied; they must not be modified before :meth:`finish`). The result does not
depend on the global weights. Sample counts only weight multi-Krum's final average, as Flower.

Memory: K clients cost K copies of the model for the whole round (an aggregation server
receiving updates layer by layer keeps every layer too), plus float64 working arrays of one
layer of every client at :meth:`finish` (FedMedian, FedTrimmedAvg: ``K`` float64 copies of
the largest layer; Krum: the same per layer, and a ``K x K`` distance matrix). This is
inherent to median, trimmed mean and Krum; use the FedAvg family when memory matters.
"""

from __future__ import annotations

import numpy as np

from sedna.algorithms.aggregation._params import param_float, param_int
from sedna.algorithms.aggregation.aggregation import Array, BufferedAggregation
from sedna.common.class_factory import ClassFactory, ClassType

__all__ = ["FedMedian", "FedTrimmedAvg", "Krum"]


@ClassFactory.register(ClassType.FL_AGG)
class FedMedian(BufferedAggregation):
    """Coordinate-wise median of the client weights (unweighted; an even count averages the
    two middle values).

    Buffered: keeps all K updates of the round (K model copies) until :meth:`finish`.
    """

    def _result(self) -> list[Array]:
        return [np.median(self._stacked(i), axis=0) for i in range(self._layer_count())]


@ClassFactory.register(ClassType.FL_AGG)
class FedTrimmedAvg(BufferedAggregation):
    """Coordinate-wise trimmed mean (unweighted).

    Per coordinate, the ``k = floor(beta * n)`` smallest and ``k`` largest of the ``n``
    client values are dropped and the rest averaged. Buffered: keeps all K updates of the
    round (K model copies) until :meth:`finish`.

    Parameters
    ----------
    beta : float or str, default 0.2
        Fraction cut from each side, in [0, 0.5) (Flower's default).
    """

    def __init__(self, beta: float | str = 0.2) -> None:
        super().__init__()
        self.beta = param_float(beta, "beta", low=0.0, high=0.5, high_open=True)

    def _result(self) -> list[Array]:
        count = len(self._buffer)
        cut = int(self.beta * count)
        result: list[Array] = []
        for index in range(self._layer_count()):
            ordered = np.sort(self._stacked(index), axis=0)
            result.append(ordered[cut : count - cut].mean(axis=0))
        return result


@ClassFactory.register(ClassType.FL_AGG)
class Krum(BufferedAggregation):
    """Krum (Blanchard et al. 2017) and multi-Krum.

    Each update's score is the sum of its squared Euclidean distances (over all layers) to
    its ``n - f - 2`` closest other updates (at least 1, at most ``n - 1``). Krum returns the
    update with the lowest score; multi-Krum (``num_clients_to_keep = m > 1``) returns the
    sample-weighted average of the ``m`` lowest-scored updates (as Flower). Ties go to the
    earlier update. The chosen clients are in :attr:`selected`. Buffered: keeps all K
    updates of the round (K model copies) until :meth:`finish`.

    Parameters
    ----------
    num_malicious_clients : int or str, default 0
        ``f``, the number of Byzantine clients tolerated (Krum's guarantee needs
        ``n >= 2f + 3``; not enforced).
    num_clients_to_keep : int or str, default 0
        ``m``; 0 or 1 means plain Krum.
    """

    def __init__(
        self, num_malicious_clients: int | str = 0, num_clients_to_keep: int | str = 0
    ) -> None:
        super().__init__()
        self.num_malicious_clients = param_int(
            num_malicious_clients, "num_malicious_clients", low=0
        )
        self.num_clients_to_keep = param_int(num_clients_to_keep, "num_clients_to_keep", low=0)
        self.selected: list[str] = []
        self.scores: dict[str, float] = {}

    def _distances(self) -> Array:
        count = len(self._buffer)
        distances = np.zeros((count, count), dtype=np.float64)
        for index in range(self._layer_count()):
            stacked = self._stacked(index).reshape(count, -1)
            for i in range(count):
                diff = stacked[i + 1 :] - stacked[i]
                row = np.einsum("ij,ij->i", diff, diff)
                distances[i, i + 1 :] += row
                distances[i + 1 :, i] += row
        return distances

    def _result(self) -> list[Array]:
        count = len(self._buffer)
        distances = self._distances()
        closest = min(max(1, count - self.num_malicious_clients - 2), count - 1)
        scores: list[float] = []
        for i in range(count):
            others = np.delete(distances[i], i)
            scores.append(float(np.sort(others)[:closest].sum()))
        order = sorted(range(count), key=lambda i: scores[i])
        keep = order[: min(max(1, self.num_clients_to_keep), count)]
        self.scores = {self._buffer[i][0]: scores[i] for i in range(count)}
        self.selected = [self._buffer[i][0] for i in keep]
        total = float(sum(self._buffer[i][2] for i in keep))
        result: list[Array] = []
        for index in range(self._layer_count()):
            layer_sum = np.zeros(self._buffer[0][1][index].shape, dtype=np.float64)
            for i in keep:
                _cid, layers, samples = self._buffer[i]
                layer_sum += np.multiply(layers[index], float(samples), dtype=np.float64)
            result.append(layer_sum / total)
        return result
