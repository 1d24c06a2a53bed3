"""Process identity and signalling helpers (Linux ``/proc``).

A pid alone is not an identity: pids are reused. A process is identified by its pid together
with its start time (field 22 of ``/proc/<pid>/stat``, in clock ticks since boot).
"""

from __future__ import annotations

import contextlib
import os
import signal

__all__ = ["is_alive", "process_start_time", "signal_group"]


def process_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None when it does not run.

    Zombies count as not running: they have exited and only wait to be reaped.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            data = stream.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or parentheses.
    end = data.rfind(b")")
    fields = data[end + 2 :].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def is_alive(pid: int, start_time: int) -> bool:
    """Whether ``pid`` runs and is the same process that started at ``start_time``."""
    return pid > 0 and process_start_time(pid) == start_time


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to the process group ``pgid``; False when the group is gone."""
    if pgid <= 1:  # never signal init or "every process"
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
        return True
    return False
