"""Fixtures: a throwaway PostgreSQL server on loopback, one schema per test.

The server is started once per session with the distribution's ``initdb``/``pg_ctl`` (found on
PATH or under ``/usr/lib/postgresql/*/bin``) in a temporary folder, listening on 127.0.0.1 on a
free port; each test gets its own schema. PostgreSQL refuses to run as root, so as root the
server runs as the ``postgres`` user (Debian's package creates it) or ``nobody``. Without the
binaries the PostgreSQL tests skip, unless ``SEDNA_REQUIRE_POSTGRES=1`` (CI), where they fail.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

_START_LIMIT_S = 60.0


@dataclass(frozen=True)
class PostgresServer:
    """A running server: ``url`` is the admin URL of database ``postgres`` (trust auth)."""

    host: str
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"


def _find_bin_dir() -> Path | None:
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(os.path.realpath(on_path)).parent
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not candidates:
        return None
    newest = max(
        candidates, key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0
    )
    return Path(newest).parent


def _runner() -> tuple[list[str], str | None]:
    """Command prefix running a program as a non-root user, and that user (None: ourselves)."""
    if os.geteuid() != 0:
        return [], None
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return ["runuser", "-u", user, "--"], user
        if shutil.which("su"):
            return ["su", user, "-s", "/bin/sh", "-c"], user  # joined below
    raise RuntimeError("running as root without a 'postgres' or 'nobody' user to run PostgreSQL")


def _run(prefix: list[str], argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    if prefix and prefix[0] == "su":
        argv = [*prefix, " ".join(_quote(a) for a in argv)]
    else:
        argv = [*prefix, *argv]
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(server: PostgresServer, log: Path) -> None:
    deadline = time.monotonic() + _START_LIMIT_S
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(server.url(), connect_timeout=2):
                return
        except psycopg.OperationalError as exc:
            last = exc
            time.sleep(0.1)
    log_text = log.read_text(errors="replace") if log.exists() else ""
    raise RuntimeError(f"PostgreSQL not ready in {_START_LIMIT_S} s: {last}\n{log_text}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for this test session (skips or fails without the binaries)."""
    bin_dir = _find_bin_dir()
    if bin_dir is None:
        reason = (
            "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
            "/usr/lib/postgresql/*/bin; install the 'postgresql' package"
        )
        if os.environ.get("SEDNA_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"SEDNA_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    prefix, user = _runner()
    # Not under pytest's tmp folders: those are private to root, which the server user is not.
    root = Path(tempfile.mkdtemp(prefix="sedna-pg-"))
    data, sockets, log = root / "data", root / "sock", root / "server.log"
    sockets.mkdir()
    if user is not None:
        shutil.chown(root, user)
        shutil.chown(sockets, user)
    initdb = _run(
        prefix,
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "--auth=trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ],
    )
    if initdb.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed ({initdb.returncode}): {initdb.stderr or initdb.stdout}")
    server = None
    try:
        for _attempt in range(3):  # the free port can be taken between probe and start
            port = _free_port()
            options = (
                f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            started = _run(
                prefix,
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    str(int(_START_LIMIT_S)),
                    "start",
                ],
            )
            if started.returncode == 0:
                server = PostgresServer("127.0.0.1", port)
                break
        if server is None:
            log_text = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {started.stderr}\n{log_text}")
        _wait_ready(server, log)
        yield server
    finally:
        if server is not None:
            _run(
                prefix, [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
            )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A URL whose connections use a fresh, empty schema of their own."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield f"{postgres_server.url()}?options=-csearch_path%3D{schema}"
    with (
        contextlib.suppress(psycopg.Error),
        psycopg.connect(postgres_server.url(), autocommit=True) as conn,
    ):
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
