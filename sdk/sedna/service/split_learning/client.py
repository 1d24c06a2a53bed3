"""The edge's client of a MistNet aggregation worker: upload features, pull the model.

:class:`SplitLearningClient` is an
:class:`~sedna.service.aggregation_client.AggregationClient` (join, pull, status and leave
work as there, with the same deadlines, retries and errors) that adds :meth:`upload`:
``SplitLearningService.UploadFeatures``, a ``FeatureBatchHeader`` followed by the
``features`` and ``labels`` tensors as a chunked ``TensorFrame`` stream.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np

from sedna.api.aggregator.v1 import split_learning_service_pb2 as split_pb
from sedna.api.aggregator.v1 import split_learning_service_pb2_grpc as split_grpc
from sedna.service.aggregation_client import (
    AggregationClient,
    AggregationClientError,
    RoundNotOpenError,
    WrongRoundError,
)
from sedna.service.split_learning.session import FEATURES, LABELS
from sedna.tensor import TensorError, from_numpy_dtype, iter_frames

__all__ = ["SplitLearningClient"]


class SplitLearningClient(AggregationClient):
    """A MistNet edge's connection to its aggregation worker (``AggregationServerV2``).

    Same parameters as :class:`~sedna.service.aggregation_client.AggregationClient`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._split_stub = split_grpc.SplitLearningServiceStub(self._channel)

    def upload(
        self,
        round: int,
        features: Any,
        labels: Any,
        *,
        cut_layer: int,
        epsilon: float,
        timeout: float | None = None,
    ) -> int:
        """Upload one batch of (already perturbed) features and their labels for ``round``.

        Parameters
        ----------
        round
            The round the features are for.
        features
            ``(n, ...)`` floating-point features (the front layers' output).
        labels
            ``(n,)`` (or ``(n, ...)``) integer or float labels.
        cut_layer, epsilon
            What the features were computed and perturbed with; the server checks them
            against its session.
        timeout
            Seconds for the call, retries included; the client's ``timeout`` by default.

        Returns
        -------
        int
            Samples the server has from this client in the round, this batch included.

        Raises
        ------
        ValueError
            Counts differ, or a dtype has no wire form (before anything is sent).
        WrongRoundError, RoundNotOpenError, UpdateRejectedError, SessionConfigConflictError,
        AggregatorUnavailableError, AggregationClientError
            As for :meth:`push`; the message is the server's and names the tensor at fault.
        """
        self._require_joined()
        x, y = np.asarray(features), np.asarray(labels)
        if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"features {x.shape} and labels {y.shape} must have the same number of rows"
            )
        if not math.isfinite(float(epsilon)):
            raise ValueError(f"epsilon must be finite, not {epsilon}")
        for name, array in ((FEATURES, x), (LABELS, y)):
            try:
                from_numpy_dtype(array.dtype)
            except TensorError as err:
                raise ValueError(f"cannot send {name}: {err}") from err
        header = split_pb.FeatureBatchHeader(
            session_id=self.session_id,
            client_id=self.client_id,
            round=int(round),
            cut_layer=int(cut_layer),
            epsilon=float(epsilon),
        )
        tensors = [(FEATURES, x), (LABELS, y)]
        sent_frames = [0]

        def messages() -> Iterator[split_pb.UploadFeaturesRequest]:
            yield split_pb.UploadFeaturesRequest(header=header)
            for frame in iter_frames(tensors, chunk_size=self.chunk_size):
                sent_frames[0] += 1
                message = split_pb.UploadFeaturesRequest()
                message.frame.CopyFrom(frame)
                yield message

        def attempt(remaining: float) -> split_pb.UploadFeaturesResponse:
            sent_frames[0] = 0
            response: split_pb.UploadFeaturesResponse = self._split_stub.UploadFeatures(
                messages(), timeout=remaining
            )
            return response

        def retryable(err: AggregationClientError) -> bool:
            # Never once bytes may have reached the server: the batch may be stored already.
            if err.code is grpc.StatusCode.UNAVAILABLE:
                return sent_frames[0] == 0
            if isinstance(err, RoundNotOpenError):
                return True
            return isinstance(err, WrongRoundError) and 0 <= err.current_round < int(round)

        response = self._retrying(
            f"upload of round {round}",
            attempt,
            self.timeout if timeout is None else timeout,
            retryable,
            round_number=int(round),
        )
        return int(response.received_samples)
