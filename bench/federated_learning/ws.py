"""Upstream-style transport: one websocket per client, weights as JSON lists of numbers.

``python -m bench.federated_learning.ws server|client ...``: a small, faithful re-creation of
upstream Sedna's federated-learning v1 transport (``sedna_reference.md`` §1d) on aiohttp:

* the client connects to ``ws://AGG_IP:AGG_PORT/FedAvg`` and sends
  ``{"type": "subscribe", "client_id": ...}``; the server tells the others ``CLIENT_JOIN``;
* per round each client sends ``{"type": "update_weight", "client": id, "data":
  {"num_samples": n, "weights": [nested lists]}, "job_name": ...}`` as one JSON text frame;
* the server keeps every update and, once **all** participants reported, averages them as
  upstream's ``FedAvg.aggregate`` does (float64 accumulators, ``np.array`` of each client's
  lists, ``tolist()`` of the result) and broadcasts ``{"type": "recv_weight", "round_number",
  "data": {"total_sample", "round_number", "weights", "exit_flag"}}``.

Two departures, both in upstream's favour or needed to run at all: the broadcast is encoded
once and the same text is sent to every client (upstream ``send_json`` encodes per client), and
the frame size limit is lifted (upstream caps frames at min(max_size, 16 MiB), so a model of
more than ~3 M float32 values as JSON does not fit without raising ``ws_size``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

from .common import WorkerArgs, cpu_seconds, now, parse_worker_args, proc_memory_kb, write_result
from .model import DTYPE, delta, initial_weights, layer_shapes, max_abs_error, sample_count

ROUTE = "/FedAvg"
JOB = "bench-fl"


def fedavg(updates: list[dict[str, Any]]) -> list[Any]:
    """Upstream's ``FedAvg.aggregate``: sample-weighted mean of the clients' weight lists."""
    total = sum(u["num_samples"] for u in updates)
    first = updates[0]["weights"]
    result = []
    for index in range(len(first)):
        row = np.zeros(np.array(first[index]).shape)
        for update in updates:
            row += np.array(update["weights"][index]) * update["num_samples"] / total
        result.append(row.tolist())
    return result


def serve(args: WorkerArgs) -> int:
    """Run the aggregation server until the last round is sent and every client left."""
    clients: dict[str, web.WebSocketResponse] = {}
    updates: dict[str, dict[str, Any]] = {}
    state = {"round": 0, "left": 0}
    done = asyncio.Event()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)  # upstream: ws_size (20 MiB by default)
        await ws.prepare(request)
        client_id = ""
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            message = json.loads(msg.data)
            kind = message.get("type")
            if kind == "subscribe":
                client_id = message["client_id"]
                for other in clients.values():
                    await other.send_str(json.dumps({"type": "CLIENT_JOIN", "data": client_id}))
                clients[client_id] = ws
            elif kind == "update_weight":
                updates[message["client"]] = message["data"]
                if len(updates) >= args.clients:  # upstream: all participants must report
                    state["round"] += 1
                    weights = fedavg(list(updates.values()))
                    total = sum(u["num_samples"] for u in updates.values())
                    updates.clear()
                    exit_flag = "ok" if state["round"] >= args.rounds else "continue"
                    text = json.dumps(
                        {
                            "type": "recv_weight",
                            "round_number": state["round"],
                            "data": {
                                "total_sample": total,
                                "round_number": state["round"],
                                "weights": weights,
                                "exit_flag": exit_flag,
                            },
                        }
                    )
                    del weights
                    for peer in list(clients.values()):
                        await peer.send_str(text)
                    del text
        clients.pop(client_id, None)
        state["left"] += 1
        if state["left"] >= args.clients:
            done.set()
        return ws

    async def run() -> None:
        app = web.Application(client_max_size=0)
        app.router.add_get(ROUTE, handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port).start()
        await done.wait()
        await runner.cleanup()

    asyncio.run(run())
    write_result(
        args.out,
        {"memory_kb": proc_memory_kb(), "cpu_s": cpu_seconds(), "rounds": state["round"]},
    )
    return 0


def client(args: WorkerArgs) -> int:
    """Subscribe, then per round send the weights as JSON and wait for ``recv_weight``."""
    shapes = layer_shapes(args.params, args.layers)
    initial = initial_weights(shapes)
    n, d = sample_count(args.client), delta(args.client)
    name = f"trainer-{args.client}"
    rounds: list[tuple[int, float, float]] = []
    wire = {"sent": 0, "received": 0}
    cpu = {"start": 0.0, "end": 0.0}

    async def run() -> list[Any]:
        weights = [layer.copy() for layer in initial]
        timeout = aiohttp.ClientTimeout(total=args.timeout)
        url = f"ws://{args.host}:{args.port}{ROUTE}"
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.ws_connect(url, max_msg_size=0) as ws,
        ):
            await ws.send_str(json.dumps({"type": "subscribe", "client_id": name}))
            cpu["start"] = cpu_seconds()
            for r in range(1, args.rounds + 1):
                weights = [layer + d for layer in weights]  # "training", not timed
                t0 = now()
                text = json.dumps(
                    {
                        "type": "update_weight",
                        "client": name,
                        "data": {"num_samples": n, "weights": [w.tolist() for w in weights]},
                        "job_name": JOB,
                    }
                )
                wire["sent"] += len(text)
                await ws.send_str(text)
                del text
                while True:
                    msg = await ws.receive()
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        raise ConnectionError(f"websocket closed in round {r}: {msg.type}")
                    if '"recv_weight"' not in msg.data[:64]:
                        continue  # CLIENT_JOIN and other relayed messages
                    wire["received"] += len(msg.data)
                    data = json.loads(msg.data)["data"]
                    break
                weights = [np.asarray(w, dtype=DTYPE) for w in data["weights"]]
                t1 = now()
                if data["round_number"] != r:
                    raise ValueError(f"got round {data['round_number']}, expected {r}")
                rounds.append((r, t0, t1))
                cpu["end"] = cpu_seconds()
                if data["exit_flag"] == "ok":
                    break
        return weights

    weights = asyncio.run(run())
    error = max_abs_error(weights, initial, args.clients, args.rounds)
    write_result(
        args.out,
        {
            "client": args.client,
            "rounds": rounds,
            "max_abs_error": error,
            "cpu_s": cpu["end"] - cpu["start"],
            "wire_bytes_sent": wire["sent"],
            "wire_bytes_received": wire["received"],
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
