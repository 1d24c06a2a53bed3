"""Worker → LocalController reporting (upstream ``sedna.service.client``).

A worker reports its stage results with ``POST {LC_SERVER}/sedna/workers/{WORKER_NAME}/info``
and a JSON body ``{"name", "namespace", "ownerName", "ownerKind", "kind", "status",
["results"], ["ownerInfo"]}``. :class:`LCClient` sends one report; :class:`LCReporter` is the
daemon thread a joint-inference edge worker starts to report its inference counters every
``LC_PERIOD`` seconds.

Reporting never stops the worker: an unreachable LC, a timeout or an error answer is
logged and :meth:`LCClient.send` returns None. Each attempt has a timeout, and failed
attempts are retried a bounded number of times (5xx and network errors only; a 4xx means
the report itself is wrong and is not retried). A repeated problem with the same LC URL is
logged once at WARNING, then at DEBUG until a report gets through again.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from typing import Any, ClassVar

__all__ = ["DEFAULT_LC_PERIOD", "LCClient", "LCReporter"]

logger = logging.getLogger(__name__)

DEFAULT_LC_PERIOD = 30.0
"""Upstream's default ``LC_PERIOD`` in seconds."""

_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def _json_default(value: Any) -> Any:
    """Encode numpy scalars/arrays (``tolist``) and anything else as its string."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    return str(value)


def _lc_message(body: bytes) -> str:
    """The ``Message`` of an LC error answer, else the (shortened) raw body."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(data, dict) and "Message" in data:
        return str(data["Message"])
    return text[:500]


