"""Client of ``ours``: one trainer on ``sedna.service.aggregation_client.AggregationClient``.

``python -m bench.federated_learning.ours client --port P --client K ...``: joins the session,
then per round "trains" (adds its delta in place), pushes the update (chunked tensor stream)
and pulls the aggregate into the same arrays, as a Sedna federated-learning worker does. The
server is the real ``sedna-aggregator`` (started by the driver).
"""

from __future__ import annotations

import os
import sys

import numpy as np

from sedna.service.aggregation_client import AggregationClient

from .common import cpu_seconds, now, parse_worker_args, write_result
from .model import delta, initial_weights, layer_shapes, max_abs_error, sample_count

SESSION = "default/bench-fl"


def main(argv: list[str] | None = None, *, bulk: bool = True) -> int:
    """Run one client; write its round times and the final check to ``--out``.

    ``bulk``: use the aggregator's bulk port (the client's default); False: gRPC only.
    """
    args = parse_worker_args(argv)
    shapes = layer_shapes(args.params, args.layers)
    initial = initial_weights(shapes)
    weights = [layer.copy() for layer in initial]
    n, d = sample_count(args.client), delta(args.client)
    rounds: list[tuple[int, float, float]] = []
    with AggregationClient(args.host, args.port, timeout=args.timeout, bulk=bulk) as client:
        joined = client.join(SESSION, f"trainer-{args.client}", sample_count=n)
        first = max(joined.current_round, 1)
        cpu0 = cpu_seconds()
        for r in range(first, first + args.rounds):
            for layer in weights:  # "training", in place as an optimizer steps; not timed
                np.add(layer, d, out=layer)
            t0 = now()
            client.push(r, weights, sample_count=n)
            # Downloaded into the same arrays (a trainer's parameters), not into new memory.
            got = client.pull(r, timeout=args.timeout, into=weights)
            t1 = now()
            if got.round != r:
                raise SystemExit(f"pulled round {got.round}, expected {r}")
            weights = got.weights
            rounds.append((r, t0, t1))
        cpu1 = cpu_seconds()
    error = max_abs_error(weights, initial, args.clients, args.rounds)
    write_result(
        args.out,
        {
            "client": args.client,
            "rounds": rounds,
            "max_abs_error": error,
            "cpu_s": cpu1 - cpu0,
        },
    )
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The result file is written: skip the interpreter's teardown, which took minutes for
    # Flower's processes on a loaded machine (a full GC over their object graphs).
    os._exit(code)
