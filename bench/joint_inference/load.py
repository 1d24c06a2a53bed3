"""Load generators: one sequential client over every path, and N concurrent clients."""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .callers import Caller

__all__ = ["ClosedLoopResult", "closed_loop", "round_robin"]

Array = npt.NDArray[np.float32]
CallerFactory = Callable[[], Caller]


def _process_cpu() -> float:
    times = os.times()
    return times.user + times.system


def round_robin(
    callers: Mapping[str, Caller],
    counts: Mapping[str, int],
    x: Array,
    *,
    warmup: int = 10,
    block: int = 1,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, list[float]]:
    """One client, one request at a time, the paths interleaved in blocks of requests.

    Every path first gets ``warmup`` untimed requests. Then, in rounds, each path whose
    count is not reached yet gets up to ``block`` consecutive timed requests, in an order
    shuffled every round (no path always follows the same one); a path with a smaller
    count (the slow HTTP baseline) gets proportionally fewer per round, spread evenly.
    Machine noise so hits all paths alike.

    Blocks rather than single requests: interleaved request by request, a server visited
    by two paths (the floor's echo and model run; the batch-1 server's InferenceClient
    and stub paths) stays warm (CPU caches, threads just run) while a server visited by
    one path goes cold between visits: the same server was ~1 ms slower at p50 when
    visited half as often. In a block, each server answers back-to-back requests, as it
    does for one client offloading a stream of hard examples.

    Parameters
    ----------
    callers
        The path's caller by name.
    counts
        Timed requests per path.
    x
        The request tensor.
    warmup
        Untimed requests per path first.
    block
        Most consecutive timed requests of one path per round (1: request by request).
    progress
        Called with (done, total) after every round.

    Returns
    -------
    dict of str to list of float
        Latencies (seconds) by path.
    """
    if block < 1:
        raise ValueError("block must be at least 1")
    for name, caller in callers.items():
        for _ in range(min(warmup, max(counts[name], 1))):
            caller(x)
    rounds = math.ceil(max(counts.values(), default=0) / block)
    total = sum(counts.values())
    latencies: dict[str, list[float]] = {name: [] for name in callers}
    order = list(callers)
    shuffle = random.Random(seed).shuffle
    done = 0
    for index in range(rounds):
        shuffle(order)
        for name in order:
            # the path's share of the requests due by the end of round `index`
            due = math.ceil(counts[name] * (index + 1) / rounds)
            caller, timed = callers[name], latencies[name]
            for _ in range(min(block, due - len(timed))):
                started = time.perf_counter()
                caller(x)
                timed.append(time.perf_counter() - started)
                done += 1
        if progress is not None:
            progress(done, total)
    return latencies


@dataclass
class ClosedLoopResult:
    """N clients, each sending its next request as soon as the previous one is answered.

    Attributes
    ----------
    clients
        Concurrent clients (threads, each with its own caller).
    seconds
        Length of the measured window.
    latencies_s
        Latency of every request completed inside the window.
    errors
        Requests that failed inside the window (first message in ``first_error``).
    client_cpu_s, server_cpu_s
        CPU seconds this (client) process and the server used during the window.
    """

    clients: int
    seconds: float
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    client_cpu_s: float = 0.0
    server_cpu_s: float = float("nan")

    @property
    def throughput(self) -> float:
        """Completed requests per second."""
        return len(self.latencies_s) / self.seconds if self.seconds > 0 else float("nan")


class _LoadClient:
    """One client thread of :func:`closed_loop`."""

    def __init__(self, factory: CallerFactory, x: Array) -> None:
        self.factory = factory
        self.x = x
        self.latencies: list[float] = []
        self.errors = 0
        self.first_error = ""
        self.setup_error: Exception | None = None

    def run(self, ready: threading.Barrier, window: list[float]) -> None:
        caller: Caller | None = None
        try:
            caller = self.factory()
            caller(self.x)  # connect (and fetch metadata) before the clock starts
        except Exception as exc:
            self.setup_error = exc
            ready.abort()
            if caller is not None:
                caller.close()
            return
        try:
            ready.wait()
        except threading.BrokenBarrierError:  # another client failed to start
            caller.close()
            return
        try:
            self._loop(caller, *window)
        finally:
            caller.close()

    def _loop(self, caller: Caller, start: float, end: float) -> None:
        while (t0 := time.perf_counter()) < end:
            try:
                caller(self.x)
            except Exception as exc:  # counted and reported; the load goes on
                if start <= time.perf_counter() <= end:
                    self.errors += 1
                    self.first_error = self.first_error or f"{type(exc).__name__}: {exc}"[:200]
                continue
            t1 = time.perf_counter()
            if start <= t1 <= end:
                self.latencies.append(t1 - t0)


def closed_loop(
    factory: CallerFactory,
    x: Array,
    *,
    clients: int,
    seconds: float,
    warmup_s: float,
    server_cpu: Callable[[], float] | None = None,
) -> ClosedLoopResult:
    """Run ``clients`` threads against one path; measure the window after ``warmup_s``.

    Each thread builds its own caller (own channel or HTTP session) and sends one request,
    then all start together. Requests completed between ``warmup_s`` and
    ``warmup_s + seconds`` after the start count; the threads stop after the window and
    wait for their last answer. ``server_cpu()`` (CPU seconds of the server so far) is read
    at both ends of the window.

    Raises
    ------
    RuntimeError
        A client could not connect or its first request failed.
    """
    window = [0.0, 0.0]

    def open_window() -> None:  # runs once every client is connected
        window[0] = time.perf_counter() + warmup_s
        window[1] = window[0] + seconds

    ready = threading.Barrier(clients + 1, action=open_window)
    loads = [_LoadClient(factory, x) for _ in range(clients)]
    threads = [
        threading.Thread(target=load.run, args=(ready, window), daemon=True) for load in loads
    ]
    for thread in threads:
        thread.start()
    try:
        ready.wait(timeout=120)
    except threading.BrokenBarrierError:
        for thread in threads:
            thread.join(timeout=30)
        cause = next((load.setup_error for load in loads if load.setup_error), None)
        raise RuntimeError(f"a client could not start: {cause!r}") from cause
    time.sleep(max(0.0, window[0] - time.perf_counter()))
    cpu0 = _process_cpu()
    server0 = server_cpu() if server_cpu is not None else float("nan")
    time.sleep(max(0.0, window[1] - time.perf_counter()))
    result = ClosedLoopResult(clients=clients, seconds=seconds)
    result.client_cpu_s = _process_cpu() - cpu0
    if server_cpu is not None:
        result.server_cpu_s = server_cpu() - server0
    for thread in threads:
        thread.join(timeout=120)
    for load in loads:
        result.latencies_s.extend(load.latencies)
        result.errors += load.errors
        result.first_error = result.first_error or load.first_error
    return result
