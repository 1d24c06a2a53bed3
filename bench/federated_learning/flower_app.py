"""Flower 1.41.0 side of the benchmark: a real gRPC server and K real gRPC clients, FedAvg.

``.venv-flower/bin/python -m bench.federated_learning.flower_app server|client ...`` (run from
the repository root; this module imports only NumPy, Flower and :mod:`.model`/:mod:`.common`).

Mode: Flower's legacy gRPC engine, ``flwr.server.start_server`` + ``flwr.client.start_client``
(transport ``grpc-bidi``: one bidirectional gRPC stream per client, each tensor an ``.npy``
blob inside ``Parameters``), with the legacy ``flwr.server.strategy.FedAvg`` (``inplace``, its
default). Flower deprecates both calls since 1.13 in favour of the SuperLink/SuperNode
deployment engine, but in 1.41.0 that engine's Fleet API (SuperNode <-> SuperLink) runs over
HTTP (protobuf bodies on FastAPI), not gRPC: ``flower-superlink --help`` says "The Fleet API
now operates over HTTP" and ``--fleet-api-type`` is deprecated. ``grpc-bidi`` is therefore the
only gRPC client/server transport Flower 1.41.0 ships, and the one the benchmark uses.

Round time is measured in the server: from the strategy's ``configure_fit`` (before the global
weights go out in the fit instructions) to the end of ``aggregate_fit`` (every client's update
back and averaged) - one download, one upload and the aggregation per client, as in the other
systems' rounds. Evaluation is off (``fraction_evaluate=0``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
from flwr.client import NumPyClient, start_client
from flwr.common import Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import ServerConfig, start_server
from flwr.server.strategy import FedAvg

from .common import WorkerArgs, cpu_seconds, now, parse_worker_args, proc_memory_kb, write_result
from .model import delta, initial_weights, layer_shapes, max_abs_error, sample_count


class TimedFedAvg(FedAvg):  # type: ignore[misc]
    """Flower's FedAvg, recording when each round starts and ends."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.starts: dict[int, float] = {}
        self.ends: dict[int, float] = {}
        self.last: Parameters | None = None

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: Any) -> Any:
        """Start of the round: the global weights are about to go out."""
        self.starts[server_round] = now()
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
        """End of the round: every update is in and averaged."""
        if failures:
            raise RuntimeError(f"round {server_round}: {len(failures)} client(s) failed")
        aggregated, metrics = super().aggregate_fit(server_round, results, failures)
        self.ends[server_round] = now()
        self.last = aggregated
        return aggregated, metrics


def serve(args: WorkerArgs) -> int:
    """Run ``--rounds`` FedAvg rounds with all K clients, then check the aggregate."""
    initial = initial_weights(layer_shapes(args.params, args.layers))
    strategy = TimedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=args.clients,
        min_evaluate_clients=0,
        min_available_clients=args.clients,
        accept_failures=False,
        initial_parameters=ndarrays_to_parameters(initial),
    )
    start_server(
        server_address=f"{args.host}:{args.port}",
        config=ServerConfig(num_rounds=args.rounds, round_timeout=args.timeout),
        strategy=strategy,
    )
    memory, cpu = proc_memory_kb(), cpu_seconds()  # before the check below (float64 copies)
    rounds = [(r, strategy.starts[r], strategy.ends[r]) for r in sorted(strategy.ends)]
    error = (
        float("inf")
        if strategy.last is None
        else max_abs_error(
            parameters_to_ndarrays(strategy.last), initial, args.clients, len(rounds)
        )
    )
    write_result(
        args.out, {"rounds": rounds, "max_abs_error": error, "memory_kb": memory, "cpu_s": cpu}
    )
    return 0


class BenchClient(NumPyClient):  # type: ignore[misc]
    """Trains by adding its delta to the global weights it is sent."""

    def __init__(self, client: int) -> None:
        self.n = sample_count(client)
        self.d = delta(client)
        self.fits = 0
        self.cpu_start = 0.0

    def fit(
        self, parameters: list[Any], config: dict[str, Any]
    ) -> tuple[list[Any], int, dict[str, Any]]:
        """One round's "training"."""
        if not self.fits:  # from the first fit: round 1's download is already decoded
            self.cpu_start = cpu_seconds()
        self.fits += 1
        return [np.asarray(p) + self.d for p in parameters], self.n, {}


def client(args: WorkerArgs) -> int:
    """Connect to the Flower server and train until it disconnects."""
    bench_client = BenchClient(args.client)
    start_client(
        server_address=f"{args.host}:{args.port}",
        client=bench_client.to_client(),
        insecure=True,
        max_wait_time=args.timeout,
    )
    write_result(
        args.out,
        {
            "client": args.client,
            "rounds": [],
            "fits": bench_client.fits,
            "cpu_s": cpu_seconds() - bench_client.cpu_start,
            "max_abs_error": None,
        },
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of both roles."""
    args = parse_worker_args(argv)
    return serve(args) if args.role == "server" else client(args)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The result file is written: skip the interpreter's teardown, which took minutes for
    # Flower's processes on a loaded machine (a full GC over their object graphs).
    os._exit(code)
