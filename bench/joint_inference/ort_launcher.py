"""Experiment: ``sedna-inference`` with the benchmark's ONNX Runtime thread settings.

``sedna-inference`` has no setting for ONNX Runtime's intra-op threads or spinning (it
leaves ``intra_op_num_threads`` at 0, ORT's choice). This launcher wraps
``onnxruntime.InferenceSession`` so every session the server creates gets
``--threads`` and, with ``--no-spinning``, ``session.intra_op.allow_spinning = 0``, then
runs the server's console-script entry point with the remaining arguments. Used by
``python -m bench.joint_inference --patch-ours-ort``; not a product code path.

Run as ``python -m bench.joint_inference.ort_launcher --threads N [--no-spinning] --
<sedna-inference arguments>``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _patch(threads: int, spinning: bool) -> None:
    import onnxruntime as ort  # type: ignore[import-untyped]  # noqa: PLC0415

    original = ort.InferenceSession.__init__

    def init(self: Any, path: Any, sess_options: Any = None, *args: Any, **kwargs: Any) -> None:
        options = sess_options if sess_options is not None else ort.SessionOptions()
        options.intra_op_num_threads = threads
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        original(self, path, options, *args, **kwargs)

    ort.InferenceSession.__init__ = init


def main(argv: list[str] | None = None) -> int:
    """Patch ONNX Runtime, then run ``sedna-inference`` with the arguments after ``--``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, required=True, help="ORT intra-op threads.")
    parser.add_argument("--no-spinning", action="store_true")
    parser.add_argument("server_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    _patch(args.threads, not args.no_spinning)
    from sedna_inference.__main__ import main as server_main  # noqa: PLC0415

    rest = args.server_args[1:] if args.server_args[:1] == ["--"] else args.server_args
    return server_main(rest)


if __name__ == "__main__":
    sys.exit(main())
