"""The upstream-style baseline: Sedna's ``InferenceServer`` shape, HTTP + JSON on FastAPI.

Like upstream ``sedna.service.server.inference.InferenceServer`` (see the SDK reference,
5.2): ``GET /{service}`` lists the routes, ``POST /{service}/predict`` takes
``{"data": [...nested lists...], "callback": null}`` (a pydantic ``InferenceItem`` with
``data: list``), runs the model in a plain ``def`` endpoint (FastAPI's thread pool, as
upstream) and answers ``{"result": [...]}``; CORS middleware as upstream adds it. The
model runs on ONNX Runtime with the same session options as the other servers
(``np.asarray(data, float32)`` first, as a user's estimator would). Served by uvicorn,
one worker, keep-alive 300 s (upstream's ``timeout``), access log off (upstream logs at
INFO; off here so the baseline is not slowed by logging).

Run as ``python -m bench.joint_inference.http_server --model FILE --port N --service NAME``.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from pydantic import BaseModel

from .model import INPUT_NAME, session_options

__all__ = ["InferenceItem", "PredictResult", "build_app", "main"]


class InferenceItem(BaseModel):
    """Upstream's request body."""

    data: list[Any]
    callback: str | None = None


class PredictResult(BaseModel):
    """Upstream's ``ServePredictResult``."""

    result: list[Any]


def build_app(model: str, service: str, threads: int, *, spinning: bool = True) -> FastAPI:
    """The FastAPI app serving ``model`` under ``/{service}``."""
    import onnxruntime as ort  # type: ignore[import-untyped]  # noqa: PLC0415

    session = ort.InferenceSession(
        model,
        sess_options=session_options(threads, spinning=spinning),
        providers=["CPUExecutionProvider"],
    )
    app = FastAPI()
    app.add_middleware(  # as upstream BaseServer.run does
        CORSMiddleware,
        allow_origins=["*"],
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
    )

    @app.get(f"/{service}")
    def model_info() -> dict[str, Any]:
        return {"infos": [{"path": f"/{service}/predict", "name": "predict"}]}

    @app.post(f"/{service}/predict", response_model=PredictResult)
    def predict(item: InferenceItem) -> PredictResult:
        array = np.asarray(item.data, dtype=np.float32)
        (output,) = session.run(None, {INPUT_NAME: array})
        return PredictResult(result=output.tolist())

    return app


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="The .onnx file.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--service", default="bench")
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: auto).")
    parser.add_argument(
        "--no-spinning", action="store_true", help="Idle ORT threads sleep instead of spinning."
    )
    args = parser.parse_args(argv)
    app = build_app(args.model, args.service, args.threads, spinning=not args.no_spinning)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=300,  # upstream BaseServer(timeout=300) passes it here
    )


if __name__ == "__main__":
    main()
