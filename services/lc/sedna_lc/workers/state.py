"""Per-worker state files: what a restarted LC needs to adopt or clean up a worker."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["WorkerRecord", "load_record", "save_record"]

logger = logging.getLogger(__name__)


@dataclass
class WorkerRecord:
    """The persisted state of one worker.

    Attributes
    ----------
    namespace, name
        The worker.
    spec_hash
        Hash of the spec and credentials it runs with.
    pid, start_time
        Its process (also its process group), 0 when none runs.
    restart_count
        Restarts so far.
    phase, exit_code, message
        The last reported state (a restarted worker is ``Running`` with exit code 0).
    last_exit_code, last_termination_reason
        How its process last ended (Kubernetes' ``lastState.terminated``), kept while it runs
        again: the exit code (-1 when unknown) and why (``exited with code 3``, ``command
        'x' not found``); 0 and "" until it first ends.
    owner
        The worker's owner (``apiVersion``, ``kind``, ``name``, ``namespace``, ``uid``).
    """

    namespace: str
    name: str
    spec_hash: str
    pid: int = 0
    start_time: int = 0
    restart_count: int = 0
    phase: str = ""
    exit_code: int = 0
    message: str = ""
    last_exit_code: int = 0
    last_termination_reason: str = ""
    owner: dict[str, str] | None = None


def load_record(path: Path) -> WorkerRecord | None:
    """Read a record; None (logged) when missing or unreadable."""
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
        return WorkerRecord(**raw)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        logger.warning("ignoring unreadable worker state %s: %s", path, exc)
        return None


def save_record(path: Path, record: WorkerRecord) -> None:
    """Write a record atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record), indent=1), encoding="utf-8")
    os.replace(tmp, path)
