"""The transport floor: the same bytes over plain TCP loopback sockets, nothing else.

``python -m bench.federated_learning.floor server|client ...``. Per round every client sends
its model's bytes (one length-prefixed message, layer by layer from the arrays' buffers) and
the server, once it has all K uploads (discarded into a small scratch buffer: no decoding, no
aggregation), sends K model-sized downloads back. That is the least any federated-learning
transport must move per round; the other systems' bandwidth is compared with it.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading

import numpy as np

from .common import WorkerArgs, cpu_seconds, now, parse_worker_args, proc_memory_kb, write_result
from .model import initial_weights, layer_shapes, model_bytes

_LENGTH = struct.Struct("!Q")
_HELLO = b"FLOOR/1\n"
"""A client's first bytes: connections without them (readiness probes) are not clients."""
_SCRATCH = 4 << 20


def _recv_exactly(sock: socket.socket, view: memoryview) -> None:
    while view:
        got = sock.recv_into(view)
        if not got:
            raise ConnectionError("peer closed the connection mid-message")
        view = view[got:]


def _drain(sock: socket.socket, size: int, scratch: memoryview) -> None:
    """Receive and discard ``size`` bytes."""
    while size:
        got = sock.recv_into(scratch[: min(size, len(scratch))])
        if not got:
            raise ConnectionError("peer closed the connection mid-message")
        size -= got


def serve(args: WorkerArgs) -> int:
    """Accept K clients, then per round: K uploads in, barrier, K downloads out."""
    size = model_bytes(layer_shapes(args.params, args.layers))
    download = np.ones(size, dtype=np.uint8).data
    barrier = threading.Barrier(args.clients)
    errors: list[BaseException] = []

    def handle(conn: socket.socket) -> None:
        scratch = memoryview(bytearray(_SCRATCH))
        header = bytearray(_LENGTH.size)
        try:
            with conn:
                for _ in range(args.rounds):
                    _recv_exactly(conn, memoryview(header))
                    (length,) = _LENGTH.unpack(header)
                    if length != size:
                        raise ValueError(f"upload of {length} bytes, expected {size}")
                    _drain(conn, length, scratch)
                    barrier.wait()  # the round closes when every upload is in
                    conn.sendall(_LENGTH.pack(size))
                    conn.sendall(download)
        except BaseException as exc:  # reported, and the barrier released
            errors.append(exc)
            barrier.abort()

    with socket.create_server((args.host, args.port), backlog=args.clients) as listener:
        threads: list[threading.Thread] = []
        while len(threads) < args.clients:
            conn, _addr = listener.accept()
            hello = bytearray(len(_HELLO))
            try:
                _recv_exactly(conn, memoryview(hello))
            except ConnectionError:
                conn.close()
                continue
            if bytes(hello) != _HELLO:
                conn.close()
                continue
            thread = threading.Thread(target=handle, args=(conn,), daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()
    if errors:
        print(f"floor server: {errors[0]!r}", file=sys.stderr)
        return 1
    write_result(args.out, {"memory_kb": proc_memory_kb(), "cpu_s": cpu_seconds()})
    return 0


def client(args: WorkerArgs) -> int:
    """Send the model's bytes and receive a model-sized download, ``--rounds`` times."""
    layers = initial_weights(layer_shapes(args.params, args.layers))
    size = sum(layer.nbytes for layer in layers)
    inbox = np.empty(size, dtype=np.uint8)
    header = bytearray(_LENGTH.size)
    rounds: list[tuple[int, float, float]] = []
    received_ok = True
    with socket.create_connection((args.host, args.port), timeout=args.timeout) as sock:
        sock.sendall(_HELLO)
        cpu0 = cpu_seconds()
        for r in range(1, args.rounds + 1):
            t0 = now()
            sock.sendall(_LENGTH.pack(size))
            for layer in layers:
                sock.sendall(layer.data.cast("B"))
            _recv_exactly(sock, memoryview(header))
            (length,) = _LENGTH.unpack(header)
            if length != size:
                raise ValueError(f"download of {length} bytes, expected {size}")
            _recv_exactly(sock, inbox.data)
            t1 = now()
            received_ok = received_ok and bool(inbox[0] == 1 and inbox[-1] == 1)
            rounds.append((r, t0, t1))
        cpu1 = cpu_seconds()
    write_result(
        args.out,
        {
            "client": args.client,
            "rounds": rounds,
            "bytes_ok": received_ok,
            "cpu_s": cpu1 - cpu0,
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
