"""``AggregationServerV2``: the MistNet aggregation worker, native (upstream ran Plato).

It hosts the user's model in the job's aggregation worker: edges upload perturbed features of
the first ``cut_layer`` layers (``SplitLearningService``), the worker trains the layers after
``cut_layer`` on them and publishes the full model (``AggregationService.PullGlobalWeights``).
The session logic is :class:`sedna.service.split_learning.SplitSession`; this class only reads
the configuration and runs the gRPC server (:class:`sedna.runtime.ServiceServer`: health,
reflection, metrics, TLS and tokens from the usual ``SEDNA_*`` settings).

Environment (upstream names where upstream had them):

========================  ====================================================================
``AGG_BIND_IP``,          where to listen (default ``0.0.0.0`` and 7363)
``AGG_BIND_PORT``
``NAMESPACE``,            the session id ``<NAMESPACE>/<JOB_NAME>`` (the edges' too)
``JOB_NAME``
``cut_layer``,            when no ``MistNet`` aggregation object is given
``epsilon``
``exit_round``            rounds (default 1: fresh noise every round costs epsilon again)
``epochs``,               cloud training per round (defaults 5, 32, 0.05)
``batch_size``,
``learning_rate``
``participants_count``    clients round 1 waits for, when no ``chooser`` is given (default 1)
``ROUND_TIMEOUT``         seconds a round waits for uploads (default: no limit)
``MODEL_URL``             where the trained full model is saved (a torch ``state_dict``)
========================  ====================================================================
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
from typing import Any

from sedna.common.config import BaseConfig, Context
from sedna.common.file_ops import FileOps
from sedna.runtime import ServiceServer
from sedna.runtime.config import ServiceSettings
from sedna.runtime.logging import configure_logging
from sedna.service.split_learning.servicer import add_split_learning_services
from sedna.service.split_learning.session import SplitConfig, SplitSession

__all__ = ["AggregationServerV2"]

_log = logging.getLogger(__name__)

DEFAULT_BIND_PORT = 7363


def _param(name: str, default: Any, convert: type[int] | type[float]) -> Any:
    raw = Context.get_parameters(name, None)
    if raw is None:
        return default
    try:
        return convert(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={raw!r} is not a valid {convert.__name__}") from None


def _pair(data: Any) -> tuple[Any, Any] | None:
    """``(x, y)`` evaluation data from a pair or an object with ``x`` and ``y``."""
    if data is None:
        return None
    if isinstance(data, tuple) and len(data) == 2:
        return data[0], data[1]
    if hasattr(data, "x") and hasattr(data, "y"):
        return data.x, data.y
    raise TypeError(f"data must be (x, y) or have .x and .y, got {type(data).__name__}")


class AggregationServerV2:
    """The cloud side of a MistNet job (upstream signature).

    Parameters
    ----------
    data
        Optional ``(x, y)`` raw evaluation data (upstream's test set): after each round the
        full model is evaluated on it and ``eval_accuracy`` / ``eval_loss`` are published
        with the model.
    estimator
        The full torch model (:mod:`sedna.service.split_learning.torch_split` contract), an
        object whose ``model`` is one, or a class to instantiate. Its ``hyperparameters``
        mapping, if any, supplies ``epochs``, ``batch_size``, ``learning_rate``.
    aggregation
        ``MistNet(cut_layer, epsilon)`` (:class:`sedna.algorithms.aggregation.MistNet`) or a
        mapping of its parameters; None or the name ``"MistNet"``: the ``cut_layer`` /
        ``epsilon`` environment. Other algorithms are refused: weight
        averaging is ``sedna-aggregator``'s job.
    transmitter
        Upstream's transmitter; only ``ws`` (gRPC streams here) is served.
    chooser
        ``SimpleClientChoose(per_round=n)``: round 1 waits for ``n`` clients.
    exit_round, epochs, batch_size, learning_rate, round_timeout, host, port, session_id
        Override the environment (ours).
    """

    def __init__(
        self,
        data: Any = None,
        estimator: Any = None,
        aggregation: Any = None,
        transmitter: Any = None,
        chooser: Any = None,
        *,
        exit_round: int | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        learning_rate: float | None = None,
        round_timeout: float | None = None,
        host: str | None = None,
        port: int | None = None,
        session_id: str | None = None,
    ) -> None:
        from sedna.core.federated_learning.mistnet import MistNetSettings  # noqa: PLC0415
        from sedna.service.split_learning.torch_split import (  # noqa: PLC0415 - torch
            TorchSplitModel,
            resolve_module,
        )

        if estimator is None:
            raise ValueError("AggregationServerV2 needs estimator= (the full torch model)")
        if isinstance(estimator, type):
            estimator = estimator()
        if isinstance(aggregation, str):  # a name: the parameters come from the environment
            name, aggregation = aggregation, None
        else:
            name = type(aggregation).__name__ if aggregation is not None else "MistNet"
        if not isinstance(aggregation, dict) and name.lower() != "mistnet":
            raise NotImplementedError(
                f"AggregationServerV2 serves MistNet split learning; {name} averages weights: "
                "run sedna-aggregator with FederatedLearning for it"
            )
        kind = str(getattr(transmitter, "name", "") or type(transmitter).__name__).lower()
        if transmitter is not None and "s3" in kind:
            raise NotImplementedError("MistNet features travel over gRPC streams: use ws")
        self.config = BaseConfig()
        self.settings = MistNetSettings.resolve(aggregation)
        hyper = dict(getattr(estimator, "hyperparameters", None) or {})
        model = resolve_module(estimator)
        self.model = model
        self.trainer = TorchSplitModel(
            model,
            self.settings.cut_layer,
            epochs=int(epochs or hyper.get("epochs") or _param("epochs", 5, int)),
            batch_size=int(batch_size or hyper.get("batch_size") or _param("batch_size", 32, int)),
            learning_rate=float(
                learning_rate or hyper.get("learning_rate") or _param("learning_rate", 0.05, float)
            ),
            eval_data=_pair(data),
        )
        per_round = getattr(chooser, "per_round", None)
        timeout = (
            round_timeout if round_timeout is not None else _param("ROUND_TIMEOUT", None, float)
        )
        self.split_config = SplitConfig(
            cut_layer=self.settings.cut_layer,
            epsilon=self.settings.epsilon,
            min_clients=int(per_round or _param("participants_count", 1, int)),
            exit_round=int(exit_round or _param("exit_round", 1, int)),
            round_timeout=None if timeout is None or math.isinf(timeout) else float(timeout),
        )
        namespace = str(self.config.namespace or "") or str(self.config.job_name or "sedna")
        job = str(self.config.job_name or "sedna")
        self.session_id = session_id or f"{namespace}/{job}"
        self.host = host or str(Context.get_parameters("AGG_BIND_IP", "0.0.0.0"))
        self.port = int(
            port if port is not None else _param("AGG_BIND_PORT", DEFAULT_BIND_PORT, int)
        )
        self.session: SplitSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ServiceServer | None = None
        self._serving = threading.Event()

    def start(self) -> None:
        """Serve until the session completes and every edge left (or SIGTERM/SIGINT, or
        :meth:`stop`), then save the model to ``MODEL_URL`` when set.

        Raises
        ------
        sedna.runtime.ServerStartError
            The port cannot be bound.
        SessionFailedError
            The session failed (cloud training raised, or a round timed out empty).
        """
        if not logging.getLogger().handlers:
            configure_logging(str(self.config.log_level or "INFO"), "json")
        asyncio.run(self._serve(threading.current_thread() is threading.main_thread()))
        self._save()

    def wait_serving(self, timeout: float | None = None) -> bool:
        """Wait until :meth:`start` serves (port bound); whether it does."""
        return self._serving.wait(timeout)

    def stop(self, grace: float | None = None) -> None:
        """Drain and stop a server started by :meth:`start` (from any thread)."""
        loop, server = self._loop, self._server
        if loop is None or server is None or loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(server.stop(grace), loop).result()

    async def _serve(self, handle_signals: bool) -> None:
        settings = ServiceSettings(host=self.host, port=self.port, metrics_port=None)
        server = ServiceServer(settings)
        session = SplitSession(self.session_id, self.split_config, self.trainer)
        self.session = session
        add_split_learning_services(server, session)
        self._loop, self._server = asyncio.get_running_loop(), server
        try:
            await server.start()
            self.port = server.port
            _log.info(
                "MistNet aggregation worker serving",
                extra={
                    "session": self.session_id,
                    "address": server.address,
                    "cut_layer": self.split_config.cut_layer,
                    "epsilon": self.split_config.epsilon,
                },
            )
            self._serving.set()
            finished = asyncio.create_task(self._until_finished(session))
            serving = asyncio.create_task(
                server.run_until_signal() if handle_signals else server.wait_for_termination()
            )
            await asyncio.wait({finished, serving}, return_when=asyncio.FIRST_COMPLETED)
            for task in (finished, serving):
                task.cancel()
        finally:
            self._serving.clear()
            await server.stop(1.0)
            self._loop = self._server = None

    @staticmethod
    async def _until_finished(session: SplitSession) -> None:
        await session.wait_completed()
        # Edges pull the last model, then leave; wait for them (a vanished edge is not
        # waited for longer than a few minutes).
        for _ in range(3000):
            if not session.status().clients:
                return
            await asyncio.sleep(0.1)

    def _save(self) -> None:
        if self.session is not None and self.session.state.value == "failed":
            from sedna.service.split_learning.errors import SessionFailedError  # noqa: PLC0415

            raise SessionFailedError(
                f"MistNet session {self.session_id!r} failed; see the log for the reason"
            )
        url = str(self.config.model_url or "")
        if not url:
            return
        import torch  # noqa: PLC0415

        path = FileOps.local_path(url)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        torch.save(self.model.state_dict(), path)
        _log.info("model saved", extra={"path": path})
