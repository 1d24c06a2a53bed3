"""The transport floor: a bare ``grpc.aio`` server with generic byte-in, byte-out methods.

No protobuf, no interceptors, no health or metrics: the least a Python gRPC server can do
with the request's bytes. Methods (service ``bench.Floor``, request and reply are raw bytes):

- ``Echo``: ignores the bytes and answers 40 zero bytes (the size of the model's output);
  the transport floor.
- ``Run``: reads the bytes as a float32 ``[-1, 3, 224, 224]`` tensor (``np.frombuffer``, no
  copy), runs the ONNX model inline on the event loop and answers the output's raw bytes;
  the floor plus the model's compute.
- ``Stats``: JSON ``{"compute_s": [...]}``, the ``session.run`` durations since the last
  ``Stats`` call (then cleared).

Run as ``python -m bench.joint_inference.floor_server --model FILE --port N [--threads T]
[--no-spinning]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from typing import Final

import grpc
import numpy as np

from .model import INPUT_NAME, INPUT_SHAPE, NUM_CLASSES, session_options

__all__ = ["ECHO", "MAX_MESSAGE_BYTES", "RUN", "SERVICE", "STATS", "main"]

SERVICE: Final = "bench.Floor"
ECHO: Final = f"/{SERVICE}/Echo"
RUN: Final = f"/{SERVICE}/Run"
STATS: Final = f"/{SERVICE}/Stats"
MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
"""Same message-size limit as ``sedna-inference``'s default."""
_REPLY: Final = bytes(4 * NUM_CLASSES)


class _Floor:
    def __init__(self, model: str, threads: int, spinning: bool) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped]  # noqa: PLC0415

        self._session = ort.InferenceSession(
            model,
            sess_options=session_options(threads, spinning=spinning),
            providers=["CPUExecutionProvider"],
        )
        self._compute: list[float] = []

    async def echo(self, request: bytes, context: object) -> bytes:
        return _REPLY

    async def run(self, request: bytes, context: object) -> bytes:
        array = np.frombuffer(request, dtype="<f4").reshape((-1, *INPUT_SHAPE))
        started = time.perf_counter()
        (output,) = self._session.run(None, {INPUT_NAME: array})
        self._compute.append(time.perf_counter() - started)
        return bytes(np.ascontiguousarray(output, dtype="<f4").tobytes())

    async def stats(self, request: bytes, context: object) -> bytes:
        compute, self._compute = self._compute, []
        return json.dumps({"compute_s": compute}).encode()


async def _serve(model: str, port: int, threads: int, spinning: bool) -> None:
    floor = _Floor(model, threads, spinning)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        "Echo": grpc.unary_unary_rpc_method_handler(floor.echo),
        "Run": grpc.unary_unary_rpc_method_handler(floor.run),
        "Stats": grpc.unary_unary_rpc_method_handler(floor.stats),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise SystemExit(f"cannot bind 127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="The .onnx file.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: auto).")
    parser.add_argument(
        "--no-spinning", action="store_true", help="Idle ORT threads sleep instead of spinning."
    )
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.model, args.port, args.threads, not args.no_spinning))


if __name__ == "__main__":
    main()
