"""A throwaway ``redis-server`` on loopback for tests.

``redis_server(password=...)`` starts the distribution's ``redis-server`` (found on PATH) on
127.0.0.1 and a free port, without persistence, in a temporary
folder, and waits (with a deadline) until it answers PING. Without the binary the test skips,
unless ``SEDNA_REQUIRE_REDIS=1`` (CI), where it fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["RedisServer", "redis_server"]

_START_LIMIT_S = 30.0


@dataclass(frozen=True)
class RedisServer:
    """A running server: ``url`` has no password; ``password`` is separate (None: none)."""

    host: str
    port: int
    password: str | None = field(default=None, repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def url(self) -> str:
        """``redis://host:port/0``."""
        return f"redis://{self.host}:{self.port}/0"


def _binary() -> str | None:
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(server: RedisServer, process: subprocess.Popen[bytes], log: Path) -> None:
    import redis

    deadline = time.monotonic() + _START_LIMIT_S
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        client = redis.Redis(
            host=server.host, port=server.port, password=server.password, socket_timeout=2
        )
        try:
            if client.ping():
                return
        except redis.RedisError as exc:
            last = exc
            time.sleep(0.05)
        finally:
            client.close()
    text = log.read_text(errors="replace") if log.exists() else ""
    raise RuntimeError(f"redis-server not ready in {_START_LIMIT_S} s: {last}\n{text}")


@contextmanager
def redis_server(*, password: str | None = None) -> Iterator[RedisServer]:
    """Run ``redis-server`` for the duration of the block (skips or fails without it)."""
    binary = _binary()
    if binary is None:
        reason = "redis-server not found on PATH; install the 'redis-server' package"
        if os.environ.get("SEDNA_REQUIRE_REDIS") == "1":
            pytest.fail(f"SEDNA_REQUIRE_REDIS=1 but {reason}")
        pytest.skip(reason)
    pytest.importorskip("redis", reason="the redis Python client is not installed")
    root = Path(tempfile.mkdtemp(prefix="sedna-redis-"))
    log = root / "redis.log"
    process: subprocess.Popen[bytes] | None = None
    try:
        for _attempt in range(3):  # the free port can be taken between probe and start
            port = _free_port()
            argv = [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(root),
                "--logfile",
                str(log),
                "--protected-mode",
                "yes",
            ]
            if password is not None:
                argv += ["--requirepass", password]
            process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            server = RedisServer("127.0.0.1", port, password, process)
            try:
                _wait_ready(server, process, log)
            except RuntimeError:
                process.kill()
                process.wait(timeout=10)
                process = None
                continue
            yield server
            return
        raise RuntimeError(f"redis-server did not start: {log.read_text(errors='replace')}")
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
