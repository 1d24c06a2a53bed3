"""One Kubernetes watch stream run in a thread and fed into an asyncio queue.

The official client is synchronous, so each stream reads in its own daemon thread and hands
events to the event loop with ``call_soon_threadsafe``. The thread asks the server to end the
stream after ``timeout_seconds`` (so an abandoned thread cannot outlive that) and then resumes
from the last seen ``resourceVersion``; a dropped connection is resumed the same way. Stopping
shuts the socket down so a blocked read returns at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from sedna.resources.objects import ObjectKey
from sedna_gm.store.errors import GoneError, StoreError, StoreUnavailableError
from sedna_gm.store.k8s_convert import K8sConversionError, from_k8s
from sedna_gm.store.k8s_errors import describe_connection_error, map_api_exception, safe_host
from sedna_gm.store.port import WatchEvent, WatchEventType

__all__ = ["WatchItem", "WatchThread", "queue_sink"]

_LOG = logging.getLogger(__name__)

WatchItem = WatchEvent | BaseException
"""What the thread puts on the queue: an event, or the error that ended the stream."""


class _StoppedError(Exception):
    """Raised inside the thread when a stop raced with the opening of a stream."""


class WatchThread:
    """Read one watch endpoint in a thread; deliver events and the final error to ``sink``.

    Parameters
    ----------
    list_fn
        ``CustomObjectsApi.list_namespaced_custom_object`` or ``list_cluster_custom_object``.
    args
        Positional arguments of ``list_fn`` (group, version, [namespace,] plural).
    key
        Kind and namespace, for error messages.
    since
        ``resourceVersion`` to resume after.
    sink
        Called from the thread with each item; must be thread-safe.
    host
        API server address, for messages.
    timeout_seconds
        Server-side length of one stream before it is transparently reopened.
    bookmarks
        Whether BOOKMARK events are passed on.
    max_failures
        Consecutive failed connections before the stream ends with StoreUnavailableError.
    """

    def __init__(
        self,
        list_fn: Callable[..., Any],
        args: tuple[str, ...],
        *,
        key: ObjectKey,
        since: str,
        sink: Callable[[WatchItem], None],
        host: str,
        timeout_seconds: int,
        bookmarks: bool = True,
        max_failures: int = 5,
    ) -> None:
        self._list_fn = list_fn
        self._args = args
        self._key = key
        self._version = since
        self._sink = sink
        self._host = host
        self._timeout = timeout_seconds
        self._bookmarks = bookmarks
        self._max_failures = max_failures
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._watch: k8s_watch.Watch | None = None
        self._thread = threading.Thread(target=self._run, name=f"k8s-watch-{key.kind}", daemon=True)

    @property
    def resource_version(self) -> str:
        """The last version seen (where a reconnect resumes)."""
        return self._version

    def start(self) -> None:
        """Start reading."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end; returns at once (the socket is shut down under it)."""
        with self._lock:
            self._stopped.set()
            if self._watch is not None:
                self._watch.stop()  # type: ignore[no-untyped-call]

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the thread; True when it ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _open(self, *args: Any, **kwargs: Any) -> Any:
        resp = self._list_fn(*args, **kwargs)
        if self._stopped.is_set():
            # stop() ran before Watch knew this response: close it ourselves.
            resp.close()
            resp.release_conn()
            raise _StoppedError
        return resp

    def _run(self) -> None:
        failures = 0
        while not self._stopped.is_set():
            watcher = k8s_watch.Watch()  # type: ignore[no-untyped-call]
            with self._lock:
                if self._stopped.is_set():
                    return
                self._watch = watcher
            try:
                for raw in watcher.stream(  # type: ignore[no-untyped-call]
                    self._open,
                    *self._args,
                    resource_version=self._version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=self._timeout,
                    # Read timeout a bit past the server's: catches a silently dead server.
                    _request_timeout=(10, self._timeout + 15),
                ):
                    failures = 0
                    if self._stopped.is_set():
                        return
                    self._deliver(raw)
                failures = 0  # the server ended the stream on its timeout: reopen
            except _StoppedError:
                return
            except ApiException as exc:
                if self._stopped.is_set():
                    return
                error = map_api_exception(exc, self._key, host=self._host, collection=True)
                if isinstance(error, StoreUnavailableError) and failures < self._max_failures:
                    failures += 1
                    self._stopped.wait(min(0.1 * 2**failures, 2.0))
                    continue
                self._finish(error)
                return
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                if self._stopped.is_set():
                    return
                failures += 1
                if failures > self._max_failures:
                    self._finish(
                        StoreUnavailableError(
                            f"watch of {self._key.kind} lost the Kubernetes API server "
                            f"{safe_host(self._host)}: {describe_connection_error(exc)}"
                        )
                    )
                    return
                _LOG.debug("watch of %s dropped (%s); resuming", self._key.kind, exc)
                self._stopped.wait(min(0.05 * 2**failures, 2.0))
            except K8sConversionError as exc:
                self._finish(StoreError(f"watch of {self._key.kind}: bad event: {exc}"))
                return
            except Exception as exc:  # the consumer must see why the stream ended
                if not self._stopped.is_set():
                    self._finish(StoreError(f"watch of {self._key.kind} failed: {exc!r}"))
                return

    def _deliver(self, raw: dict[str, Any]) -> None:
        kind = raw.get("type")
        data = raw.get("raw_object")
        if kind == "BOOKMARK":
            meta = data.get("metadata") if isinstance(data, dict) else None
            version = str(meta.get("resourceVersion") or "") if isinstance(meta, dict) else ""
            if version:
                self._version = version
                if self._bookmarks:
                    self._sink(WatchEvent(WatchEventType.BOOKMARK, None, version))
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            raise K8sConversionError(f"unknown watch event type {kind!r}")
        obj = from_k8s(data)
        self._version = obj.resource_version
        self._sink(WatchEvent(WatchEventType(kind), obj, obj.resource_version))

    def _finish(self, error: BaseException) -> None:
        if isinstance(error, GoneError):
            _LOG.info("watch of %s: version %s expired", self._key.kind, self._version)
        self._sink(error)


def queue_sink(
    loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[WatchItem | None]
) -> Callable[[WatchItem | None], None]:
    """Return a thread-safe sink that puts items on ``queue`` in ``loop`` (None: end)."""

    def sink(item: WatchItem | None) -> None:
        # RuntimeError: the loop is closed, nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, item)

    return sink