class LCClient:
    """Sends worker reports to the LocalController (upstream ``LCClient``).

    Attributes
    ----------
    timeout : float
        Seconds one attempt may take (connect plus answer).
    retries : int
        Attempts per report (at least 1).
    retry_interval : float
        Seconds before the second attempt; doubled before each further one.
    """

    timeout: ClassVar[float] = 5.0
    retries: ClassVar[int] = 3
    retry_interval: ClassVar[float] = 0.5

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _problems: ClassVar[dict[str, str]] = {}

    @classmethod
    def _log_problem(cls, url: str, problem: str) -> None:
        with cls._lock:
            repeated = cls._problems.get(url) == problem
            cls._problems[url] = problem
        if repeated:
            logger.debug("report to %s failed again: %s", url, problem)
        else:
            logger.warning("report to %s failed: %s (repeats are logged at DEBUG)", url, problem)

    @classmethod
    def _log_success(cls, url: str) -> None:
        with cls._lock:
            had_problem = cls._problems.pop(url, None) is not None
        if had_problem:
            logger.info("report to %s succeeded again", url)

    @classmethod
    def send(
        cls,
        lc_server: str,
        worker_name: str,
        message: dict[str, Any],
        *,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> dict[str, Any] | None:
        """Post ``message`` to ``{lc_server}/sedna/workers/{worker_name}/info``.

        Parameters
        ----------
        lc_server : str
            The LC base URL (``LC_SERVER``), e.g. ``http://127.0.0.1:9100``.
        worker_name : str
            The worker's name (``WORKER_NAME``); the LC rejects a body whose ``name`` differs.
        message : dict
            The upstream report body. Numpy values are converted with ``tolist()``.
        timeout : float, optional
            Per-attempt timeout; defaults to :attr:`timeout`.
        retries : int, optional
            Attempts; defaults to :attr:`retries`.

        Returns
        -------
        dict or None
            The LC's JSON answer (``{"Status": 200, "Message": "OK"}``) on success; None when
            the report could not be delivered or was rejected. Never raises for delivery
            problems; the worst-case blocking time is about
            ``retries * timeout + retry_interval * (2 ** (retries - 1) - 1)``.
        """
        url = f"{lc_server.rstrip('/')}/sedna/workers/{worker_name}/info"
        per_try = cls.timeout if timeout is None else timeout
        attempts = max(1, cls.retries if retries is None else retries)
        try:
            body = json.dumps(message, default=_json_default).encode("utf-8")
            request = urllib.request.Request(
                url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
        except (TypeError, ValueError) as err:
            logger.error("cannot report to %s: %s", url, err)
            return None
        problem = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(cls.retry_interval * 2 ** (attempt - 1))
            try:
                with urllib.request.urlopen(request, timeout=per_try) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as err:
                detail = _lc_message(err.read() or b"")
                problem = f"HTTP {err.code}: {detail}"
                if 400 <= err.code < 500:
                    cls._log_problem(url, f"rejected, not retried ({problem})")
                    return None
                continue
            except (OSError, ValueError) as err:  # URLError, timeouts, refused, bad URL
                reason = getattr(err, "reason", err)
                problem = f"LC unreachable ({type(reason).__name__}: {reason})"
                continue
            except Exception as err:  # never let reporting crash the worker
                problem = f"unexpected error ({type(err).__name__}: {err})"
                continue
            cls._log_success(url)
            try:
                answer = json.loads(raw) if raw else {}
            except ValueError:
                answer = {"Message": raw.decode("utf-8", "replace")}
            return answer if isinstance(answer, dict) else {"Message": answer}
        cls._log_problem(url, f"{problem}; gave up after {attempts} attempt(s)")
        return None

    @classmethod
    def reset_log_state(cls) -> None:
        """Forget logged problems, so the next failure is logged at WARNING again."""
        with cls._lock:
            cls._problems.clear()


class LCReporter(threading.Thread):
    """Daemon thread that periodically reports inference counters (upstream ``LCReporter``).

    Every ``period_interval`` seconds in which at least one inference was counted, it sets
    ``message["ownerInfo"]`` to ``{"startTime", "updateTime", "inferenceNumber",
    "hardExampleNumber", "uploadCloudRatio"}`` (times as ``"%Y-%m-%d %H:%M:%S"`` local time,
    counters cumulative, ratio = hard / total) and sends the message with
    :meth:`LCClient.send`.

    Parameters
    ----------
    lc_server : str
        The LC base URL (``LC_SERVER``).
    message : dict
        The report body: ``{"name", "namespace", "ownerName", "ownerKind":
        "jointinferenceservice", "kind": "inference", "results": []}``; ``name`` is also the
        worker name in the URL. A copy is kept; it is sent as given (upstream's reporter sets
        no ``status``, which the LC accepts).
    period_interval : float, optional
        Seconds between reports (upstream ``LC_PERIOD``, default 30); must be > 0.

    Raises
    ------
    ValueError
        If ``period_interval`` is not positive or ``message`` has no ``name``.
    """

    def __init__(
        self, lc_server: str, message: dict[str, Any], period_interval: float = DEFAULT_LC_PERIOD
    ) -> None:
        super().__init__(name="sedna-lc-reporter", daemon=True)
        period = float(period_interval)
        if not period > 0:
            raise ValueError(f"period_interval must be > 0 seconds; got {period_interval!r}")
        if not message.get("name"):
            raise ValueError("message must have the worker's 'name' (WORKER_NAME)")
        self.lc_server = lc_server
        self.message = copy.deepcopy(message)
        self.period_interval = period
        self.inference_number = 0
        self.hard_example_number = 0
        # Inferences since the last report; nothing is sent for a period without any.
        self.period_increment = 0
        self.lock = threading.Lock()
        self._stop_event = threading.Event()
        self._period_start = time.time()

    def update_for_edge_inference(self) -> None:
        """Count one inference answered at the edge."""
        with self.lock:
            self.inference_number += 1
            self.period_increment += 1

    def update_for_collaboration_inference(self) -> None:
        """Count one hard example sent to the cloud."""
        with self.lock:
            self.inference_number += 1
            self.hard_example_number += 1
            self.period_increment += 1

    def report(self) -> dict[str, Any] | None:
        """Send one report now if there were inferences since the last one.

        Returns
        -------
        dict or None
            The message that was sent (whether or not the LC accepted it), or None when
            there was nothing new to report.
        """
        start = self._period_start
        self._period_start = time.time()
        with self.lock:
            if self.period_increment == 0:
                return None
            total, hard = self.inference_number, self.hard_example_number
            extra = self.extra_owner_info()
            self.period_increment = 0
        message = copy.deepcopy(self.message)
        message["ownerInfo"] = {
            "startTime": time.strftime(_TIME_FORMAT, time.localtime(start)),
            "updateTime": time.strftime(_TIME_FORMAT, time.localtime()),
            "inferenceNumber": total,
            "hardExampleNumber": hard,
            "uploadCloudRatio": hard / total if total else 0.0,
            **extra,
        }
        LCClient.send(self.lc_server, str(message["name"]), message)
        return message

    def extra_owner_info(self) -> dict[str, Any]:
        """Counters a subclass adds to ``ownerInfo``; called with :attr:`lock` held.

        Returns
        -------
        dict
            Extra ``ownerInfo`` fields (none here).
        """
        return {}

    def run(self) -> None:
        """Report every period until :meth:`stop`; errors are logged, never raised."""
        self._period_start = time.time()
        while not self._stop_event.wait(self.period_interval):
            try:
                self.report()
            except Exception:
                logger.exception("LC reporter: could not build or send a report")

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to end (an upstream addition) and wait up to ``timeout`` seconds."""
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
