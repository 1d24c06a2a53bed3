"""The aggregation worker of the federated-learning example: ``sedna-aggregator`` for one job.

Upstream's ``aggregate.py`` started ``sedna.service.server.AggregationServer`` with the
``exit_round`` and participants count from its environment, and that server shut down once
the last round was aggregated and every client had gone. Here the server is the
``sedna-aggregator`` service with ``--exit-when-done``, which stops the same way: when the
job's session is COMPLETED and every trainer has left (or ``exit_grace_seconds`` after
completion, for a trainer that died), exiting 0; when the session FAILED, exiting 1. This
script turns the worker's environment (what the FederatedLearningJob controller injects plus
the template's own ``env``) into its flags and replaces itself with it (so signals and the exit
code are the server's; the LocalController restarts a crashed worker, which resumes from
``checkpoint_dir``).

=========================  ===============================  ==============================
env                        flag                             default
=========================  ===============================  ==============================
``AGG_BIND_PORT``          ``--port``                       7363 (the controller sets it)
``AGG_BIND_IP``            ``--host``                       ``0.0.0.0`` (upstream: all)
``PARTICIPANTS_COUNT``     ``--expected-clients``           unset
``exit_round``             ``--exit-round``                 1
``aggregation_algorithm``  ``--aggregation``                ``FedAvg``
``min_participants``       ``--min-participants``           1
``round_timeout_seconds``  ``--round-timeout-seconds``      300
``checkpoint_dir``         ``--checkpoint-dir``             unset (no resume after a crash)
``exit_grace_seconds``     ``--exit-grace-seconds``         30
=========================  ===============================  ==============================

``/metrics`` gets a free port (several aggregators may share a machine).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

__all__ = ["aggregator_command", "main"]

FLAGS = (
    ("AGG_BIND_PORT", "--port", "7363"),
    ("AGG_BIND_IP", "--host", "0.0.0.0"),  # upstream binds every interface
    ("PARTICIPANTS_COUNT", "--expected-clients", None),
    ("exit_round", "--exit-round", "1"),
    ("aggregation_algorithm", "--aggregation", "FedAvg"),
    ("min_participants", "--min-participants", "1"),
    ("round_timeout_seconds", "--round-timeout-seconds", "300"),
    ("checkpoint_dir", "--checkpoint-dir", None),
    ("exit_grace_seconds", "--exit-grace-seconds", "30"),
)


def _executable() -> str:
    """``sedna-aggregator`` next to this interpreter (workers run with the LC's PATH), else
    on PATH."""
    beside = Path(sys.executable).with_name("sedna-aggregator")
    if beside.exists():
        return str(beside)
    found = shutil.which("sedna-aggregator")
    if found is None:
        raise SystemExit("sedna-aggregator not found: install Sedna (make install)")
    return found


def aggregator_command(env: dict[str, str]) -> list[str]:
    """The ``sedna-aggregator`` command line for this environment."""
    command = [_executable(), "--metrics-port", "0", "--exit-when-done"]
    for name, flag, default in FLAGS:
        value = env.get(name, "").strip() or default
        if value is not None:
            command += [flag, value]
    return command


def main() -> int:
    """Replace this process with ``sedna-aggregator`` for the worker's environment."""
    command = aggregator_command(dict(os.environ))
    print("starting:", " ".join(command), flush=True)
    os.execv(command[0], command)
    return 1  # pragma: no cover - execv does not return


if __name__ == "__main__":
    sys.exit(main())
