"""Concurrent joins and updates on real asyncio tasks (worker-thread runner), and memory."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from sedna_aggregator.core import (
    DuplicateUpdateError,
    ManualClock,
    Session,
    SessionConfig,
    SessionState,
    run_inline,
)

Array = npt.NDArray[Any]
Weights = Callable[..., list[Array]]
Reference = Callable[[list[tuple[list[Array], int]]], list[Array]]


async def test_concurrent_joins_and_updates(
    make_weights: Weights, reference_fedavg: Reference
) -> None:
    count = 24
    clients = {f"node-{i:02d}": i + 1 for i in range(count)}
    # Default runner: the aggregator works in a worker thread, under the session's lock.
    session = Session(
        "ns/job",
        SessionConfig(exit_round=2, min_participants=count, expected_clients=count),
        clock=ManualClock(),
    )
    joins = await asyncio.gather(*(session.join(cid, n) for cid, n in clients.items()))
    assert sum(j.state is SessionState.ROUND_OPEN for j in joins) >= 1
    assert session.state is SessionState.ROUND_OPEN
    assert len(session.selected) == count

    for r in (1, 2):
        updates = {cid: make_weights(r * 100 + i) for i, cid in enumerate(clients)}
        waiters = [asyncio.ensure_future(session.wait_for_round(r)) for _ in range(5)]
        # Every client sends twice at once: exactly one of each pair is accepted.
        results = await asyncio.gather(
            *(
                session.submit_update(cid, r, updates[cid], clients[cid])
                for cid in list(clients) * 2
            ),
            return_exceptions=True,
        )
        assert sum(isinstance(x, DuplicateUpdateError) for x in results) == count
        assert sorted(x.received_updates for x in results if not isinstance(x, Exception)) == list(
            range(1, count + 1)
        )
        await session.drain()
        done = await asyncio.gather(*waiters)
        assert {d.round for d in done} == {r}
        assert len({id(d) for d in done}) == 1  # one shared result, not a copy per waiter
        weights = done[0].weights
        assert weights is not None
        expected = reference_fedavg([(updates[c], n) for c, n in clients.items()])
        for got, want in zip(weights, expected, strict=True):
            np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-5)
    assert session.state is SessionState.COMPLETED


async def _round_keeps_updates_alive(algorithm: str, make_weights: Weights) -> bool:
    session = Session(
        "ns/job",
        SessionConfig(aggregation=algorithm, min_participants=3, expected_clients=3),
        clock=ManualClock(),
        runner=run_inline,
    )
    refs: list[weakref.ref[Array]] = []
    for cid in ("a", "b", "c"):
        await session.join(cid, 1)
    for i, cid in enumerate(("a", "b")):
        update = make_weights(i)
        refs.extend(weakref.ref(layer) for layer in update)
        await session.submit_update(cid, 1, update, 1)
        del update
    gc.collect()
    assert session.state is SessionState.ROUND_OPEN  # mid-round: c has not reported
    return any(ref() is not None for ref in refs)


async def test_fedavg_round_holds_no_per_client_copies(make_weights: Weights) -> None:
    session = Session("ns/job", SessionConfig(aggregation="FedAvg"))
    assert session.aggregator.streaming
    # Mid-round, nothing references the clients' arrays any more: only running sums remain.
    assert not await _round_keeps_updates_alive("FedAvg", make_weights)
    assert not await _round_keeps_updates_alive("FedAdam", make_weights)
    # The check is real: a buffering algorithm keeps them until the round closes.
    assert not Session("ns/job", SessionConfig(aggregation="FedMedian")).aggregator.streaming
    assert await _round_keeps_updates_alive("FedMedian", make_weights)
