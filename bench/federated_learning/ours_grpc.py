"""Client of ``ours-grpc``: :mod:`.ours`'s trainer with the bulk port off (gRPC streams only).

The same server and rounds as ``ours``; the weights travel inside PushUpdate and
PullGlobalWeights, as for a client built with ``AggregationClient(bulk=False)`` or a server
started with ``--bulk-port none``.
"""

from __future__ import annotations

import os
import sys

from .ours import main

if __name__ == "__main__":
    code = main(bulk=False)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # as ours.py: skip the interpreter's teardown
