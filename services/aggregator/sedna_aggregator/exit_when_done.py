"""``exit_when_done``: stop the aggregator once the sessions it serves are finished.

Upstream's aggregation worker (``AggregationServer``) shut down after the last round, which is
what a FederatedLearningJob's aggregation worker needs: its process ending is how the job
learns the aggregator is done. With ``exit_when_done`` set, ``sedna-aggregator`` can be that
worker's command: once every session it serves is finished it drains and exits, 0 when all
COMPLETED (after every trainer left, or ``exit_grace_seconds`` after completion, so the
trainers can still pull the last aggregate), 1 as soon as one FAILED. A server that has no
session yet keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Final

from sedna_aggregator.core import Session, SessionState

__all__ = ["watch_sessions"]

_FINISHED: Final = (SessionState.COMPLETED, SessionState.FAILED)
_POLL_SECONDS: Final = 0.2

_log = logging.getLogger(__name__)


async def watch_sessions(
    sessions: Callable[[], Mapping[str, Session]],
    request_exit: Callable[[int], None],
    *,
    grace: float,
    poll: float = _POLL_SECONDS,
) -> None:
    """Call ``request_exit(code)`` once the sessions are finished (see the module docstring).

    Parameters
    ----------
    sessions
        The served sessions, read at every check.
    request_exit
        Called once, with 0 (all completed) or 1 (one failed).
    grace
        Seconds after the last completion to wait for trainers still joined.
    poll
        Seconds between checks.
    """
    loop = asyncio.get_running_loop()
    completed_at: float | None = None
    while True:
        current = list(sessions().values())
        if current and all(s.state in _FINISHED for s in current):
            failed = [s for s in current if s.state is SessionState.FAILED]
            if failed:
                _log.error(
                    "exit_when_done: session %s failed (%s); exiting with code 1",
                    failed[0].session_id,
                    failed[0].reason,
                )
                request_exit(1)
                return
            completed_at = loop.time() if completed_at is None else completed_at
            joined = sum(len(s.status().clients) for s in current)
            waited = loop.time() - completed_at
            if joined == 0 or waited >= grace:
                _log.info(
                    "exit_when_done: every session completed%s; exiting",
                    f" ({joined} trainer(s) still joined after {grace:g}s)" if joined else "",
                )
                request_exit(0)
                return
        else:
            completed_at = None  # a new session (or round) started meanwhile
        await asyncio.sleep(poll)
